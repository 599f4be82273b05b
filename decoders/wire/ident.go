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

// MarshalText implements encoding.TextMarshaler, so JSON shows an Ident as a
// string rather than base64.
func (id Ident) MarshalText() ([]byte, error) { return []byte(id), nil }

// UnmarshalText implements encoding.TextUnmarshaler (copies text; rejects
// identifiers longer than MaxIdentLen).
func (id *Ident) UnmarshalText(text []byte) error {
	if len(text) > MaxIdentLen {
		return ErrIdentTooLong
	}
	*id = append((*id)[:0], text...)
	return nil
}

// UnmarshalMsg implements msgp.Unmarshaler.
func (id *Ident) UnmarshalMsg(b []byte) ([]byte, error) {
	// Fast path: fixstr (at most 31 bytes, so always within MaxIdentLen).
	if len(b) > 0 && b[0]&0xe0 == 0xa0 {
		n := int(b[0] & 0x1f)
		if len(b) > n {
			*id = append((*id)[:0], b[1:1+n]...)
			return b[1+n:], nil
		}
		return b, msgp.ErrShortBytes
	}
	var v, o []byte
	var err error
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

// MarshalMsg implements msgp.Marshaler (encodes as str). It refuses to encode
// an identifier that the decoder would reject.
func (id Ident) MarshalMsg(b []byte) ([]byte, error) {
	if len(id) > MaxIdentLen {
		return b, ErrIdentTooLong
	}
	return msgp.AppendStringFromBytes(b, id), nil
}

// DecodeMsg implements msgp.Decodable. The declared length is checked before
// anything is read or allocated.
func (id *Ident) DecodeMsg(r *msgp.Reader) error {
	t, err := r.NextType()
	if err != nil {
		return err
	}
	var n uint32
	if t == msgp.BinType {
		n, err = r.ReadBytesHeader()
	} else {
		n, err = r.ReadStringHeader()
	}
	if err != nil {
		return err
	}
	if n > MaxIdentLen {
		return ErrIdentTooLong
	}
	buf := *id
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := r.ReadFull(buf); err != nil {
		return err
	}
	*id = buf
	return nil
}

// EncodeMsg implements msgp.Encodable (encodes as str).
func (id Ident) EncodeMsg(w *msgp.Writer) error {
	if len(id) > MaxIdentLen {
		return ErrIdentTooLong
	}
	return w.WriteStringFromBytes(id)
}

// Msgsize implements msgp.Sizer.
func (id Ident) Msgsize() int { return msgp.StringPrefixSize + len(id) }
