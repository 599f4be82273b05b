// Package record defines what the gateway writes into its durable spool: one
// record per accepted MQTT publish, dead letter or connectivity change.
//
// Layout (all integers big endian):
//
//	kind      1 byte   (KindPublish, KindDeadLetter, KindConnect, KindDisconnect)
//	qos       1 byte
//	recv_ns   8 bytes  gateway receive time, Unix nanoseconds
//	topic     uvarint length + bytes (publish/dead letter: MQTT topic; connect/disconnect: empty)
//	client    uvarint length + bytes (MQTT client id = device id)
//	reason    uvarint length + bytes (dead letter reason, else empty)
//	payload   the rest (device payload as received, byte for byte)
//
// The payload is stored raw so that replaying the spool re-decodes exactly
// what the device sent. Append functions reuse dst's capacity; Parse returns
// slices that alias its input (borrowed: valid as long as the input is).
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind of a spool record.
type Kind uint8

// Record kinds.
const (
	KindPublish    Kind = 1
	KindDeadLetter Kind = 2
	KindConnect    Kind = 3
	KindDisconnect Kind = 4
)

// ErrMalformed is returned by Parse for a record that does not follow the
// layout (a bug or disk corruption, never device input: device bytes are
// only ever the payload).
var ErrMalformed = errors.New("record: malformed")

// Record is a parsed spool record. Byte slices alias the parsed buffer.
type Record struct {
	Kind    Kind
	QoS     byte
	RecvNs  int64
	Topic   []byte
	Client  []byte
	Reason  []byte
	Payload []byte
}

// Append encodes a record at the end of dst and returns the extended slice.
func Append(dst []byte, kind Kind, qos byte, recvNs int64, topic, client, reason string, payload []byte) []byte {
	dst = append(dst, byte(kind), qos)
	dst = binary.BigEndian.AppendUint64(dst, uint64(recvNs))
	dst = binary.AppendUvarint(dst, uint64(len(topic)))
	dst = append(dst, topic...)
	dst = binary.AppendUvarint(dst, uint64(len(client)))
	dst = append(dst, client...)
	dst = binary.AppendUvarint(dst, uint64(len(reason)))
	dst = append(dst, reason...)
	return append(dst, payload...)
}

// Parse decodes b into r without copying.
func Parse(b []byte, r *Record) error {
	if len(b) < 10 {
		return fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	r.Kind = Kind(b[0])
	if r.Kind < KindPublish || r.Kind > KindDisconnect {
		return fmt.Errorf("%w: kind %d", ErrMalformed, b[0])
	}
	r.QoS = b[1]
	r.RecvNs = int64(binary.BigEndian.Uint64(b[2:10]))
	b = b[10:]
	var err error
	if r.Topic, b, err = field(b); err != nil {
		return err
	}
	if r.Client, b, err = field(b); err != nil {
		return err
	}
	if r.Reason, b, err = field(b); err != nil {
		return err
	}
	r.Payload = b
	return nil
}

func field(b []byte) ([]byte, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, fmt.Errorf("%w: field length", ErrMalformed)
	}
	end := k + int(n)
	return b[k:end:end], b[end:], nil
}
