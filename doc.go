// Package httpretry keeps outbound HTTP calls working when the upstream is
// flaky: retries with jittered exponential backoff, Retry-After honoured and
// capped, and errors that keep the last response readable.
//
// It is a Go port of the AI Horde model-reference service's http_retry
// module, with that module's defaults and its flaws fixed:
//
//	seed (Python)                       Go
//	TRANSIENT_HTTP_EXCEPTIONS           IsTransient(err)
//	is_retryable_status_code            IsRetryableStatus(code)
//	RetryableHTTPStatusError            *StatusError (Response, RetryAfter)
//	http_retry_sync / http_retry_async  Policy (zero value = the seed's), Policy.Do, DoValue
//	_log_retry                          slog Warn "HTTP retry" {attempt, wait, error}
//
// A Policy retries a function. The circuit breaker lives in package breaker;
// the HTTP transport that combines retries, per-host breakers and a retry
// budget is Transport.
//
// Every wait goes through the clock package's seam, so tests drive retries
// with a fake clock instead of sleeping.
package httpretry
