#!/usr/bin/env python3
"""A writer for tests/storm.rs: commits records (O_TRUNC + several writes + close) until the
mount dies, printing TRY before each commit and ACK after close returned 0.

With --dirs, its records live in a folder of their own, c<WRITER_ID>/live, which it also moves
to c<WRITER_ID>/shelf/live and back (MOVE before the rename, MOVED after it returned 0), and
it makes and removes scratch directories (MKDIR/MADE, RMDIR/REMOVED): a directory moved
between two directories, made and removed while the daemon is killed. It also gives records it
has saved a second name, c<WRITER_ID>/links/<name> (LINK/LINKED), a hard link that later saves
of the record must show.

usage: storm_writer.py DIR WRITER_ID RECORDS SEED [--dirs]
"""
import os
import random
import sys


def version(w, n):
    pad = (w * 7919 + n * 104729) % 5000
    return '{"w": %d, "n": %d, "pad": "%s"}' % (w, n, "x" * pad)


# Where a writer's folder is, relative to the mount, in --dirs mode.
PLACES = ["live", "shelf/live"]


def step(label, f, *args):
    """Runs one change, printing LABEL before it and its past tense after it returned."""
    before, after = label
    print(before, *args, flush=True)
    f()
    print(after, *args, flush=True)


def main():
    d, wid, nrec, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    dirs = "--dirs" in sys.argv[5:]
    rnd = random.Random(seed)
    n = seed * 1_000_000  # unique across rounds: each round has its own seed
    home = os.path.join(d, "c%d" % wid)
    place = next((p for p in PLACES if os.path.isdir(os.path.join(home, p))), None)
    saved = []
    while True:
        name = "%04x%04x-0000-4000-8000-000000000000.json" % (wid, rnd.randrange(nrec))
        n += 1
        try:
            if dirs and rnd.random() < 0.15:
                to = PLACES[1 - PLACES.index(place)]
                step(("MOVE", "MOVED"), lambda: os.rename(os.path.join(home, place),
                                                          os.path.join(home, to)), wid, to)
                place = to
                continue
            if dirs and rnd.random() < 0.1:
                scratch = os.path.join(home, "s%d" % n)
                step(("MKDIR", "MADE"), lambda: os.mkdir(scratch), wid, "s%d" % n)
                if rnd.random() < 0.7:
                    step(("RMDIR", "REMOVED"), lambda: os.rmdir(scratch), wid, "s%d" % n)
                continue
            if dirs and saved and rnd.random() < 0.1:
                rec = rnd.choice(saved)
                link = os.path.join(home, "links", rec)
                if not os.path.exists(link):
                    step(("LINK", "LINKED"), lambda: os.link(os.path.join(home, place, rec), link),
                         wid, rec)
                continue
        except OSError as e:
            print("ERR", e.errno, flush=True)
            return
        data = version(wid, n).encode()
        print("TRY", name, n, flush=True)
        try:
            where = os.path.join(home, place) if dirs else d
            fd = os.open(os.path.join(where, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for i in range(0, len(data), 1500):
                os.write(fd, data[i:i + 1500])
            os.close(fd)
        except OSError as e:
            print("ERR", e.errno, flush=True)
            return
        print("ACK", name, n, flush=True)
        saved.append(name)


if __name__ == "__main__":
    main()
