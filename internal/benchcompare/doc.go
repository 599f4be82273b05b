// Package benchcompare measures the gateway side by side with the usual
// off-the-shelf alternative, Mosquitto + Telegraf's mqtt_consumer, on one
// InfluxDB and under one load (`make bench-compare`, docs/benchmarks.md):
//
//  1. direct: the database's own ceiling, a Go writer posting line-protocol
//     batches of the gateway's telemetry points straight to /api/v2/write;
//  2. mosquitto+telegraf: the same frames as JSON, published QoS 1 to
//     Mosquitto (persistence on, password file + ACL, no anonymous access),
//     consumed by Telegraf inputs.mqtt_consumer (QoS 1, persistent session,
//     acknowledged after the write) and written by outputs.influxdb;
//  3. gateway: the same frames as MessagePack, published QoS 1 to the built
//     gateway binary (PUBACK after the spool's fsync).
//
// Each pipeline gets its own database. The load is one raw MQTT 3.1.1
// client per device (the same code for both brokers) keeping a fixed number
// of QoS 1 publishes in flight. A run ends when every acknowledged frame is
// queryable (or the stored count stops growing): frames/s is stored frames
// over that time, CPU comes from /proc/<pid>/stat deltas of each process.
//
// Everything runs on loopback ports chosen at start, in a temporary
// directory removed at the end (unless Options.KeepDir).
package benchcompare
