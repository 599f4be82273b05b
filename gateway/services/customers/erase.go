package customers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/svc"
)

// ErrErase wraps failures of an erasure's steps; the tombstone is written
// first, so a failed erasure can be repeated (DELETE again).
var ErrErase = errors.New("erasure incomplete")

// Erasure is what Erase hands to the erasure hooks: the erased customer's
// record (read-only) and the strings that identify the customer, which
// Erase scrubs from every stream and bucket after the hooks ran.
type Erasure struct {
	Customer Customer
	// DeleteTelemetry asks for the vehicles' telemetry to be deleted too
	// (TelemetryEraser); otherwise it stays, keyed by VIN.
	DeleteTelemetry bool
	// Needles identify the customer: id, ref, VINs, id tags; hooks add
	// theirs (offer ids, partner tokens).
	Needles []string
}

// TelemetryEraser deletes a vehicle's stored telemetry (InfluxDB series
// tagged with its VIN). Optional: see Registry.SetTelemetryEraser.
type TelemetryEraser interface {
	DeleteVehicle(ctx context.Context, vin string) error
}

// SetTelemetryEraser enables EraseOptions.DeleteTelemetry.
func (r *Registry) SetTelemetryEraser(t TelemetryEraser) {
	r.mu.Lock()
	r.tele = t
	r.mu.Unlock()
}

// EraseOptions are the options of one erasure.
type EraseOptions struct {
	// DeleteTelemetry also deletes the vehicles' telemetry series
	// (ErrNoTelemetryEraser when none is configured).
	DeleteTelemetry bool
}

// ErrNoTelemetryEraser is returned when telemetry deletion is asked for but
// not configured.
var ErrNoTelemetryEraser = fmt.Errorf("%w: telemetry deletion is not configured", svc.ErrInvalid)

// scrubStreams are the streams whose messages carry customers' VINs,
// tokens or offer ids in payloads on subjects shared by many customers
// (charging sessions per station, triggers per partner, dead letters):
// Erase reads them through and deletes the matching messages one by one.
// In every other stream a customer's data sits on subjects of its own
// (profile.events.{ref}, vehicle.*.{vin}, telemetry.dtc.*.{vin}), which
// Erase purges by subject.
var scrubStreams = []string{natsbus.StreamCharging, natsbus.StreamPartners, natsbus.StreamDeadLetter}

// Erase removes customer id; see EraseWith.
func (r *Registry) Erase(ctx context.Context, id string) error {
	return r.EraseWith(ctx, id, EraseOptions{})
}

// EraseWith removes customer id so that nothing stored links back to it:
//
//  1. the tombstone erased.{pseudonym} (no id, no date of anything the
//     customer did) blocks re-registration and makes Erased(id) true;
//  2. the record c.{pseudonym} is purged (with it the ref, token salt and
//     id tags: nothing links the ref to the id any more);
//  3. the erasure hooks delete the services' own data (profile, offers,
//     caps; the offer engine waits for evaluations in flight) and add the
//     customer's offer ids and partner tokens to the needles;
//  4. every stream is purged of the subjects that carry a needle as a
//     token, which also removes the KV delete/purge markers of keys that
//     embed one (KV streams are streams too); the streams that mix
//     customers on one subject are read through and every message whose
//     subject, headers or payload contains a needle is deleted (secure
//     delete: overwritten on disk);
//  5. optionally, the vehicles' telemetry is deleted (TelemetryEraser).
//
// After EraseWith returns no trigger is produced for the customer's
// vehicles (they are no longer registered). Data the vehicles send later is
// vehicle data: it stays keyed by VIN (see docs/services.md).
func (r *Registry) EraseWith(ctx context.Context, id string, opt EraseOptions) error {
	r.wmu.Lock()
	r.mu.Lock()
	pn := r.Pseudonym(id)
	e, ok := r.byID[id]
	erased := r.erased[pn]
	hooks := append([]ErasureHook(nil), r.hooks...)
	tele := r.tele
	if !ok && !erased {
		r.mu.Unlock()
		r.wmu.Unlock()
		return fmt.Errorf("%s: %w", id, ErrUnknownCustomer)
	}
	if opt.DeleteTelemetry && tele == nil {
		r.mu.Unlock()
		r.wmu.Unlock()
		return ErrNoTelemetryEraser
	}
	var c Customer
	if ok {
		c = cloneCustomer(e.c)
	}
	r.erased[pn] = true
	r.dropLocked(id)
	r.mu.Unlock()
	err := r.kv.Put(ctx, "erased."+pn, struct{}{})
	if err == nil {
		err = r.kv.Purge(ctx, "c."+pn)
	}
	r.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrErase, id, err)
	}
	if !ok {
		// Erased before (e.g. a repeated DELETE after a failure): the
		// record and its ref are gone; scrub what still names the id.
		c = Customer{ID: id}
	}
	er := &Erasure{Customer: c, DeleteTelemetry: opt.DeleteTelemetry, Needles: []string{id}}
	if c.Ref != "" {
		er.Needles = append(er.Needles, c.Ref)
	}
	for _, v := range c.Vehicles {
		er.Needles = append(er.Needles, v.VIN)
	}
	er.Needles = append(er.Needles, c.IDTags...)
	var errs []error
	for _, h := range hooks {
		errs = append(errs, h(ctx, er))
	}
	// The record key's own purge marker: its key is the pseudonym, which
	// must not become a needle (the tombstone carries it too).
	errs = append(errs, purgeSubject(ctx, r.js, "KV_"+Bucket, "$KV."+Bucket+".c."+pn))
	errs = append(errs, Scrub(ctx, r.js, er.Needles))
	if opt.DeleteTelemetry {
		for _, v := range c.Vehicles {
			errs = append(errs, tele.DeleteVehicle(ctx, v.VIN))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrErase, err)
	}
	r.log.Info("customer erased", "pseudonym", pn, "vehicles", len(c.Vehicles), "telemetry_deleted", opt.DeleteTelemetry)
	return nil
}

// Erased reports whether id was erased.
func (r *Registry) Erased(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.erased[r.Pseudonym(id)]
}

// Scrub removes every trace of needles from the JetStream account: in every
// stream the subjects that carry a needle as one token (purged by subject
// filter), and in scrubStreams every message whose subject, headers or
// payload contains a needle or, for an id, its natsbus.Token form
// (secure-deleted). Needles shorter than 4 bytes are ignored (they would
// match unrelated data).
func Scrub(ctx context.Context, js jetstream.JetStream, needles []string) error {
	var toks, all [][]byte
	var tokStrs []string
	for _, n := range needles {
		if len(n) < 4 {
			continue
		}
		all = append(all, []byte(n))
		if strings.Trim(n, idBytes) == "" { // an id: subjects carry it as natsbus.Token(n)
			tok := natsbus.Token(n)
			toks = append(toks, []byte(tok))
			tokStrs = append(tokStrs, tok)
		}
	}
	if len(all) == 0 {
		return nil
	}
	names := js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	var errs []error
	for _, name := range streams {
		for _, tok := range tokStrs {
			errs = append(errs, purgeToken(ctx, js, name, tok))
		}
	}
	// Scrub streams may carry an id in its subject-token form only (an
	// original subject in a header or payload), so both forms are needles.
	for _, tok := range toks {
		if !slices.ContainsFunc(all, func(n []byte) bool { return bytes.Equal(n, tok) }) {
			all = append(all, tok)
		}
	}
	for _, name := range scrubStreams {
		errs = append(errs, scrubMessages(ctx, js, name, all))
	}
	return errors.Join(errs...)
}

// idBytes are the bytes of the ids a needle may be (svc.ValidID).
const idBytes = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// tokenPatterns are the subject filters that find a token at positions 1-5
// of a subject, as its last token or followed by more.
func tokenPatterns(tok string) []string {
	var out []string
	lead := ""
	for range 5 {
		out = append(out, lead+tok, lead+tok+".>")
		lead += "*."
	}
	return out
}

// purgeToken purges from stream every subject that has tok as one token.
func purgeToken(ctx context.Context, js jetstream.JetStream, stream, tok string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	var errs []error
	for _, pat := range tokenPatterns(tok) {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(pat))
		if err != nil {
			errs = append(errs, fmt.Errorf("stream %s info: %w", stream, err))
			continue
		}
		if len(info.State.Subjects) == 0 {
			continue
		}
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(pat)); err != nil {
			errs = append(errs, fmt.Errorf("purge %s: %w", stream, err))
		}
	}
	return errors.Join(errs...)
}

// purgeSubject purges one subject (or filter) of stream.
func purgeSubject(ctx context.Context, js jetstream.JetStream, stream, subject string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return fmt.Errorf("purge %s: %w", stream, err)
	}
	return nil
}

// scrubMessages reads stream through and securely deletes every message
// whose subject, headers or data contain a needle. A stream that does not
// exist is skipped.
func scrubMessages(ctx context.Context, js jetstream.JetStream, stream string, needles [][]byte) error {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s info: %w", stream, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("stream %s reader: %w", stream, err)
	}
	last := info.State.LastSeq
	var del []uint64
	for done := false; !done; {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return fmt.Errorf("stream %s read: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("stream %s read: %w", stream, err)
			}
			if matches(m, needles) {
				del = append(del, md.Sequence.Stream)
			}
			if md.Sequence.Stream >= last || md.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("stream %s read: %w", stream, err)
		}
		if n == 0 {
			done = true
		}
	}
	var errs []error
	for _, seq := range del {
		if err := s.SecureDeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			errs = append(errs, fmt.Errorf("stream %s delete %d: %w", stream, seq, err))
		}
	}
	return errors.Join(errs...)
}

func matches(m jetstream.Msg, needles [][]byte) bool {
	subj, data := []byte(m.Subject()), m.Data()
	var hdr []byte
	for k, vs := range m.Headers() {
		hdr = append(hdr, k...)
		for _, v := range vs {
			hdr = append(hdr, v...)
		}
	}
	for _, n := range needles {
		if bytes.Contains(subj, n) || bytes.Contains(data, n) || bytes.Contains(hdr, n) {
			return true
		}
	}
	return false
}
