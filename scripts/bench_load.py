#!/usr/bin/env python3
"""Load generator for scripts/bench.sh and bench-peers.sh: WRITERS processes commit 500-byte
records for SECONDS, each save durable when it returns.

mode "mount":  open(O_CREAT|O_TRUNC) + write + close of a <uuid>.json on a recordfs mount
               (durable when close returns, under --sync always);
mode "atomic": the classic atomic write done directly on a disk (or through bindfs): temp
               file, write, fsync, rename, fsync of the directory;
mode "sqlite": one INSERT OR REPLACE transaction per save in DIRECTORY/bench.db, WAL mode,
               synchronous=FULL;
mode "etcd":   one put of the record (key bench/<uuid>) per save through etcd's HTTP gateway
               (/v3/kv/put, a kept-alive connection per writer) at DIRECTORY, an etcd
               member's HOST:PORT: etcd's own cost, with no recordfs in the way.
KIND "create" saves new records; "update" rewrites one of 100 records of the writer's own.
Prints the total saves per second.

usage: bench_load.py MODE DIRECTORY WRITERS SECONDS [create|update]
"""
import base64
import http.client
import json
import os
import sqlite3
import sys
import time
import uuid
from multiprocessing import Process, Queue

PAYLOAD = ('{"bench": true, "pad": "' + "x" * 474 + '"}').encode()


def writer(mode, directory, seconds, kind, q):
    n = 0
    if mode == "sqlite":
        db = sqlite3.connect(os.path.join(directory, "bench.db"), timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, body BLOB)")
    if mode == "etcd":
        conn = http.client.HTTPConnection(directory, timeout=10)
        value = base64.b64encode(PAYLOAD).decode()
    else:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    mine = [str(uuid.uuid4()) for _ in range(100)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rid = mine[n % len(mine)] if kind == "update" else str(uuid.uuid4())
        name = os.path.join(directory, f"{rid}.json")
        if mode == "etcd":
            key = base64.b64encode(f"bench/{rid}".encode()).decode()
            conn.request("POST", "/v3/kv/put", json.dumps({"key": key, "value": value}))
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"etcd answered {answer.status}")
        elif mode == "sqlite":
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO records VALUES (?, ?)", (rid, PAYLOAD))
            db.execute("COMMIT")
        elif mode == "mount":
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
    kind = sys.argv[5] if len(sys.argv) > 5 else "create"
    if mode == "sqlite":
        db = sqlite3.connect(os.path.join(directory, "bench.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, body BLOB)")
        db.close()
    q = Queue()
    procs = [
        Process(target=writer, args=(mode, directory, seconds, kind, q)) for _ in range(writers)
    ]
    start = time.monotonic()
    for p in procs:
        p.start()
    total = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    print(f"{total / (time.monotonic() - start):.0f}")


if __name__ == "__main__":
    main()
