package natsbus

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestTokenIsInjectiveAndSubjectSafe(t *testing.T) {
	for in, want := range map[string]string{
		"TGSVS000000000001": "TGSVS000000000001",
		"CS-0001":           "CS-0001",
		"DE.1":              "DE_2E1",
		"DE_1":              "DE_5F1",
		"a.b*c":             "a_2Eb_2Ac",
		"a b>":              "a_20b_3E",
		"":                  "_",
	} {
		if got := Token(in); got != want {
			t.Errorf("Token(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSubjectBuilders(t *testing.T) {
	for got, want := range map[string]string{
		SubjectDTC("raised", "V.1"):            "telemetry.dtc.raised.V_2E1",
		SubjectChargingSession("started", "S"): "charging.session.started.S",
		SubjectChargerStatus("S"):              "charging.status.S",
		SubjectVehicleEvent("V"):               "vehicle.event.V",
		SubjectCommand("V"):                    "vehicle.cmd.V",
		SubjectCommandAck("V_1"):               "vehicle.cmdack.V_5F1",
		SubjectCommandResult("V"):              "vehicle.cmdresult.V",
		SubjectDeadLetter("telemetry", "d*"):   "deadletter.telemetry.d_2A",
		SubjectProfile("p00ff"):                "profile.events.p00ff",
	} {
		if got != want {
			t.Errorf("subject %q, want %q", got, want)
		}
	}
	if st, s := SubjectConnectivity("charger", false, "S"); st != StreamCharging || s != "charging.connectivity.disconnected.S" {
		t.Errorf("charger connectivity: %s %s", st, s)
	}
	if st, s := SubjectConnectivity("vehicle", true, "V"); st != StreamVehicle || s != "vehicle.connectivity.connected.V" {
		t.Errorf("vehicle connectivity: %s %s", st, s)
	}
}

// TestEnvelopeBytes: typed data (the gateway's sink) and pre-encoded data
// (the services) give the same bytes, those of docs/data-model.md.
func TestEnvelopeBytes(t *testing.T) {
	at := time.Date(2026, 11, 23, 11, 0, 0, 123e6, time.FixedZone("CET", 3600))
	data := struct {
		VIN  string `json:"vin"`
		Code string `json:"code"`
	}{"TGSVS000000000001", "P0301"}
	typed, err := json.Marshal(NewEnvelope("dtc-raised-TGSVS000000000001-P0301-42", "dtc.raised", "TGSVS000000000001", at, any(data)))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(data)
	pre, err := json.Marshal(NewEnvelope("dtc-raised-TGSVS000000000001-P0301-42", "dtc.raised", "TGSVS000000000001", at, json.RawMessage(raw)))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"v":1,"id":"dtc-raised-TGSVS000000000001-P0301-42","type":"dtc.raised","time":"2026-11-23T10:00:00.123Z","source":"TGSVS000000000001","data":{"vin":"TGSVS000000000001","code":"P0301"}}`
	if string(typed) != want || string(pre) != want {
		t.Fatalf("envelopes\n%s\n%s\nwant\n%s", typed, pre, want)
	}
	ev, err := DecodeEvent(typed)
	if err != nil || ev.ID != "dtc-raised-TGSVS000000000001-P0301-42" || string(ev.Data) != string(raw) {
		t.Fatalf("DecodeEvent: %+v %v", ev, err)
	}
	for _, bad := range []string{`{`, `{"v":2,"id":"x"}`, `{"v":1}`} {
		if _, err := DecodeEvent([]byte(bad)); !errors.Is(err, ErrBadEnvelope) {
			t.Errorf("DecodeEvent(%s): %v, want ErrBadEnvelope", bad, err)
		}
	}
}
