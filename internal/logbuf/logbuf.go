// Package logbuf is a bytes.Buffer that many goroutines may write to at
// once: tests capture a component's log output (slog handlers write from
// the component's goroutines) and read it back while it runs.
package logbuf

import (
	"bytes"
	"sync"
)

// Buffer collects what is written to it. The zero value is ready to use;
// safe for concurrent use.
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
