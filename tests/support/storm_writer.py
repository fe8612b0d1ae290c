#!/usr/bin/env python3
"""A writer for tests/storm.rs: commits records (O_TRUNC + several writes + close) until the
mount dies, printing TRY before each commit and ACK after close returned 0.

usage: storm_writer.py DIR WRITER_ID RECORDS SEED
"""
import os
import random
import sys


def version(w, n):
    pad = (w * 7919 + n * 104729) % 5000
    return '{"w": %d, "n": %d, "pad": "%s"}' % (w, n, "x" * pad)


def main():
    d, wid, nrec, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rnd = random.Random(seed)
    n = seed * 1_000_000  # unique across rounds: each round has its own seed
    while True:
        name = "%04x%04x-0000-4000-8000-000000000000.json" % (wid, rnd.randrange(nrec))
        n += 1
        data = version(wid, n).encode()
        print("TRY", name, n, flush=True)
        try:
            fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for i in range(0, len(data), 1500):
                os.write(fd, data[i:i + 1500])
            os.close(fd)
        except OSError as e:
            print("ERR", e.errno, flush=True)
            return
        print("ACK", name, n, flush=True)


if __name__ == "__main__":
    main()
