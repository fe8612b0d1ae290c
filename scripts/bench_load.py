#!/usr/bin/env python3
"""Load generator for scripts/bench.sh: WRITERS processes commit 500-byte records for SECONDS.

mode "mount":  create + write + close of a new <uuid>.json on a recordfs mount (the commit is
               durable when close returns, under --sync always);
mode "atomic": the classic atomic write done directly on a disk: temp file, write, fsync,
               rename, fsync of the directory.
Prints the total commits per second.
"""
import os
import sys
import time
import uuid
from multiprocessing import Process, Queue

PAYLOAD = ('{"bench": true, "pad": "' + "x" * 474 + '"}').encode()


def writer(mode, directory, seconds, q):
    n = 0
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        name = os.path.join(directory, f"{uuid.uuid4()}.json")
        if mode == "mount":
            fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            os.write(fd, PAYLOAD)
            os.close(fd)
        else:
            tmp = name + ".tmp"
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            os.write(fd, PAYLOAD)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, name)
            os.fsync(dfd)
        n += 1
    q.put(n)


def main():
    mode, directory, writers, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    q = Queue()
    procs = [Process(target=writer, args=(mode, directory, seconds, q)) for _ in range(writers)]
    start = time.monotonic()
    for p in procs:
        p.start()
    total = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    print(f"{total / (time.monotonic() - start):.0f}")


if __name__ == "__main__":
    main()
