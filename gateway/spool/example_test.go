package spool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/telegate/telegate/gateway/spool"
)

func Example() {
	dir, _ := os.MkdirTemp("", "spool-example")
	defer os.RemoveAll(dir)

	s, err := spool.Open(spool.Options{
		Dir:       dir,
		Consumers: []string{"influx", "nats"},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	// Producer side (mochi OnPublish): PUBACK only after Append returns nil.
	for _, frame := range []string{"frame-1", "frame-2", "frame-3"} {
		switch _, err := s.Append([]byte(frame)); {
		case errors.Is(err, spool.ErrFull):
			// MQTT 5: reason code 0x97 "quota exceeded"; no PUBACK success.
		case err != nil:
			panic(err)
		}
	}

	// Consumer side (a sink): read a batch, write it downstream, commit.
	c, _ := s.Consumer("influx")
	var batch []spool.Record
	batch, err = c.Read(context.Background(), batch, 100, 1<<20)
	if err != nil {
		panic(err)
	}
	for _, r := range batch {
		fmt.Println(string(r.Data)) // r.Data is valid until the next Read
	}
	// After a successful downstream write:
	if err := c.Commit(batch[len(batch)-1].Next); err != nil {
		panic(err)
	}
	// After a failed one, c.Rewind() and read the same records again.
	fmt.Println("influx lag:", s.Stats().Consumers[0].LagRecords, "nats lag:", s.Stats().Consumers[1].LagRecords)
	// Output:
	// frame-1
	// frame-2
	// frame-3
	// influx lag: 0 nats lag: 3
}
