#!/usr/bin/env python3
"""Per-stage CPU of the gateway from a Linux perf profile, kernel and user apart.

pprof (benchcompare.Stages) charges a system call's kernel time to the Go
stack that made it, so it cannot say how much of a stage is the kernel's.
This reads `perf script` output and splits each stage into kernel and user
time, in µs per frame.

    perf record -a -g -o /tmp/p.data -- sleep 8        # while the benchmark runs
    perf script -i /tmp/p.data --comm gateway -F comm,ip,sym > /tmp/p.txt
    python3 internal/benchcompare/perf/stages.py /tmp/p.txt <frames/s> 8 4000

Arguments: the script output, the run's frames/s, the seconds recorded and
perf's sampling frequency (4000 Hz is perf's default for cpu-clock). Needs
root (or perf_event_paranoid ≤ 1) and frame pointers (Go has them).
Stages are matched on the stack from the root, first rule wins; see docs/
benchmarks.md, "Fourth optimisation pass".
"""
import collections
import sys

RULES = [
    ('GC', ['gcBgMarkWorker', 'runtime.gcDrain', 'runtime.bgsweep', 'runtime.bgscavenge',
            'runtime.markroot', 'runtime.gcAssist', 'runtime.mallocgc']),
    ('influx sink (encode, HTTP, cursor)', ['influxsink', 'sink.(*Runner)']),
    ('event sink', ['eventsink']),
    ('PUBACK write (notifier)', ['notifyLoop', 'ReleaseHeld']),
    ('spool syncer (fdatasync)', ['spool.(*Spool).sync', 'Fdatasync', 'syncLoop']),
    ('socket read wait (read, EAGAIN, park, wake)', ['ReadFixedHeader']),
    ('packet handling (mochi, hooks, decode, append)', ['readAndHandle', 'EstablishConnection']),
    ('scheduler, idle, sysmon', ['runtime.schedule', 'runtime.findRunnable', 'runtime.mstart',
                                 'runtime.park_m', 'runtime.netpoll', 'runtime.goexit0',
                                 'runtime.sysmon', 'runtime.mcall']),
]


def read_stacks(path, comm):
    stacks, cur = [], None
    for line in open(path, errors='replace'):
        line = line.rstrip('\n')
        if not line.strip():
            continue
        if not line.startswith(('\t', ' ')):
            if cur is not None:
                stacks.append(cur)
            cur = [] if line.split()[0] == comm else None
            continue
        if cur is not None:
            parts = line.strip().split(None, 1)
            cur.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    if cur is not None:
        stacks.append(cur)
    return stacks


def main():
    path, fps, secs, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    stacks = read_stacks(path, 'gateway')
    per = 1e6 / (hz * secs * fps)  # µs per frame of one sample
    total, kern = collections.Counter(), collections.Counter()
    for s in stacks:
        names = [f for _, f in s]
        stage = 'other'
        for name, keys in RULES:
            if any(k in f for f in names for k in keys):
                stage = name
                break
        total[stage] += 1
        if s and s[0][0].startswith('ffffffff'):
            kern[stage] += 1
    print(f"{'stage':48s} {'total':>7s} {'kernel':>7s} {'user':>7s}   µs/frame")
    for stage, n in total.most_common():
        print(f"{stage:48s} {n*per:7.1f} {kern[stage]*per:7.1f} {(n-kern[stage])*per:7.1f}")
    print(f"{'all':48s} {len(stacks)*per:7.1f} {sum(kern.values())*per:7.1f}")


if __name__ == '__main__':
    main()
