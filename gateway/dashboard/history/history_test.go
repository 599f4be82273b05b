package history

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/internal/testenv"
)

// TestHistoryInfluxQL runs the dashboard's queries against a real
// InfluxDB 1.8 through the v1 query API, with hostile VINs and signal
// names that must stay literals (no other vehicle's data, no error, the
// database intact).
func TestHistoryInfluxQL(t *testing.T) {
	db := testenv.StartInflux(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The lookbacks are relative to the server's clock, so the points are
	// recent; nothing depends on the date or time of day.
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	ts := func(d time.Duration) string { return " " + strconv.FormatInt(t0.Add(d).UnixNano(), 10) + "\n" }
	lines := "telemetry,vin=V1 Vehicle.Speed=80,Vehicle.IsMoving=true,seq=1i" + ts(0) +
		"telemetry,vin=V1 Vehicle.Speed=90.5,Vehicle.IsMoving=false,seq=2i" + ts(5*time.Second) +
		"telemetry,vin=V1 Vehicle.Speed=100,seq=3i" + ts(65*time.Second) +
		"telemetry,vin=V2 Vehicle.Speed=10,seq=1i" + ts(time.Second) +
		"diag,vin=V1 dtcs=\"P0301:confirmed\",mil=true,odometer_km=10" + ts(0) +
		"diag,vin=V1 dtcs=\"\",mil=false,odometer_km=12" + ts(time.Minute) +
		"dtc,vin=V1,code=P0301 status=1i" + ts(0) +
		"dtc,vin=V1,code=P0301 status=2i" + ts(time.Minute) +
		"connectivity,device=V1 connected=true" + ts(0) +
		"connectivity,device=V1 connected=false" + ts(2*time.Minute) +
		"charging,station=S1,connector=1,event=started session_id=\"a\",vin=\"V1\",energy_wh=0,soc_pct=20" + ts(0) +
		"charging,station=S1,connector=1,event=stopped session_id=\"a\",vin=\"V1\",energy_wh=800,soc_pct=60" + ts(time.Minute) +
		"command_ack,vin=V1 cmd_id=\"c1\",status_name=\"applied\"" + ts(0) +
		"command_ack,vin=V1 cmd_id=\"c2\",status_name=\"rejected\",reason=\"busy\"" + ts(time.Second)
	req, _ := http.NewRequest(http.MethodPost, db.URL+"/api/v2/write?precision=ns&bucket=telemetry/autogen", strings.NewReader(lines))
	req.Header.Set("Authorization", "Token "+db.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %v %v", resp, err)
	}
	resp.Body.Close()

	s := New(Config{URL: db.URL, Token: db.ReadToken, Bucket: db.Bucket})
	defer s.Close()

	h, err := s.SignalHistory(ctx, "V1", []string{"Vehicle.Speed", "Vehicle.IsMoving"}, t0, t0.Add(2*time.Minute), time.Minute, "max")
	if err != nil {
		t.Fatal(err)
	}
	// windows end at their stop (Flux aggregateWindow's convention)
	wantSpeed := []Point{{t0.Add(time.Minute), 90.5}, {t0.Add(2 * time.Minute), 100}}
	if len(h["Vehicle.Speed"]) != 2 || h["Vehicle.Speed"][0] != wantSpeed[0] || h["Vehicle.Speed"][1] != wantSpeed[1] {
		t.Errorf("max speed %v, want %v", h["Vehicle.Speed"], wantSpeed)
	}
	if m := h["Vehicle.IsMoving"]; len(m) != 1 || m[0].V != 1 {
		t.Errorf("max IsMoving %v", m)
	}
	h, err = s.SignalHistory(ctx, "V1", []string{"Vehicle.IsMoving", "Vehicle.Speed"}, t0, t0.Add(2*time.Minute), time.Minute, "mean")
	if err != nil {
		t.Fatal(err)
	}
	if m := h["Vehicle.IsMoving"]; len(m) != 1 || m[0].V != 0.5 || !m[0].T.Equal(t0.Add(time.Minute)) {
		t.Errorf("mean of a boolean %v, want 0.5 at the window's end", m)
	}
	if m := h["Vehicle.Speed"]; len(m) != 2 || m[0].V != 85.25 {
		t.Errorf("mean speed %v", m)
	}
	latest, err := s.Latest(ctx, "V1", time.Hour)
	if err != nil || latest["Vehicle.Speed"].V != 100 || latest["Vehicle.IsMoving"].V != 0 || !latest["Vehicle.Speed"].T.Equal(t0.Add(65*time.Second)) {
		t.Errorf("Latest %v %v", latest, err)
	}
	if _, ok := latest["seq"]; ok {
		t.Error("Latest returned seq")
	}
	seen, err := s.LastSeen(ctx, time.Hour)
	if err != nil || len(seen) != 2 || !seen["V1"].Equal(t0.Add(65*time.Second)) {
		t.Errorf("LastSeen %v %v", seen, err)
	}
	conn, err := s.LastConnectivity(ctx, time.Hour)
	if err != nil || len(conn) != 1 || conn[0].Device != "V1" || conn[0].Connected || !conn[0].Time.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("LastConnectivity %v %v", conn, err)
	}
	diags, err := s.LastDiag(ctx, time.Hour)
	if err != nil || len(diags) != 1 || diags[0].MIL || diags[0].OdometerKm != 12 || diags[0].DTCs != "" {
		t.Errorf("LastDiag %+v %v", diags, err)
	}
	codes, err := s.DTCSeen(ctx, "V1", time.Hour)
	if err != nil || len(codes) != 1 || !codes[0].First.Equal(t0) || !codes[0].Last.Equal(t0.Add(time.Minute)) || codes[0].LastStatus != 2 {
		t.Errorf("DTCSeen %+v %v", codes, err)
	}
	cs, err := s.ChargingSessions(ctx, "V1", time.Hour, 10)
	if err != nil || len(cs) != 1 || cs[0].State != "stopped" || cs[0].EnergyWh != 800 || cs[0].SoCStartPct != 20 || cs[0].Station != "S1" {
		t.Errorf("ChargingSessions %+v %v", cs, err)
	}
	acks, err := s.CommandAcks(ctx, "V1", time.Hour, 1)
	if err != nil || len(acks) != 1 || acks[0].CmdID != "c2" || acks[0].Reason != "busy" {
		t.Errorf("CommandAcks %+v %v", acks, err)
	}

	// Hostile input: a literal that would select everything, or run a
	// second statement, if it were not escaped.
	for _, vin := range []string{`V1' OR "vin" =~ /.*/ --`, `x'; DROP DATABASE "telemetry"; --`, `\`, "V1\n", `V1\' OR 1=1`} {
		h, err := s.SignalHistory(ctx, vin, []string{"Vehicle.Speed", `Vehicle.Speed") FROM "telemetry"; DROP SERIES FROM /.*/; SELECT ("`},
			t0, t0.Add(2*time.Minute), time.Minute, "max")
		if err != nil || len(h["Vehicle.Speed"]) != 0 {
			t.Errorf("hostile vin %q: %v %v", vin, h, err)
		}
		if l, err := s.Latest(ctx, vin, time.Hour); err != nil || len(l) != 0 {
			t.Errorf("hostile vin %q: Latest %v %v", vin, l, err)
		}
		if a, err := s.CommandAcks(ctx, vin, time.Hour, 10); err != nil || len(a) != 0 {
			t.Errorf("hostile vin %q: CommandAcks %v %v", vin, a, err)
		}
		if c, err := s.ChargingSessions(ctx, vin, time.Hour, 10); err != nil || len(c) != 0 {
			t.Errorf("hostile vin %q: ChargingSessions %v %v", vin, c, err)
		}
		if c, err := s.DTCSeen(ctx, vin, time.Hour); err != nil || len(c) != 0 {
			t.Errorf("hostile vin %q: DTCSeen %v %v", vin, c, err)
		}
	}
	if n := db.Count(t, "telemetry", "seq", t0.Add(-time.Minute)); n != 4 {
		t.Fatalf("telemetry points after hostile queries: %d, want 4", n)
	}
	if _, err := s.SignalHistory(ctx, "V1", []string{"Vehicle.Speed"}, t0, t0.Add(time.Minute), time.Minute, "median) FROM x; --"); err == nil {
		t.Error("unknown aggregation accepted")
	}
}
