package spool

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
)

const benchRecord = 400 // bytes, a typical telemetry frame

// drain runs a consumer that reads and commits everything until ctx is done,
// so that retention keeps the benchmark's disk usage small.
func drain(ctx context.Context, b *testing.B, s *Spool) (stop func()) {
	c, err := s.Consumer("sink")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]Record, 0, 1024)
		for {
			var err error
			buf, err = c.Read(ctx, buf, 1024, 1<<20)
			if err != nil {
				if !errors.Is(err, context.Canceled) && !errors.Is(err, ErrClosed) {
					b.Error(err)
				}
				return
			}
			if err := c.Commit(buf[len(buf)-1].Next); err != nil && !errors.Is(err, ErrClosed) {
				b.Error(err)
				return
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func benchOpen(b *testing.B, noSync bool) *Spool {
	s, err := Open(Options{
		Dir:          b.TempDir(),
		Consumers:    []string{"sink"},
		SegmentBytes: 16 << 20,
		NoSync:       noSync,
		Logger:       quiet,
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func reportRates(b *testing.B, s *Spool) {
	st := s.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(st.Syncs)/float64(b.N), "fsyncs/op")
}

// benchAppendParallel runs Append from 16*GOMAXPROCS goroutines, like many
// MQTT clients' read loops.
func benchAppendParallel(b *testing.B, noSync bool) {
	s := benchOpen(b, noSync)
	stop := drain(context.Background(), b, s)
	rec := make([]byte, benchRecord)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	base := s.Stats().Syncs
	cpu0 := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Append(rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cpu := processCPU() - cpu0
	st := s.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(st.Syncs-base)/float64(b.N), "fsyncs/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	stop()
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendParallel measures durable appends (real fdatasync on the
// benchmark's temporary directory) with group commit.
func BenchmarkAppendParallel(b *testing.B) { benchAppendParallel(b, false) }

// BenchmarkAppendNoSync is BenchmarkAppendParallel without fdatasync: the
// spool's own overhead.
func BenchmarkAppendNoSync(b *testing.B) { benchAppendParallel(b, true) }

// BenchmarkAppendSerial is one writer waiting for every fsync: what the
// gateway would get without group commit.
func BenchmarkAppendSerial(b *testing.B) {
	s := benchOpen(b, false)
	stop := drain(context.Background(), b, s)
	rec := make([]byte, benchRecord)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(rec); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRates(b, s)
	stop()
	s.Close()
}

// BenchmarkGroupCommit17 is one group commit of 17 records per op (the
// group size of the paced 5 000 frames/s gateway benchmark): 17 AppendAsync
// then Sync, real fdatasync. ns/op is dominated by the disk's latency;
// cpu-ns/op is the process CPU (user + system, fdatasync's kernel work
// included) per group commit, the figure preallocation is about.
func BenchmarkGroupCommit17(b *testing.B) {
	const group = 17
	s := benchOpen(b, false) // no consumer drains: only the appends' CPU is measured
	rec := make([]byte, benchRecord)
	b.SetBytes(group * benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	base := s.Stats().Syncs
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		for j := 0; j < group; j++ {
			if _, err := s.AppendAsync(rec); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := processCPU() - cpu0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*group), "cpu-ns/record")
	b.ReportMetric(float64(s.Stats().Syncs-base)/float64(b.N), "fsyncs/op")
	s.Close()
}

// BenchmarkAppendAsync is one writer that does not wait (QoS 0), no fsync.
func BenchmarkAppendAsync(b *testing.B) {
	s := benchOpen(b, true)
	stop := drain(context.Background(), b, s)
	rec := make([]byte, benchRecord)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for {
			_, err := s.AppendAsync(rec)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrFull) {
				b.Fatal(err)
			}
			// The consumer is behind: let it catch up.
			if err := s.Sync(); err != nil {
				b.Fatal(err)
			}
			runtime.Gosched()
		}
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	reportRates(b, s)
	b.ReportMetric(float64(s.Stats().Full)/float64(b.N), "full/op")
	stop()
	s.Close()
}

// BenchmarkRead reads 400-byte records in batches of 256 (one op is one
// record), rewinding over a fixed spool of 50,000 records.
func BenchmarkRead(b *testing.B) {
	const records = 50_000
	s := benchOpen(b, true)
	defer s.Close()
	rec := make([]byte, benchRecord)
	for i := 0; i < records; i++ {
		if _, err := s.AppendAsync(rec); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	c, err := s.Consumer("sink")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	buf := make([]Record, 0, 256)
	end := s.Stats().Durable
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		buf, err = c.Read(ctx, buf, min(256, b.N-n), 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		n += len(buf)
		if buf[len(buf)-1].Next == end {
			c.Rewind()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkOpen measures recovery: Open verifies every retained record (here
// 32 MiB of 400-byte records, from the page cache).
func BenchmarkOpen(b *testing.B) {
	o := Options{Dir: b.TempDir(), Consumers: []string{"sink"}, NoSync: true, Logger: quiet}
	s, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	rec := make([]byte, benchRecord)
	var size int64
	for size < 32<<20 {
		if _, err := s.AppendAsync(rec); err != nil {
			b.Fatal(err)
		}
		size += frameHeaderSize + benchRecord
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := Open(o)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
