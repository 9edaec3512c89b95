package httpretry

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"120", 120 * time.Second, true},
		{"Sat, 28 Nov 2026 12:00:02 GMT", 2 * time.Second, true},     // IMF-fixdate
		{"Saturday, 28-Nov-26 12:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"Sat Nov 28 12:01:00 2026", time.Minute, true},              // asctime
		{"99999999999999999999999", maxRetryAfter, true},
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{" 5", 0, false},
		{"soon", 0, false},
		{"Sat, 28 Nov 2026 11:59:00 GMT", 0, false}, // past
		{"Sat, 28 Nov 2026 12:00:00 GMT", 0, false}, // now
	}
	for _, c := range cases {
		got, ok := ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestStatusErrorRetryAfterUsesTheServersDate(t *testing.T) {
	// The server's clock is an hour behind ours; measured against its Date
	// header the hint is 5 s, against ours it would be in the past.
	server := time.Now().Add(-time.Hour).UTC()
	e := &StatusError{Response: &http.Response{StatusCode: 503, Header: http.Header{
		"Date":        {server.Format(http.TimeFormat)},
		"Retry-After": {server.Add(5 * time.Second).Format(http.TimeFormat)},
	}}}
	if d, ok := e.RetryAfter(); !ok || d != 5*time.Second {
		t.Fatalf("RetryAfter = %v, %v; want 5s, true", d, ok)
	}
	if _, ok := (&StatusError{}).RetryAfter(); ok {
		t.Fatal("RetryAfter on an empty StatusError reported a hint")
	}
}

func TestStatusErrorMessage(t *testing.T) {
	u, _ := url.Parse("https://api.example.com/v2/workers?type=image")
	e := &StatusError{Response: &http.Response{StatusCode: 503, Request: &http.Request{URL: u}}}
	if got, want := e.Error(), "HTTP 503 from https://api.example.com/v2/workers?type=image"; got != want {
		t.Fatalf("Error = %q, want %q", got, want)
	}
	if got := (&StatusError{Response: &http.Response{StatusCode: 500}}).Error(); got != "HTTP 500" {
		t.Fatalf("without a request: %q", got)
	}
}

func TestRedactURL(t *testing.T) {
	cases := map[string]string{
		"https://api.example.com/a?b=1":                            "https://api.example.com/a?b=1",
		"https://u:p@api.example.com/a":                            "https://api.example.com/a",
		"https://x/a?apikey=1&type=image&access_token=2":           "https://x/a?apikey=REDACTED&type=image&access_token=REDACTED",
		"https://x/a?Signature=1&X-Amz-Credential=2&sig=3&pwd=4&q": "https://x/a?Signature=REDACTED&X-Amz-Credential=REDACTED&sig=REDACTED&pwd=REDACTED&q",
		"https://x/a?password=hunter2&secret=s&key=k":              "https://x/a?password=REDACTED&secret=REDACTED&key=REDACTED",
		"https://x/a?%zz=1":                                        "https://x/a?REDACTED",
	}
	for in, want := range cases {
		if got := RedactURLString(in); got != want {
			t.Errorf("RedactURLString(%q) = %q, want %q", in, got, want)
		}
	}
	if got := RedactURLString("http://[::1"); got != Redacted {
		t.Errorf("unparseable URL = %q, want it replaced whole", got)
	}
}

// FuzzParseRetryAfter checks that no input panics, and that whatever is
// accepted is a positive or zero wait consistent with its form.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "Sat, 28 Nov 2026 12:00:02 GMT", "Saturday, 28-Nov-26 12:00:30 GMT",
		"Sat Nov 28 12:01:00 2026", "-1", "1e9", "99999999999999999999", "", "\x00"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if !ok {
			if d != 0 {
				t.Fatalf("rejected %q but returned %v", s, d)
			}
			return
		}
		if d < 0 {
			t.Fatalf("accepted %q as negative %v", s, d)
		}
		if isDigits(s) == (strings.ContainsAny(s, " ,:")) {
			t.Fatalf("accepted %q in neither form", s)
		}
	})
}

// RedactError finds every *url.Error in the tree: the one http.Client.Do
// adds around the Transport's error, and those of redirect hops.
func TestRedactErrorFindsEveryURLError(t *testing.T) {
	inner := &url.Error{Op: "Get", URL: "https://api.example/v2?apikey=s3cret", Err: errors.New("connection reset")}
	hop := &url.Error{Op: "Get", URL: "https://user:pw@mirror.example/x?token=t0ken", Err: inner}
	joined := errors.Join(errors.New("first"), fmt.Errorf("wrapped: %w", hop))
	msg := RedactError(joined)
	for _, secret := range []string{"s3cret", "t0ken", "user:pw"} {
		if strings.Contains(msg, secret) {
			t.Fatalf("%q leaks %s", msg, secret)
		}
	}
	if !strings.Contains(msg, "apikey=REDACTED") || !strings.Contains(msg, "token=REDACTED") {
		t.Fatalf("%q lost the URLs' shape", msg)
	}
	if RedactError(nil) != "<nil>" {
		t.Fatal("RedactError(nil)")
	}
}
