#!/usr/bin/env python3
"""Commit latencies for scripts/bench-log.sh: one writer commits 500-byte records (create +
write + close) for SECONDS on DIR and prints p50 and p99 in microseconds."""
import os
import sys
import time
import uuid

payload = b'{"bench": true, "pad": "' + b"x" * 474 + b'"}'
directory, seconds = sys.argv[1], float(sys.argv[2])
lat = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.perf_counter()
    fd = os.open(os.path.join(directory, f"{uuid.uuid4()}.json"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, payload)
    os.close(fd)
    lat.append(time.perf_counter() - t)
lat.sort()
print(f"{lat[len(lat) // 2] * 1e6:.0f} {lat[int(len(lat) * 0.99)] * 1e6:.0f} {len(lat)}")
