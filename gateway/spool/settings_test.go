package spool

import (
	"testing"
	"time"
)

// TestSettingsOptions: the settings map onto Open's options, and zero
// settings leave Open's defaults (normalize) in place.
func TestSettingsOptions(t *testing.T) {
	o := Settings{MaxBytes: 2 << 20, SegmentBytes: 128 << 10, SyncDelay: time.Millisecond, SyncRecords: 7, AckTimeout: time.Second}.Options()
	if o.MaxBytes != 2<<20 || o.SegmentBytes != 128<<10 || o.SyncDelay != time.Millisecond || o.SyncRecords != 7 {
		t.Fatalf("Options() = %+v", o)
	}
	o = Settings{}.Options()
	o.Dir, o.Consumers = t.TempDir(), []string{"c"}
	n, err := o.normalize()
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultSettings()
	if n.MaxBytes != int64(d.MaxBytes) || n.SegmentBytes != int64(d.SegmentBytes) {
		t.Fatalf("zero settings normalize to %d/%d, want the defaults %d/%d", n.MaxBytes, n.SegmentBytes, d.MaxBytes, d.SegmentBytes)
	}
}
