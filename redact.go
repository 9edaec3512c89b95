package httpretry

import (
	"net/url"
	"strconv"
	"strings"
)

// Redacted replaces secrets in URLs and headers that reach logs and errors.
const Redacted = "REDACTED"

// RedactURL returns u as a string fit for a log line: without userinfo, and
// with the values of query parameters that look like secrets (IsSecretName)
// replaced by REDACTED. Parameter order and the rest of the URL are kept.
func RedactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	if u.User == nil && !hasSecretParam(u.RawQuery) {
		return u.String()
	}
	c := *u
	c.User = nil
	c.RawQuery = redactQuery(u.RawQuery)
	return c.String()
}

// RedactURLString is RedactURL for a URL in text form. Text that does not
// parse as a URL is replaced whole, since it may be a secret itself.
func RedactURLString(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return Redacted
	}
	return RedactURL(u)
}

// IsSecretName reports whether a query parameter or header name looks like it
// carries a credential: it contains key, token, secret, signature, password,
// passwd, auth, credential, session or cookie (case-insensitive), or is sig
// or pwd. It errs toward hiding.
func IsSecretName(name string) bool {
	n := strings.ToLower(name)
	if n == "sig" || n == "pwd" {
		return true
	}
	for _, s := range secretWords {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

var secretWords = []string{"key", "token", "secret", "signature", "password", "passwd", "auth", "credential", "session", "cookie"}

func hasSecretParam(rawQuery string) bool {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		name, _, _ := strings.Cut(pair, "=")
		if n, err := url.QueryUnescape(name); err == nil && IsSecretName(n) || err != nil {
			return true
		}
	}
	return false
}

func redactQuery(rawQuery string) string {
	var b strings.Builder
	for i, pair := range strings.Split(rawQuery, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		name, _, hasValue := strings.Cut(pair, "=")
		n, err := url.QueryUnescape(name)
		switch {
		case err != nil:
			b.WriteString(Redacted)
		case IsSecretName(n) && hasValue:
			b.WriteString(name + "=" + Redacted)
		default:
			b.WriteString(pair)
		}
	}
	return b.String()
}

// RedactError returns err's message fit for a log line: every URL that
// net/http put in it redacted as RedactURL does. A *url.Error quotes its
// request URL in full, query tokens and userinfo included; http.Client.Do
// wraps the transport's error in one, and a redirect adds one per hop, so
// every *url.Error in err's tree is redacted, not just the outermost. The
// Transport's own errors are redacted already.
func RedactError(err error) string { return redactedError(err) }

func redactedError(err error) string {
	if err == nil {
		return "<nil>"
	}
	msg := err.Error()
	for ue := range urlErrors(err) {
		if safe := RedactURLString(ue.URL); ue.URL != "" && safe != ue.URL {
			// url.Error prints the URL with %q, which escapes quotes and
			// backslashes; replace that form first, then the raw one.
			msg = strings.ReplaceAll(msg, strconv.Quote(ue.URL), strconv.Quote(safe))
			msg = strings.ReplaceAll(msg, ue.URL, safe)
		}
	}
	return msg
}

// urlErrors yields every *url.Error in err's tree.
func urlErrors(err error) func(yield func(*url.Error) bool) {
	return func(yield func(*url.Error) bool) {
		var walk func(error) bool
		walk = func(e error) bool {
			if e == nil {
				return true
			}
			if ue, ok := e.(*url.Error); ok && !yield(ue) {
				return false
			}
			switch u := e.(type) {
			case interface{ Unwrap() error }:
				return walk(u.Unwrap())
			case interface{ Unwrap() []error }:
				for _, c := range u.Unwrap() {
					if !walk(c) {
						return false
					}
				}
			}
			return true
		}
		walk(err)
	}
}
