#!/usr/bin/env python3
"""Many small files without durability, for scripts/bench-files.sh: in DIRECTORY (a new,
empty one) makes N records of 500 B one after another (open(O_CREAT), write, close), then
opens, reads and closes each, stats each, and lists the directory. Prints the four times in
seconds: create read stat list.

usage: bench_files.py DIRECTORY N
"""
import os
import sys
import time
import uuid

PAYLOAD = ('{"bench": true, "pad": "' + "x" * 474 + '"}').encode()


def main():
    d, n = sys.argv[1], int(sys.argv[2])
    names = [os.path.join(d, "%s.json" % uuid.UUID(int=(i << 64) | 0x4000_8000_0000_0000))
             for i in range(n)]
    t = [time.monotonic()]
    for p in names:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, PAYLOAD)
        os.close(fd)
    t.append(time.monotonic())
    for p in names:
        fd = os.open(p, os.O_RDONLY)
        if os.read(fd, 4096) != PAYLOAD:
            sys.exit("read back something else from " + p)
        os.close(fd)
    t.append(time.monotonic())
    for p in names:
        os.stat(p)
    t.append(time.monotonic())
    if len(os.listdir(d)) != n:
        sys.exit("listed another number of names")
    t.append(time.monotonic())
    print(" ".join("%.4f" % (b - a) for a, b in zip(t, t[1:])))


if __name__ == "__main__":
    main()
