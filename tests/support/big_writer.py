#!/usr/bin/env python3
"""A writer of one large plain file for tests/storm.rs, big.bin, whose changes are patches:
change V (from FROM + 1 on) appends a chunk (O_APPEND), or writes a new header in place
(V % 4 == 0: pwrite at 0), or rewrites the whole file from the start (V % 8 == 4: O_TRUNC),
until the mount dies, printing TRY V before each change and ACK V after close returned 0.
The file after change V is content(V), whatever the way it was made.

usage: big_writer.py DIR FROM        changes big.bin in DIR, starting after change FROM
       big_writer.py --content V     prints content(V): what the file holds after change V
"""
import os
import sys

BODY = b"".join(b"line %06d of the first version\n" % i for i in range(3000))  # 96 KiB


def header(v):
    return (b"header of change %08d" % v).ljust(64, b".")


def chunk(v):
    return b"%08d:" % v + b"y" * ((v * 7919) % 3000) + b"\n"


def content(v):
    h = v - v % 4
    return header(h) + BODY + b"".join(chunk(i) for i in range(1, v + 1) if i % 4 != 0)


def main():
    if sys.argv[1] == "--content":
        sys.stdout.buffer.write(content(int(sys.argv[2])))
        return
    path = os.path.join(sys.argv[1], "big.bin")
    v = int(sys.argv[2])
    while True:
        v += 1
        print("TRY", v, flush=True)
        try:
            if v % 8 == 4:
                fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
                data = content(v)
                for i in range(0, len(data), 128 * 1024):
                    os.write(fd, data[i:i + 128 * 1024])
            elif v % 4 == 0:
                fd = os.open(path, os.O_RDWR)
                os.pwrite(fd, header(v), 0)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                os.write(fd, chunk(v))
            os.close(fd)
        except OSError as e:
            print("ERR", e.errno, flush=True)
            return
        print("ACK", v, flush=True)


if __name__ == "__main__":
    main()
