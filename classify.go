package httpretry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
)

// IsRetryableStatus reports whether an HTTP status code suggests a transient
// server-side problem: any 5xx, or 429 Too Many Requests. It is the seed's
// is_retryable_status_code rule, kept as it is. The HTTP transport has its own
// configurable list (408, 429, 500, 502, 503, 504 by default), because a 501
// or a 505 will not change on a retry.
func IsRetryableStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests
}

// IsTransient reports whether err is a network failure worth retrying: the
// seed's TRANSIENT_HTTP_EXCEPTIONS (timeouts, connect errors, protocol errors)
// and the mid-response failures the seed missed.
//
// Transient: timeouts of any kind (a net.Error whose Timeout is true, a TLS
// handshake timeout, context.DeadlineExceeded from a per-attempt deadline),
// connection refused, reset, aborted, broken pipe, network or host
// unreachable, an unexpected EOF or a server that closed the connection,
// temporary DNS failures, and HTTP/2 GOAWAY frames and stream resets.
//
// Not transient: context.Canceled, a malformed URL or unsupported scheme,
// certificate and other TLS verification failures (including speaking TLS to
// a plain-HTTP port), a DNS answer that the name does not exist, and any
// error it does not recognise.
//
// IsTransient cannot tell a caller's expired context from a per-attempt
// deadline, as both are context.DeadlineExceeded; Do and the transport check
// the caller's context first and never retry once it has ended.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*TimeoutError](err); ok {
		return true
	}
	if errors.Is(err, context.Canceled) || isTLSConfigError(err) {
		return false
	}
	if dns, ok := errors.AsType[*net.DNSError](err); ok {
		return !dns.IsNotFound && (dns.IsTimeout || dns.IsTemporary)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return true
	}
	for _, target := range transientErrors {
		if errors.Is(err, target) {
			return true
		}
	}
	// net/http keeps these errors unexported; their text is all there is.
	return containsAny(err.Error(), transientMessages)
}

// containsAny reports whether msg contains one of texts.
func containsAny(msg string, texts []string) bool {
	for _, s := range texts {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

var transientErrors = []error{
	syscall.ECONNREFUSED,
	syscall.ECONNRESET,
	syscall.ECONNABORTED,
	syscall.EPIPE,
	syscall.ETIMEDOUT,
	syscall.EHOSTUNREACH,
	syscall.ENETUNREACH,
	syscall.ENETDOWN,
	io.ErrUnexpectedEOF,
	io.EOF,
	net.ErrClosed,
}

var transientMessages = []string{
	"server closed idle connection",
	"http: server closed the connection",
	"connection reset by peer",
	"broken pipe",
	"http2: server sent GOAWAY",
	"graceful shutdown GOAWAY",
	"http2: client conn not usable",
	"cannot rewind body after connection loss",
	"define Request.GetBody",
	"http2: client connection lost",
	"http2: client connection force closed",
	"stream error:",
	"transport connection broken",
}

// isTLSConfigError reports failures a retry cannot fix: a certificate that
// does not verify, or a peer that does not speak TLS at all.
func isTLSConfigError(err error) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return true
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return true
	}
	_, ok := errors.AsType[tls.AlertError](err)
	return ok
}
