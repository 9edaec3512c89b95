package main

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/hordekit/httpretry"
)

// getMinSecret is the shortest secret the stderr scrubber replaces. Shorter
// values ("1", "on") would turn up inside unrelated words and mangle the log;
// they are still kept out by the structural redaction (RedactURL, no header
// values in messages), which the scrubber only backs up.
const getMinSecret = 4

// getSecretHeader reports whether a request header carries a credential.
// The names are listed explicitly so the rule does not hang on
// IsSecretName's word list alone, which covers them today.
func getSecretHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie":
		return true
	}
	return httpretry.IsSecretName(name)
}

// getSecrets lists the credentials on the command line: userinfo, secret
// query values (raw and decoded), and secret header values, whole and in the
// parts that are the credential proper (the token after "Bearer ", each
// cookie's value), since an error text might quote just that part.
func getSecrets(u *url.URL, headers []getHeader) []string {
	var s []string
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			s = append(s, pw, url.QueryEscape(pw), url.PathEscape(pw))
		} else {
			// A lone user name is how tokens ride in URLs (https://TOKEN@host).
			s = append(s, u.User.Username())
		}
	}
	for pair := range strings.SplitSeq(u.RawQuery, "&") {
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		if err == nil && !httpretry.IsSecretName(name) {
			continue
		}
		s = append(s, rawValue)
		if v, err := url.QueryUnescape(rawValue); err == nil {
			s = append(s, v)
		}
	}
	for _, h := range headers {
		if !getSecretHeader(h.name) {
			continue
		}
		s = append(s, h.value)
		if _, cred, ok := strings.Cut(h.value, " "); ok {
			s = append(s, strings.TrimSpace(cred)) // "Bearer s3cret" -> "s3cret"
		}
		if key := http.CanonicalHeaderKey(h.name); key == "Cookie" || key == "Set-Cookie" {
			for c := range strings.SplitSeq(h.value, ";") {
				if _, v, ok := strings.Cut(c, "="); ok {
					s = append(s, strings.TrimSpace(v))
				}
			}
		}
	}
	s = slices.DeleteFunc(s, func(v string) bool { return len(v) < getMinSecret || v == httpretry.Redacted })
	// Longest first: the replacer tries its pairs in order, and a secret that
	// contains another must be replaced whole.
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(s)
}

// getScrubber is stderr behind a last line of defence: it replaces every
// known secret with REDACTED before writing. slog handlers and Fprintf write
// a whole line per Write, so a secret is never split across two calls.
type getScrubber struct {
	w io.Writer
	r *strings.Replacer
}

// newGetScrubber returns w itself when there is nothing to hide.
func newGetScrubber(w io.Writer, secrets []string) io.Writer {
	if len(secrets) == 0 {
		return w
	}
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, httpretry.Redacted)
	}
	return &getScrubber{w: w, r: strings.NewReplacer(pairs...)}
}

// Write writes p with secrets replaced. It reports len(p) on success, as the
// caller's bytes were all consumed even if fewer went out.
func (s *getScrubber) Write(p []byte) (int, error) {
	if _, err := io.WriteString(s.w, s.r.Replace(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// getRedactError returns err's message with every URL net/http put in it
// redacted (httpretry.RedactError).
func getRedactError(err error) string { return httpretry.RedactError(err) }
