package dtc_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/telegate/telegate/decoders/dtc"
	"github.com/telegate/telegate/decoders/wire"
)

func TestKnownEncodings(t *testing.T) {
	tests := []struct {
		code uint16
		text string
	}{
		{0x0000, "P0000"},
		{0x0301, "P0301"},
		{0x0420, "P0420"},
		{0x0A80, "P0A80"},
		{0x1234, "P1234"},
		{0x2135, "P2135"},
		{0x3FFF, "P3FFF"},
		{0x4123, "C0123"},
		{0x5ABC, "C1ABC"},
		{0x8123, "B0123"},
		{0x9001, "B1001"},
		{0xC100, "U0100"},
		{0xC073, "U0073"},
		{0xD000, "U1000"},
		{0xFFFF, "U3FFF"},
	}
	for _, tt := range tests {
		if got := string(dtc.Append(nil, tt.code)); got != tt.text {
			t.Errorf("Append(%#04x) = %q, want %q", tt.code, got, tt.text)
		}
		if got := dtc.String(tt.code); got != tt.text {
			t.Errorf("String(%#04x) = %q, want %q", tt.code, got, tt.text)
		}
		got, err := dtc.Parse(tt.text)
		if err != nil || got != tt.code {
			t.Errorf("Parse(%q) = %#04x, %v; want %#04x", tt.text, got, err, tt.code)
		}
	}
}

func TestRoundTripAllCodes(t *testing.T) {
	seen := make(map[string]bool, 1<<16)
	buf := make([]byte, 0, dtc.Len)
	for c := 0; c <= 0xFFFF; c++ {
		code := uint16(c)
		buf = dtc.Append(buf[:0], code)
		s := string(buf)
		if len(s) != dtc.Len {
			t.Fatalf("Append(%#04x) = %q: wrong length", code, s)
		}
		if seen[s] {
			t.Fatalf("Append(%#04x) = %q: produced twice", code, s)
		}
		seen[s] = true
		back, err := dtc.Parse(s)
		if err != nil || back != code {
			t.Fatalf("Parse(Append(%#04x)) = %#04x, %v", code, back, err)
		}
		lower, err := dtc.Parse(strings.ToLower(s))
		if err != nil || lower != code {
			t.Fatalf("Parse(lower(%q)) = %#04x, %v", s, lower, err)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	for _, s := range []string{
		"", "P", "P030", "P03011", "X0301", "P4301", "P9301", "P-301",
		"P03G1", "P030 ", " P030", "p03g1", "P0x01", "ü0301", "P0\x0001",
	} {
		if code, err := dtc.Parse(s); !errors.Is(err, dtc.ErrInvalidCode) {
			t.Errorf("Parse(%q) = %#04x, %v; want ErrInvalidCode", s, code, err)
		}
	}
}

func TestAppendZeroAlloc(t *testing.T) {
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		buf = dtc.Append(buf[:0], 0x0301)
	})
	if allocs != 0 {
		t.Fatalf("Append allocates %v times", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() {
		_, _, _ = dtc.Describe(0x0301)
		_, _, _ = dtc.Describe(0x1301)
	})
	if allocs != 0 {
		t.Fatalf("Describe allocates %v times", allocs)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		code string
		sev  dtc.Severity
		has  string
	}{
		{"P0300", dtc.Critical, "misfire"},
		{"P0301", dtc.Critical, "Cylinder 1 misfire"},
		{"P0312", dtc.Critical, "Cylinder 12 misfire"},
		{"P0217", dtc.Critical, "over-temperature"},
		{"P0524", dtc.Critical, "oil pressure too low"},
		{"P0420", dtc.Warning, "Catalyst"},
		{"P0430", dtc.Warning, "bank 2"},
		{"P0442", dtc.Warning, "small leak"},
		{"P0455", dtc.Warning, "large leak"},
		{"P0171", dtc.Warning, "lean"},
		{"P0700", dtc.Warning, "Transmission"},
		{"P0532", dtc.Info, "A/C"},
		{"P0AA6", dtc.Critical, "isolation"},
		{"U0100", dtc.Critical, "ECM"},
		{"U0121", dtc.Critical, "ABS"},
	}
	for _, tt := range tests {
		code, err := dtc.Parse(tt.code)
		if err != nil {
			t.Fatal(err)
		}
		desc, sev, ok := dtc.Describe(code)
		if !ok || sev != tt.sev || !strings.Contains(desc, tt.has) {
			t.Errorf("Describe(%s) = %q, %v, %v; want %v and %q", tt.code, desc, sev, ok, tt.sev, tt.has)
		}
	}
	// Not in the table: manufacturer-specific and unknown generic codes.
	for _, s := range []string{"P1234", "P0001", "B1001", "C0035", "U3FFF"} {
		code, _ := dtc.Parse(s)
		if desc, sev, ok := dtc.Describe(code); ok || desc != "" || sev != dtc.Warning {
			t.Errorf("Describe(%s) = %q, %v, %v; want \"\", warning, false", s, desc, sev, ok)
		}
	}
}

func TestTableCoverage(t *testing.T) {
	if n := dtc.Count(); n < 120 {
		t.Fatalf("only %d codes described, want at least 120", n)
	}
	// Ranges the table must cover completely.
	mustHave := []string{"P0171", "P0172", "P0174", "P0175", "P0420", "P0430"}
	for cyl := 0; cyl <= 12; cyl++ {
		mustHave = append(mustHave, fmt.Sprintf("P03%02d", cyl))
	}
	mustHave = append(mustHave, "P0440", "P0441", "P0442", "P0455", "P0456")
	for _, s := range mustHave {
		code, _ := dtc.Parse(s)
		if _, _, ok := dtc.Describe(code); !ok {
			t.Errorf("%s has no description", s)
		}
	}
	// Every described code: non-empty description without trailing period,
	// a valid severity; every misfire code is critical.
	for c := 0; c <= 0xFFFF; c++ {
		desc, sev, ok := dtc.Describe(uint16(c))
		if !ok {
			continue
		}
		if desc == "" || strings.HasSuffix(desc, ".") || strings.TrimSpace(desc) != desc {
			t.Errorf("%s: bad description %q", dtc.String(uint16(c)), desc)
		}
		if sev < dtc.Info || sev > dtc.Critical {
			t.Errorf("%s: bad severity %d", dtc.String(uint16(c)), sev)
		}
		if c >= 0x0300 && c <= 0x0312 && sev != dtc.Critical {
			t.Errorf("%s: misfire must be critical", dtc.String(uint16(c)))
		}
	}
}

func TestSeverityAndStatusNames(t *testing.T) {
	for sev, want := range map[dtc.Severity]string{dtc.Info: "info", dtc.Warning: "warning", dtc.Critical: "critical", 0: "unknown", 9: "unknown"} {
		if got := sev.String(); got != want {
			t.Errorf("Severity(%d).String() = %q, want %q", sev, got, want)
		}
	}
	tests := []struct {
		status uint8
		want   string
	}{
		{wire.DTCPending, "pending"},
		{wire.DTCConfirmed, "confirmed"},
		{wire.DTCPermanent, "permanent"},
		{0, "unknown"},
		{4, "unknown"},
		{255, "unknown"},
	}
	for _, tt := range tests {
		if got := dtc.StatusName(tt.status); got != tt.want {
			t.Errorf("StatusName(%d) = %q, want %q", tt.status, got, tt.want)
		}
	}
	if dtc.StatusPending != wire.DTCPending || dtc.StatusConfirmed != wire.DTCConfirmed || dtc.StatusPermanent != wire.DTCPermanent {
		t.Fatal("dtc status constants differ from wire's")
	}
}

func BenchmarkDTCAppend(b *testing.B) {
	buf := make([]byte, 0, 16)
	b.ReportAllocs()
	var code uint16
	for b.Loop() {
		buf = dtc.Append(buf[:0], code)
		code += 0x0101
	}
}

func BenchmarkDTCParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dtc.Parse("P0301"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDTCDescribe(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := dtc.Describe(0x0420); !ok {
			b.Fatal("missing")
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"P0301", "U0100", "c0123", "X0000", "P4000", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		code, err := dtc.Parse(s)
		if err != nil {
			if !errors.Is(err, dtc.ErrInvalidCode) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrInvalidCode", s, err)
			}
			return
		}
		if got := dtc.String(code); !strings.EqualFold(got, s) {
			t.Fatalf("Parse(%q) = %#04x, which formats as %q", s, code, got)
		}
	})
}
