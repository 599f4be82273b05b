package benchcompare

import (
	"strings"
	"testing"
	"time"
)

const sampleTraces = `File: gateway
Type: cpu
-----------+-------------------------------------------------------
     370ms   internal/runtime/syscall/linux.Syscall6
             syscall.write
             github.com/mochi-mqtt/server/v2.(*Client).WritePacket
             github.com/mochi-mqtt/server/v2.(*Server).processPublish
-----------+-------------------------------------------------------
     100ms   internal/runtime/syscall/linux.Syscall6
             syscall.write
             github.com/telegate/telegate/broker/listener.(*nbWriter).write
             github.com/telegate/telegate/broker/listener.(*Conn).ReleaseHeld
             github.com/telegate/telegate/gateway/ingest.(*heldAcks).Durable
             github.com/telegate/telegate/gateway/spool.(*Spool).notifyLoop
-----------+-------------------------------------------------------
      10ms   github.com/telegate/telegate/decoders/catalog.(*Signal).Valid
             github.com/telegate/telegate/gateway/influxsink.(*encoder).signal
-----------+-------------------------------------------------------
     1.5s   internal/runtime/syscall/linux.Syscall6
             github.com/telegate/telegate/gateway/spool.fdatasync
-----------+-------------------------------------------------------
      40ms   syscall.Fdatasync
             github.com/telegate/telegate/gateway/spool.fdatasync
             github.com/telegate/telegate/gateway/spool.(*Consumer).writeCursor
             github.com/telegate/telegate/gateway/spool.(*Consumer).Commit
             github.com/telegate/telegate/gateway/eventsink.(*Sink).Run
-----------+-------------------------------------------------------
    stream:  VEHICLE
   account:  GATEWAY
      20ms   runtime.scanobject
             runtime.gcBgMarkWorker
-----------+-------------------------------------------------------
      30ms   runtime.findRunnable
             runtime.schedule
-----------+-------------------------------------------------------
`

// TestStages: samples land in the stage of the first matching rule; a
// PUBACK written by the spool's notifier counts as PUBACK write; a
// sample's pprof labels (nats-server sets some) are skipped.
func TestStages(t *testing.T) {
	st, total, err := Stages(strings.NewReader(sampleTraces))
	if err != nil {
		t.Fatal(err)
	}
	if total != 2070*time.Millisecond {
		t.Fatalf("total %v", total)
	}
	got := map[string]time.Duration{}
	for _, s := range st {
		got[s.Name] = s.CPU
	}
	for name, want := range map[string]time.Duration{"PUBACK write": 470 * time.Millisecond, "line-protocol encoding": 10 * time.Millisecond,
		"spool append and fsync": 1500 * time.Millisecond, "GC": 20 * time.Millisecond, "sink cursor commits (fsync)": 40 * time.Millisecond, "other (scheduler, runtime, idle syscalls)": 30 * time.Millisecond} {
		if got[name] != want {
			t.Errorf("%s: %v, want %v", name, got[name], want)
		}
	}
}
