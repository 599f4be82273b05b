//go:build !unix

package listener

import "net"

// nbWriter is unavailable here: held writes are flushed by the reader.
type nbWriter struct{}

func newNBWriter(net.Conn) *nbWriter { return nil }

func (*nbWriter) write(b []byte) int { return 0 }
