// Package influx is the gateway's InfluxDB sink plumbing: a zero-allocation
// line-protocol Encoder, a Writer that sends one encoded batch per HTTP
// request and classifies failures as retryable or permanent (callers own
// batching and retries; nothing is ever dropped here), Backoff for those
// retries, EnsureDatabase for InfluxDB 1.x, and ServerEnv, the environment
// that runs a local InfluxDB 1.8 server.
//
// See README.md for the contracts.
package influx
