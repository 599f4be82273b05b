//go:build !linux

package listener

// quietState is empty where SO_RCVLOWAT is not used. A socket that cannot
// be made quiet cannot be read without waiting either (readNow), so read
// batching is off here: no connection waits for the tick (batch.go).
type quietState struct{}

func (r *rawConn) quiet() bool { return false }

func (r *rawConn) readQuiet([]byte) (int, bool, error) { return 0, false, nil }

func (r *rawConn) readNow([]byte) (int, bool, error) { return 0, false, nil }

func (r *rawConn) discardUnread() {}

func (r *rawConn) unquiet() {}
