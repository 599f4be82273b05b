package wire

import "github.com/tinylib/msgp/msgp"

// MaxIdentLen bounds identifiers (VIN, station id, session id, id tag).
const MaxIdentLen = 64

// Ident is a short identifier (VIN, station id, ...) carried as a MessagePack
// str (bin is accepted too). Decoding copies the bytes into the Ident's own
// buffer, reusing its capacity, so it never aliases the input and does not
// allocate once the buffer has grown to the identifier's length.
type Ident []byte

// String returns a copy of the identifier as a string (allocates).
func (id Ident) String() string { return string(id) }

// UnmarshalMsg implements msgp.Unmarshaler.
func (id *Ident) UnmarshalMsg(b []byte) ([]byte, error) {
	var v []byte
	var err error
	var o []byte
	if msgp.NextType(b) == msgp.BinType {
		v, o, err = msgp.ReadBytesZC(b)
	} else {
		v, o, err = msgp.ReadStringZC(b)
	}
	if err != nil {
		return b, err
	}
	if len(v) > MaxIdentLen {
		return b, ErrIdentTooLong
	}
	*id = append((*id)[:0], v...)
	return o, nil
}

// MarshalMsg implements msgp.Marshaler (encodes as str).
func (id Ident) MarshalMsg(b []byte) ([]byte, error) {
	return msgp.AppendStringFromBytes(b, id), nil
}

// DecodeMsg implements msgp.Decodable.
func (id *Ident) DecodeMsg(r *msgp.Reader) error {
	v, err := r.ReadStringAsBytes((*id)[:0])
	if err != nil {
		return err
	}
	if len(v) > MaxIdentLen {
		return ErrIdentTooLong
	}
	*id = v
	return nil
}

// EncodeMsg implements msgp.Encodable.
func (id Ident) EncodeMsg(w *msgp.Writer) error { return w.WriteStringFromBytes(id) }

// Msgsize implements msgp.Sizer.
func (id Ident) Msgsize() int { return msgp.StringPrefixSize + len(id) }
