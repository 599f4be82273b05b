package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/telegate/telegate/gateway/spool"
)

// FromSpool adapts the gateway's durable spool to the hook's Spool
// interface, mapping spool.ErrFull, spool.ErrClosed and spool.ErrTimeout
// onto ErrSpoolFull, ErrSpoolClosed and ErrSpoolTimeout. ackTimeout bounds
// how long a durable append waits for its group commit (0: no bound).
func FromSpool(s *spool.Spool, ackTimeout time.Duration) Spool { return spoolAdapter{s, ackTimeout} }

type spoolAdapter struct {
	s       *spool.Spool
	timeout time.Duration
}

func (sa spoolAdapter) Append(rec []byte) error {
	_, err := sa.s.AppendTimeout(rec, sa.timeout)
	return mapSpoolErr(err)
}

func (sa spoolAdapter) AppendAsync(rec []byte) error {
	_, err := sa.s.AppendAsync(rec)
	return mapSpoolErr(err)
}

// AppendTicket implements Pipeliner.
func (sa spoolAdapter) AppendTicket(rec []byte) (uint64, error) {
	t, err := sa.s.AppendTicket(rec)
	return uint64(t), mapSpoolErr(err)
}

// WaitTicket implements Pipeliner: the wait ends at appended + the ack
// timeout.
func (sa spoolAdapter) WaitTicket(t uint64, appended time.Time) error {
	var deadline time.Time
	if sa.timeout > 0 {
		deadline = appended.Add(sa.timeout)
	}
	return mapSpoolErr(sa.s.WaitTicket(spool.Ticket(t), deadline))
}

// NotifyTicket implements AsyncPipeliner.
func (sa spoolAdapter) NotifyTicket(t uint64, appended time.Time, n spool.Notifier) bool {
	var deadline time.Time
	if sa.timeout > 0 {
		deadline = appended.Add(sa.timeout)
	}
	return sa.s.NotifyTicket(spool.Ticket(t), deadline, n)
}

func mapSpoolErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, spool.ErrFull):
		return fmt.Errorf("%w: %w", ErrSpoolFull, err)
	case errors.Is(err, spool.ErrClosed):
		return fmt.Errorf("%w: %w", ErrSpoolClosed, err)
	case errors.Is(err, spool.ErrTimeout):
		return fmt.Errorf("%w: %w", ErrSpoolTimeout, err)
	}
	return err
}
