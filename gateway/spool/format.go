package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// On-disk format (all integers little endian).
//
// Segment file "<seq, 20 decimal digits>.seg":
//
//	header (32 bytes):
//	  0  [8]byte  magic "TGSPSEG1"
//	  8  uint64   seq (equals the number in the file name)
//	  16 uint64   number of the first record in the segment (records are
//	              numbered from 0 for the life of the spool directory)
//	  24 uint32   CRC-32C of bytes 0..23
//	  28 uint32   reserved, zero
//	frames, back to back, from offset 32:
//	  0  uint32   payload length n
//	  4  uint32   CRC-32C of bytes 0..3 (the length) followed by the payload
//	  8  [n]byte  payload
//
// A Pos is (segment seq, byte offset of a frame in that file). The CRC covers
// the length, so a zero-filled tail (a file extended by the kernel but whose
// data never reached the disk) never verifies.
const (
	segMagic        = "TGSPSEG1"
	segHeaderSize   = 32
	frameHeaderSize = 8
	segSuffix       = ".seg"
	segNameDigits   = 20

	// maxRecordLimit bounds Options.MaxRecord: the frame length is a uint32
	// and records are held in memory whole.
	maxRecordLimit = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Pos is a position in the spool: a segment sequence number and a byte offset
// in that segment file. Positions are totally ordered (Less). Record.Pos is
// where a record starts, Record.Next where the following one starts; commit
// a Next.
type Pos struct {
	Seg uint64
	Off int64
}

// Less reports whether p comes before q.
func (p Pos) Less(q Pos) bool {
	return p.Seg < q.Seg || (p.Seg == q.Seg && p.Off < q.Off)
}

// String formats p as "seg:off".
func (p Pos) String() string {
	return strconv.FormatUint(p.Seg, 10) + ":" + strconv.FormatInt(p.Off, 10)
}

func segName(seq uint64) string {
	return fmt.Sprintf("%0*d%s", segNameDigits, seq, segSuffix)
}

func parseSegName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(digits) != segNameDigits {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil
}

func appendSegHeader(b []byte, seq, firstRec uint64) []byte {
	start := len(b)
	b = append(b, segMagic...)
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = binary.LittleEndian.AppendUint64(b, firstRec)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
	b = binary.LittleEndian.AppendUint32(b, 0)
	return b
}

// parseSegHeader decodes a segment header; reason is empty when it is valid.
func parseSegHeader(b []byte) (seq, firstRec uint64, reason string) {
	if len(b) < segHeaderSize {
		return 0, 0, "short segment header"
	}
	if string(b[:8]) != segMagic {
		return 0, 0, "bad segment magic"
	}
	if crc32.Checksum(b[:24], castagnoli) != binary.LittleEndian.Uint32(b[24:]) {
		return 0, 0, "segment header checksum mismatch"
	}
	return binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:]), ""
}

// frameCRC is the checksum stored in a frame header: CRC-32C of the 4 length
// bytes followed by the payload.
func frameCRC(payload []byte) uint32 {
	return crc32.Update(lengthCRC(uint32(len(payload))), castagnoli, payload)
}

// lengthCRC is crc32.Update(0, castagnoli, n as 4 little-endian bytes),
// computed byte by byte with the table so that no buffer escapes to the heap
// (crc32.Update would make Append allocate).
func lengthCRC(n uint32) uint32 {
	crc := ^uint32(0)
	for i := 0; i < 4; i++ {
		crc = castagnoli[byte(crc)^byte(n>>(8*i))] ^ (crc >> 8)
	}
	return ^crc
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Cursor file "<consumer>.cursor": 1024 bytes holding two slots, at offsets 0
// and 512 (different disk sectors). A commit overwrites the slot of its
// generation (gen%2) and fdatasyncs; Open takes the valid slot with the
// highest generation, so a torn slot write falls back to the previous commit.
//
//	0  [4]byte magic "TGC1"
//	4  uint64  generation (1, 2, ...)
//	12 uint64  committed Pos.Seg
//	20 int64   committed Pos.Off
//	28 uint64  number of records before the committed position
//	36 uint32  CRC-32C of bytes 0..35
const (
	cursorMagic    = "TGC1"
	cursorSlotSize = 40
	cursorSlotGap  = 512
	cursorFileSize = 1024
	cursorSuffix   = ".cursor"
)

type cursorState struct {
	gen uint64
	pos Pos
	rec uint64
}

func encodeCursorSlot(b *[cursorSlotSize]byte, c cursorState) {
	copy(b[:4], cursorMagic)
	binary.LittleEndian.PutUint64(b[4:], c.gen)
	binary.LittleEndian.PutUint64(b[12:], c.pos.Seg)
	binary.LittleEndian.PutUint64(b[20:], uint64(c.pos.Off))
	binary.LittleEndian.PutUint64(b[28:], c.rec)
	binary.LittleEndian.PutUint32(b[36:], crc32.Checksum(b[:36], castagnoli))
}

func decodeCursorSlot(b []byte) (cursorState, bool) {
	if len(b) < cursorSlotSize || string(b[:4]) != cursorMagic ||
		crc32.Checksum(b[:36], castagnoli) != binary.LittleEndian.Uint32(b[36:]) {
		return cursorState{}, false
	}
	return cursorState{
		gen: binary.LittleEndian.Uint64(b[4:]),
		pos: Pos{Seg: binary.LittleEndian.Uint64(b[12:]), Off: int64(binary.LittleEndian.Uint64(b[20:]))},
		rec: binary.LittleEndian.Uint64(b[28:]),
	}, true
}
