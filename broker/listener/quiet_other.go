//go:build !linux

package listener

// quietState is empty where SO_RCVLOWAT is not used: a connection waiting
// for its batch tick may wake the poller when data arrives (see
// quiet_linux.go).
type quietState struct{}

func (r *rawConn) quiet() bool { return false }

func (r *rawConn) readQuiet([]byte) (int, bool, error) { return 0, false, nil }
