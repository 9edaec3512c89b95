package otelretry

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/hordekit/httpretry"
)

// minSecret is the shortest value redactMessage looks for: replacing every
// occurrence of a shorter one would mangle the message, and a value that
// short guards nothing.
const minSecret = 4

// redactMessage returns an error message (already through
// httpretry.RedactError, which redacts the URLs of *url.Error values) fit
// for a span status: the request's URL in it replaced by its redacted form,
// and any secret of the request (userinfo, values of secret-looking query
// parameters, values of credential headers) replaced by REDACTED wherever
// it still appears. Error texts come from the network stack, a Base
// transport or a Check function, and any of them may quote what it was
// given.
func redactMessage(msg string, req *http.Request) string {
	if req == nil || req.URL == nil {
		return msg
	}
	if raw := req.URL.String(); strings.Contains(msg, raw) {
		msg = strings.ReplaceAll(msg, raw, httpretry.RedactURL(req.URL))
	}
	for _, s := range secrets(req) {
		if len(s) >= minSecret {
			msg = strings.ReplaceAll(msg, s, httpretry.Redacted)
		}
	}
	return msg
}

// secrets lists what a message about req must not show, each in the forms
// it may be quoted in.
func secrets(req *http.Request) []string {
	var out []string
	add := func(v string) {
		out = append(out, v)
		if esc := url.QueryEscape(v); esc != v {
			out = append(out, esc)
		}
		if esc := url.PathEscape(v); esc != v {
			out = append(out, esc)
		}
	}
	if u := req.URL.User; u != nil {
		add(u.Username())
		if p, ok := u.Password(); ok {
			add(p)
		}
	}
	for name, values := range parseQuery(req.URL.RawQuery) {
		if httpretry.IsSecretName(name) {
			for _, v := range values {
				add(v)
			}
		}
	}
	for name, values := range req.Header {
		if !httpretry.IsSecretName(name) { // Authorization, Cookie, X-Api-Key...
			continue
		}
		for _, v := range values {
			add(v)
			// "Bearer abc": the credential alone may be quoted too.
			if _, cred, ok := strings.Cut(v, " "); ok {
				add(strings.TrimSpace(cred))
			}
		}
	}
	return out
}

// parseQuery is url.ParseQuery keeping what parses: a malformed pair must
// not hide the others' secrets.
func parseQuery(raw string) url.Values {
	v, _ := url.ParseQuery(raw)
	return v
}
