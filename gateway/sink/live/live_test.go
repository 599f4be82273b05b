package live

import (
	"testing"

	"github.com/telegate/telegate/decoders/wire"
)

func TestHub(t *testing.T) {
	h := New()
	if h.HasSubscribers([]byte("V")) {
		t.Fatal("no subscribers yet")
	}
	ch, cancel := h.Subscribe("V", 1)
	all, cancelAll := h.Subscribe("", 4)
	sigs := []wire.Signal{{ID: 1, Value: 2}}
	h.Publish([]byte("V"), 1, 1, sigs)
	sigs[0].Value = 99
	h.Publish([]byte("V"), 2, 2, sigs) // V's buffer is full: dropped for V
	h.Publish([]byte("W"), 3, 3, sigs)
	u := <-ch
	if u.VIN != "V" || u.Signals[0].Value != 2 {
		t.Fatalf("%+v", u)
	}
	if h.Dropped() != 1 || len(all) != 3 {
		t.Fatalf("dropped %d all %d", h.Dropped(), len(all))
	}
	cancel()
	cancel()
	cancelAll()
	if h.HasSubscribers([]byte("V")) {
		t.Fatal("cancel did not unsubscribe")
	}
	var nilHub *Hub
	nilHub.Publish([]byte("V"), 1, 1, sigs) // no-op
}
