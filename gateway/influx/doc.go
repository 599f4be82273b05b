// Package influx is the gateway's InfluxDB sink plumbing: a zero-allocation
// line-protocol Encoder, a Writer that sends one encoded batch per HTTP
// request and classifies failures as retryable or permanent (callers own
// batching and retries; nothing is ever dropped here), Backoff for those
// retries, EnsureDatabase for InfluxDB 1.x, and the credentials of the
// servers the project runs. Reads go through gateway/influx/query
// (InfluxQL, v1 query API); the local influxd is launched by
// gateway/influx/localserver.
//
// See README.md for the contracts.
package influx
