// Package svc holds what the post-purchase services share: publishing and
// decoding the event envelope (natsbus.Envelope) on NATS, JSON key-value
// helpers on JetStream buckets, and the HTTP helpers (JSON errors, input
// limits, bearer-token authentication).
package svc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
)

// Errors shared by the services.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid input")
	ErrConflict = errors.New("conflict")
	ErrErased   = errors.New("customer erased")
)

// Decode unmarshals the event envelope (natsbus.Event) in b; an error
// wraps ErrInvalid (and natsbus.ErrBadEnvelope).
func Decode(b []byte) (natsbus.Event, error) {
	e, err := natsbus.DecodeEvent(b)
	if err != nil {
		return e, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return e, nil
}

// Publisher publishes events to JetStream with Nats-Msg-Id = id, waiting for
// the stream's acknowledgement (so a nil error means stored or deduplicated).
type Publisher struct {
	JS jetstream.JetStream
}

// Publish marshals data into an envelope and publishes it on subject.
func (p Publisher) Publish(ctx context.Context, subject, id, typ, source string, at time.Time, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", typ, err)
	}
	b, err := json.Marshal(natsbus.NewEnvelope(id, typ, source, at, json.RawMessage(raw)))
	if err != nil {
		return err
	}
	return p.PublishRaw(ctx, subject, id, b)
}

// PublishRaw publishes b on subject with Nats-Msg-Id = id.
func (p Publisher) PublishRaw(ctx context.Context, subject, id string, b []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m := &nats.Msg{Subject: subject, Data: b, Header: nats.Header{}}
	if _, err := p.JS.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// KV is a JetStream key-value bucket holding JSON values.
type KV struct {
	B jetstream.KeyValue
}

// OpenKV creates (or updates) and opens a bucket whose keys live until
// deleted (registries, state with no natural end; docs/data-model.md lists
// every bucket's lifetime).
func OpenKV(ctx context.Context, js jetstream.JetStream, bucket, desc string, replicas int) (KV, error) {
	return OpenKVTTL(ctx, js, bucket, desc, replicas, 0)
}

// OpenKVTTL is OpenKV for a bucket whose keys expire ttl after their last
// write (0: never). Buckets that gain a key per event (delivery statuses,
// daily counters) must have one, or they grow forever.
func OpenKVTTL(ctx context.Context, js jetstream.JetStream, bucket, desc string, replicas int, ttl time.Duration) (KV, error) {
	if replicas < 1 {
		replicas = 1
	}
	b, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Description: desc,
		Storage: jetstream.FileStorage, Replicas: replicas, History: 1, TTL: ttl})
	if err != nil {
		return KV{}, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return KV{B: b}, nil
}

// Get decodes key into v and returns its revision; ErrNotFound when absent.
func (k KV) Get(ctx context.Context, key string, v any) (uint64, error) {
	e, err := k.B.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// Put stores v under key.
func (k KV) Put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = k.B.Put(ctx, key, b)
	return err
}

// Create stores v under key only if absent; ErrConflict otherwise.
func (k KV) Create(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err = k.B.Create(ctx, key, b); errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%s: %w", key, ErrConflict)
	}
	return err
}

// Update stores v under key if its revision is still rev (0: absent);
// ErrConflict otherwise.
func (k KV) Update(ctx context.Context, key string, v any, rev uint64) error {
	_, err := k.Swap(ctx, key, v, rev)
	return err
}

// Swap is Update that also returns the new revision.
func (k KV) Swap(ctx context.Context, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = k.B.Create(ctx, key, b)
	} else {
		nrev, err = k.B.Update(ctx, key, b, rev)
	}
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("%s: %w: %w", key, ErrConflict, err)
		}
		return 0, err
	}
	return nrev, nil
}

// Purge removes key and its history.
func (k KV) Purge(ctx context.Context, key string) error {
	err := k.B.Purge(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// Keys lists the bucket's keys (empty when none).
func (k KV) Keys(ctx context.Context) ([]string, error) {
	l, err := k.B.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for key := range l.Keys() {
		out = append(out, key)
	}
	return out, nil
}

// Watch runs apply for every entry of the bucket matching keys (a subject
// filter such as "c.>"; "" for all keys): first the current values, then
// every change, until ctx ends (it then returns nil). The nil entry that
// marks the end of the current values is not passed on. A watch that
// cannot be set up while ctx is live is an error.
func (k KV) Watch(ctx context.Context, keys string, apply func(jetstream.KeyValueEntry), opts ...jetstream.WatchOpt) error {
	return k.WatchLoaded(ctx, keys, apply, nil, opts...)
}

// WatchLoaded is Watch that also calls loaded (if not nil) once the
// current values have been applied, at the marker Watch skips.
func (k KV) WatchLoaded(ctx context.Context, keys string, apply func(jetstream.KeyValueEntry), loaded func(), opts ...jetstream.WatchOpt) error {
	var w jetstream.KeyWatcher
	var err error
	if keys == "" {
		w, err = k.B.WatchAll(ctx, opts...)
	} else {
		w, err = k.B.Watch(ctx, keys, opts...)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch %s: %w", k.B.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			switch {
			case e != nil:
				apply(e)
			case loaded != nil:
				loaded()
			}
		}
	}
}

// Clock returns the current time; tests inject their own.
type Clock func() time.Time

// Now returns c() or time.Now when c is nil.
func (c Clock) Now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}
