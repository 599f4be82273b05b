package presence

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/nats-io/nats.go/jetstream"
)

type mqttClient = mqtt.Client

// nopKV satisfies jetstream.KeyValue for tests that never reach the bucket.
type nopKV struct{ jetstream.KeyValue }
