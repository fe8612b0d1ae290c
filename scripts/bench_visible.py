#!/usr/bin/env python3
"""Change to visible, for scripts/bench-etcd.sh: saves one record N times on the mount at
WRITER (each durable when close returns) and, after each, reads it on the mount at FOLLOWER
every 0.5 ms until that version shows. Prints the median and p99 of the time from close
returning to the version showing, in milliseconds, and N.

usage: bench_visible.py WRITER FOLLOWER N
"""
import os
import sys
import time

writer, follower, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
name = "6f1c2b1e-0000-4000-8000-00000000beef.json"
lags = []
for i in range(n):
    body = ('{"v": %d}' % i).encode()
    fd = os.open(os.path.join(writer, name), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, body)
    os.close(fd)
    saved = time.perf_counter()
    deadline = saved + 10
    while True:
        try:
            with open(os.path.join(follower, name), "rb") as f:
                if f.read() == body:
                    break
        except FileNotFoundError:
            pass
        if time.perf_counter() > deadline:
            raise SystemExit(f"version {i} not shown within 10 s")
        time.sleep(0.0005)
    lags.append(time.perf_counter() - saved)
lags.sort()
print(f"{lags[len(lags) // 2] * 1e3:.2f} {lags[int(len(lags) * 0.99)] * 1e3:.2f} {n}")
