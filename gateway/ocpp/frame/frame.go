// Package frame is the first, strict look at an OCPP-J WebSocket message
// before ocpp-go parses it: it decides whether the bytes are an OCPP-J RPC
// frame at all and, when they are not, which CALLERROR (if any) answers
// them. It never panics on any input (FuzzParse).
//
// OCPP-J frames (OCPP-J 1.6 §4, OCPP 2.0.1 part 4 §4):
//
//	CALL       [2, "<uniqueId>", "<Action>", {payload}]
//	CALLRESULT [3, "<uniqueId>", {payload}]
//	CALLERROR  [4, "<uniqueId>", "<errorCode>", "<description>", {details}]
package frame

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// Message type numbers.
const (
	Call       = 2
	CallResult = 3
	CallError  = 4
)

// MaxUniqueIDLen is the longest message id accepted (36 in both specs).
const MaxUniqueIDLen = 36

// Errors, one per way a frame can be malformed. Reason gives their metric label.
var (
	ErrNotJSON       = errors.New("ocpp frame: not JSON")
	ErrNotArray      = errors.New("ocpp frame: not a JSON array")
	ErrShape         = errors.New("ocpp frame: wrong number or type of elements")
	ErrUniqueID      = errors.New("ocpp frame: missing or invalid message id")
	ErrMessageType   = errors.New("ocpp frame: unknown message type")
	ErrActionUnknown = errors.New("ocpp frame: unknown action")
)

// Frame is what Parse learnt about a message.
type Frame struct {
	Type     int
	UniqueID string // "" when it could not be read
	Action   string // CALL only
}

// Parse checks b. On error, f.UniqueID is set when the id could be read, so
// the caller can answer with a CALLERROR for that id.
func Parse(b []byte, known func(action string) bool) (f Frame, err error) {
	var arr []json.RawMessage
	if !json.Valid(b) {
		return f, ErrNotJSON
	}
	if err := json.Unmarshal(b, &arr); err != nil {
		return f, ErrNotArray
	}
	if len(arr) < 3 {
		return f, ErrShape
	}
	var typ json.Number
	dec := json.NewDecoder(strings.NewReader(string(arr[0])))
	dec.UseNumber()
	if err := dec.Decode(&typ); err != nil {
		return f, ErrShape
	}
	var id string
	if err := json.Unmarshal(arr[1], &id); err != nil || id == "" || len(id) > MaxUniqueIDLen {
		return f, ErrUniqueID
	}
	f.UniqueID = id
	t, err := strconv.Atoi(typ.String())
	if err != nil {
		return f, ErrMessageType
	}
	f.Type = t
	switch t {
	case Call:
		if len(arr) != 4 {
			return f, ErrShape
		}
		if err := json.Unmarshal(arr[2], &f.Action); err != nil || f.Action == "" {
			return f, ErrShape
		}
		if len(arr[3]) == 0 || arr[3][0] != '{' {
			return f, ErrShape
		}
		if known != nil && !known(f.Action) {
			return f, ErrActionUnknown
		}
	case CallResult:
		if len(arr) != 3 {
			return f, ErrShape
		}
	case CallError:
		if len(arr) != 5 {
			return f, ErrShape
		}
	default:
		return f, ErrMessageType
	}
	return f, nil
}

// Reason is the metric label of err.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrNotJSON):
		return "not_json"
	case errors.Is(err, ErrNotArray):
		return "not_array"
	case errors.Is(err, ErrShape):
		return "shape"
	case errors.Is(err, ErrUniqueID):
		return "unique_id"
	case errors.Is(err, ErrMessageType):
		return "message_type"
	case errors.Is(err, ErrActionUnknown):
		return "unknown_action"
	}
	return "other"
}

// ErrorCode is the CALLERROR code that answers err for a protocol version
// ("ocpp1.6" or "ocpp2.0.1"), as the specs name them.
func ErrorCode(err error, v201 bool) string {
	switch {
	case errors.Is(err, ErrActionUnknown):
		return "NotImplemented"
	case errors.Is(err, ErrMessageType):
		if v201 {
			return "MessageTypeNotSupported"
		}
		return "NotSupported"
	case errors.Is(err, ErrNotJSON), errors.Is(err, ErrNotArray), errors.Is(err, ErrUniqueID):
		if v201 {
			return "RpcFrameworkError"
		}
		return "ProtocolError"
	}
	if v201 {
		return "FormatViolation"
	}
	return "FormationViolation"
}

// CallError encodes a CALLERROR frame. An id that could not be read is
// answered as "-1" (OCPP 2.0.1 part 4 §4.2.3).
func EncodeCallError(id, code, description string) []byte {
	if id == "" {
		id = "-1"
	}
	b, _ := json.Marshal([]any{CallError, id, code, description, struct{}{}})
	return b
}
