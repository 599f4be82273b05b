package partners

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/services/svc"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestOpenAtDST: opening hours are wall-clock times in the venue's zone,
// also on the days clocks change (Europe/Berlin 2027-03-28 02:00 CET →
// 03:00 CEST and 2027-10-31 03:00 CEST → 02:00 CET; America/New_York
// 2027-03-14 02:00 EST → 03:00 EDT and 2027-11-07 02:00 EDT → 01:00 EST):
// a nonexistent hour is never open, a repeated hour is open both times,
// hours spanning midnight and the switch end at the local closing time,
// and "24:00" closes at the local midnight of a 23- or 25-hour day.
func TestOpenAtDST(t *testing.T) {
	h := func(days, open, close string) []Hours {
		return []Hours{{Days: []string{days}, Open: open, Close: close}}
	}
	cases := []struct {
		name  string
		tz    string
		hours []Hours
		at    string
		want  bool
	}{
		// Berlin, spring forward (Sunday 2027-03-28, 01:00 UTC).
		{"ber spring 01-03 at 01:59 CET", "Europe/Berlin", h("sun", "01:00", "03:00"), "2027-03-28T00:59:59Z", true},
		{"ber spring 01-03 at 03:00 CEST", "Europe/Berlin", h("sun", "01:00", "03:00"), "2027-03-28T01:00:00Z", false},
		{"ber spring nonexistent 02:00-02:30 before", "Europe/Berlin", h("sun", "02:00", "02:30"), "2027-03-28T00:59:59Z", false},
		{"ber spring nonexistent 02:00-02:30 after", "Europe/Berlin", h("sun", "02:00", "02:30"), "2027-03-28T01:00:00Z", false},
		{"ber spring overnight sat 22-06 sat 22:00 CET", "Europe/Berlin", h("sat", "22:00", "06:00"), "2027-03-27T21:00:00Z", true},
		{"ber spring overnight sat 22-06 sun 05:59 CEST", "Europe/Berlin", h("sat", "22:00", "06:00"), "2027-03-28T03:59:00Z", true},
		{"ber spring overnight sat 22-06 sun 06:00 CEST", "Europe/Berlin", h("sat", "22:00", "06:00"), "2027-03-28T04:00:00Z", false},
		{"ber spring 18-24 at 23:59 CEST", "Europe/Berlin", h("sun", "18:00", "24:00"), "2027-03-28T21:59:59Z", true},
		{"ber spring 18-24 at mon 00:00", "Europe/Berlin", h("sun", "18:00", "24:00"), "2027-03-28T22:00:00Z", false},
		{"ber spring all day at 00:00 CET", "Europe/Berlin", h("sun", "00:00", "24:00"), "2027-03-27T23:00:00Z", true},
		{"ber spring all day sat 23:59 CET", "Europe/Berlin", h("sun", "00:00", "24:00"), "2027-03-27T22:59:59Z", false},
		// Berlin, fall back (Sunday 2027-10-31, 01:00 UTC).
		{"ber fall 02-03 first 02:00 CEST", "Europe/Berlin", h("sun", "02:00", "03:00"), "2027-10-31T00:00:00Z", true},
		{"ber fall 02-03 first 02:59 CEST", "Europe/Berlin", h("sun", "02:00", "03:00"), "2027-10-31T00:59:59Z", true},
		{"ber fall 02-03 second 02:00 CET", "Europe/Berlin", h("sun", "02:00", "03:00"), "2027-10-31T01:00:00Z", true},
		{"ber fall 02-03 second 02:59 CET", "Europe/Berlin", h("sun", "02:00", "03:00"), "2027-10-31T01:59:59Z", true},
		{"ber fall 02-03 at 03:00 CET", "Europe/Berlin", h("sun", "02:00", "03:00"), "2027-10-31T02:00:00Z", false},
		{"ber fall overnight sat 22-06 sun 05:59 CET", "Europe/Berlin", h("sat", "22:00", "06:00"), "2027-10-31T04:59:00Z", true},
		{"ber fall overnight sat 22-06 sun 06:00 CET", "Europe/Berlin", h("sat", "22:00", "06:00"), "2027-10-31T05:00:00Z", false},
		{"ber fall all day at 00:00 CEST", "Europe/Berlin", h("sun", "00:00", "24:00"), "2027-10-30T22:00:00Z", true},
		{"ber fall all day at 23:59 CET", "Europe/Berlin", h("sun", "00:00", "24:00"), "2027-10-31T22:59:59Z", true},
		{"ber fall all day at mon 00:00 CET", "Europe/Berlin", h("sun", "00:00", "24:00"), "2027-10-31T23:00:00Z", false},
		{"ber fall all day sat 23:59 CEST", "Europe/Berlin", h("sun", "00:00", "24:00"), "2027-10-30T21:59:59Z", false},
		// New York, spring forward (Sunday 2027-03-14, 07:00 UTC).
		{"ny spring 01-03 at 01:59 EST", "America/New_York", h("sun", "01:00", "03:00"), "2027-03-14T06:59:59Z", true},
		{"ny spring 01-03 at 03:00 EDT", "America/New_York", h("sun", "01:00", "03:00"), "2027-03-14T07:00:00Z", false},
		{"ny spring all day at 00:00 EST", "America/New_York", h("sun", "00:00", "24:00"), "2027-03-14T05:00:00Z", true},
		{"ny spring all day at 23:59 EDT", "America/New_York", h("sun", "00:00", "24:00"), "2027-03-15T03:59:59Z", true},
		{"ny spring all day at mon 00:00 EDT", "America/New_York", h("sun", "00:00", "24:00"), "2027-03-15T04:00:00Z", false},
		// New York, fall back (Sunday 2027-11-07, 06:00 UTC).
		{"ny fall 01-02 first 01:30 EDT", "America/New_York", h("sun", "01:00", "02:00"), "2027-11-07T05:30:00Z", true},
		{"ny fall 01-02 second 01:30 EST", "America/New_York", h("sun", "01:00", "02:00"), "2027-11-07T06:30:00Z", true},
		{"ny fall 01-02 at 02:00 EST", "America/New_York", h("sun", "01:00", "02:00"), "2027-11-07T07:00:00Z", false},
		{"ny fall 01-02 at 00:59 EDT", "America/New_York", h("sun", "01:00", "02:00"), "2027-11-07T04:59:59Z", false},
		{"ny fall overnight sat 20-02 sun 01:59 EST", "America/New_York", h("sat", "20:00", "02:00"), "2027-11-07T06:59:59Z", true},
		{"ny fall overnight sat 20-02 sun 02:00 EST", "America/New_York", h("sat", "20:00", "02:00"), "2027-11-07T07:00:00Z", false},
		{"ny fall 18-24 at 23:59 EST", "America/New_York", h("sun", "18:00", "24:00"), "2027-11-08T04:59:59Z", true},
		{"ny fall 18-24 at mon 00:00 EST", "America/New_York", h("sun", "18:00", "24:00"), "2027-11-08T05:00:00Z", false},
	}
	for _, c := range cases {
		v := Venue{TimeZone: c.tz, Hours: c.hours}
		if got := v.OpenAt(at(c.at)); got != c.want {
			t.Errorf("%s: OpenAt(%s) = %v, want %v", c.name, c.at, got, c.want)
		}
	}
}

// TestDayDST: the daily cap's day is the venue's local calendar day, also
// across the DST switches (days of 23 and 25 hours).
func TestDayDST(t *testing.T) {
	cases := []struct{ tz, at, want string }{
		{"Europe/Berlin", "2027-03-27T22:59:59Z", "20270327"}, // 23:59:59 CET
		{"Europe/Berlin", "2027-03-27T23:00:00Z", "20270328"}, // 00:00 CET
		{"Europe/Berlin", "2027-03-28T21:59:59Z", "20270328"}, // 23:59:59 CEST
		{"Europe/Berlin", "2027-03-28T22:00:00Z", "20270329"},
		{"Europe/Berlin", "2027-10-30T21:59:59Z", "20271030"}, // 23:59:59 CEST
		{"Europe/Berlin", "2027-10-30T22:00:00Z", "20271031"},
		{"Europe/Berlin", "2027-10-31T22:59:59Z", "20271031"}, // 23:59:59 CET: a 25-hour day
		{"Europe/Berlin", "2027-10-31T23:00:00Z", "20271101"},
		{"America/New_York", "2027-03-14T04:59:59Z", "20270313"}, // 23:59:59 EST
		{"America/New_York", "2027-03-14T05:00:00Z", "20270314"},
		{"America/New_York", "2027-03-15T03:59:59Z", "20270314"}, // 23:59:59 EDT: a 23-hour day
		{"America/New_York", "2027-03-15T04:00:00Z", "20270315"},
		{"America/New_York", "2027-11-07T03:59:59Z", "20271106"}, // 23:59:59 EDT
		{"America/New_York", "2027-11-07T04:00:00Z", "20271107"},
		{"America/New_York", "2027-11-08T04:59:59Z", "20271107"}, // 23:59:59 EST
		{"America/New_York", "2027-11-08T05:00:00Z", "20271108"},
		{"Nowhere/Invalid", "2027-11-08T05:00:00Z", ""},
	}
	for _, c := range cases {
		if got := (Venue{TimeZone: c.tz}).Day(at(c.at)); got != c.want {
			t.Errorf("%s %s: day %q, want %q", c.tz, c.at, got, c.want)
		}
	}
}

// TestHoursEmptyWindowRefused: a rule whose opening equals its closing
// time ("00:00"-"00:00", often meant as all day, or "24:00"-"00:00") was
// accepted and then never open: every session near the venue silently got
// no offer. It is refused; "00:00"-"24:00" is all day.
func TestHoursEmptyWindowRefused(t *testing.T) {
	v := Venue{ID: "v", RadiusM: 100, TimeZone: "Europe/Berlin", DailyCap: 1, Offer: Offer{Code: "C"}}
	for _, w := range [][2]string{{"00:00", "00:00"}, {"08:00", "08:00"}, {"24:00", "00:00"}, {"00:00", "24:00"}} {
		v.Hours = []Hours{{Days: []string{"mon"}, Open: w[0], Close: w[1]}}
		err := v.Validate()
		if w == [2]string{"00:00", "24:00"} {
			if err != nil {
				t.Fatalf("all day %v refused: %v", w, err)
			}
			// Monday 2027-03-01, the whole local day.
			if !v.OpenAt(at("2027-02-28T23:00:00Z")) || !v.OpenAt(at("2027-03-01T22:59:59Z")) || v.OpenAt(at("2027-03-01T23:00:00Z")) {
				t.Fatal("00:00-24:00 is not the whole local Monday")
			}
			continue
		}
		if !errors.Is(err, svc.ErrInvalid) || !strings.Contains(err.Error(), "empty window") {
			t.Fatalf("hours %v: %v, want ErrInvalid naming the empty window", w, err)
		}
	}
}
