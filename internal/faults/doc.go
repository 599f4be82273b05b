// Package faults holds the gateway's fault-injection tests: real InfluxDB
// stopped under load, the gateway process killed with SIGKILL under load,
// the NATS server restarted. Each test checks the delivery guarantee:
// every acknowledged QoS 1 frame ends up stored, exactly once per series and
// timestamp. The default run is short; TELEGATE_LONG=1 runs the long
// versions (see docs/reliability.md for the figures).
package faults
