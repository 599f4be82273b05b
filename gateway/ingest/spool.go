package ingest

import (
	"errors"
	"fmt"

	"github.com/telegate/telegate/gateway/spool"
)

// FromSpool adapts the gateway's durable spool to the hook's Spool
// interface, mapping spool.ErrFull and spool.ErrClosed onto ErrSpoolFull and
// ErrSpoolClosed.
func FromSpool(s *spool.Spool) Spool { return spoolAdapter{s} }

type spoolAdapter struct{ s *spool.Spool }

func (sa spoolAdapter) Append(rec []byte) error {
	_, err := sa.s.Append(rec)
	return mapSpoolErr(err)
}

func (sa spoolAdapter) AppendAsync(rec []byte) error {
	_, err := sa.s.AppendAsync(rec)
	return mapSpoolErr(err)
}

func mapSpoolErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, spool.ErrFull):
		return fmt.Errorf("%w: %w", ErrSpoolFull, err)
	case errors.Is(err, spool.ErrClosed):
		return fmt.Errorf("%w: %w", ErrSpoolClosed, err)
	}
	return err
}
