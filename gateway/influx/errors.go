package influx

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error classes. Every error returned by Writer.Write, Writer.Ping and
// EnsureDatabase matches exactly one of ErrRetryable and ErrPermanent with
// errors.Is, except the configuration and lifecycle errors ErrInvalidConfig
// and ErrClosed.
var (
	// ErrRetryable: the request may succeed later unchanged (network error,
	// timeout, cancelled context, 408, 429, 5xx), or failed for a reason
	// that is not in the batch (401, 403, 404: credentials or the
	// database/bucket are wrong; the data is fine and must be kept until an
	// operator fixes the configuration). Whether the batch was applied is
	// unknown; resending it is safe because a point with the same series
	// and timestamp overwrites itself.
	ErrRetryable = errors.New("influx: retryable error")

	// ErrPermanent: the server rejected the batch itself (400 line protocol
	// or field type conflict, 413, 422, other 4xx). Resending it unchanged
	// fails again; the caller dead-letters it (or splits it, for
	// ErrTooLarge). With InfluxDB 1.x, a 400 "partial write" means the other
	// lines of the batch were stored.
	ErrPermanent = errors.New("influx: permanent error")

	// ErrTooLarge accompanies ErrPermanent when the server answered 413:
	// the batch exceeds its maximum body size and should be split.
	ErrTooLarge = errors.New("influx: request entity too large")

	// ErrInvalidConfig is returned by NewWriter and EnsureDatabase for
	// unusable arguments.
	ErrInvalidConfig = errors.New("influx: invalid configuration")

	// ErrClosed is returned by Writer methods called after Close.
	ErrClosed = errors.New("influx: writer closed")
)

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// maxErrorText bounds the server message quoted by WriteError.Error (the
// full message stays in WriteError.Message).
const maxErrorText = 1024

// WriteError describes a failed request to InfluxDB. It matches its Kind
// (ErrRetryable or ErrPermanent), ErrTooLarge for a 413, and its transport
// cause with errors.Is; use errors.As to read the status and message.
type WriteError struct {
	// Op is the operation: "write", "ping", "create database".
	Op string
	// Kind is ErrRetryable or ErrPermanent.
	Kind error
	// StatusCode is the HTTP status, 0 if no response was received.
	StatusCode int
	// Message is the server's explanation (at most 64 KiB), e.g.
	// `unable to parse 'm f=': missing field value`.
	Message string
	// RetryAfter is the delay the server asked for with Retry-After, if
	// any; callers should wait at least this long before retrying.
	RetryAfter time.Duration
	// Err is the transport-level cause (nil when the server answered).
	Err error
}

// Error implements error.
func (e *WriteError) Error() string {
	var b strings.Builder
	b.WriteString("influx: ")
	b.WriteString(e.Op)
	if e.StatusCode != 0 {
		b.WriteString(": HTTP ")
		b.WriteString(strconv.Itoa(e.StatusCode))
	}
	if e.Message != "" {
		b.WriteString(": ")
		if len(e.Message) > maxErrorText {
			b.WriteString(e.Message[:maxErrorText])
			b.WriteString("... (")
			b.WriteString(strconv.Itoa(len(e.Message) - maxErrorText))
			b.WriteString(" more bytes)")
		} else {
			b.WriteString(e.Message)
		}
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if errors.Is(e.Kind, ErrPermanent) {
		b.WriteString(" (permanent)")
	} else {
		b.WriteString(" (retryable)")
	}
	return b.String()
}

// Unwrap returns the error class, ErrTooLarge for a 413, and the cause.
func (e *WriteError) Unwrap() []error {
	errs := make([]error, 0, 3)
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.StatusCode == http.StatusRequestEntityTooLarge {
		errs = append(errs, ErrTooLarge)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// transportError classifies a failure to get a response: always retryable.
func transportError(op string, err error) *WriteError {
	return &WriteError{Op: op, Kind: ErrRetryable, Err: err}
}

// statusClass classifies a non-2xx HTTP status.
func statusClass(code int) error {
	switch {
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return ErrRetryable
	case code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusNotFound:
		// Configuration, not data: keep the batch and retry.
		return ErrRetryable
	default:
		return ErrPermanent
	}
}

// statusError builds the error for a non-2xx response, reading (a bounded
// part of) its body. The caller closes the body.
func statusError(op string, resp *http.Response) *WriteError {
	return &WriteError{
		Op:         op,
		Kind:       statusClass(resp.StatusCode),
		StatusCode: resp.StatusCode,
		Message:    serverMessage(resp),
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
}

// serverMessage extracts the server's explanation: the JSON body's "error"
// (1.x) or "message" (2.x), else the X-Influxdb-Error header, else the body
// text, else the status text.
func serverMessage(resp *http.Response) string {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var msg struct {
		Error   string `json:"error"`
		Message string `json:"message"`
		Code    string `json:"code"`
	}
	if json.Unmarshal(body, &msg) == nil {
		switch {
		case msg.Error != "":
			return msg.Error
		case msg.Message != "":
			return msg.Message
		}
	}
	if h := resp.Header.Get("X-Influxdb-Error"); h != "" {
		return h
	}
	if s := strings.TrimSpace(string(body)); s != "" {
		return s
	}
	return http.StatusText(resp.StatusCode)
}

// retryAfter parses a Retry-After header (delay in seconds or HTTP date).
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// drainClose reads a little of the body, so the connection can be reused,
// and closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxErrorBody))
	_ = body.Close()
}
