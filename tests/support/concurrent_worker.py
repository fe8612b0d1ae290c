"""One process of tests/concurrency.rs: a writer, a reader or a holder, for DURATION seconds.

writer W: saves whole versions of the shared record and of its own, alternating in-place saves
  (O_TRUNC, write, close) with temp file + rename, and prints how many it made.
reader R: opens and reads the shared record and every writer's own record over and over; each
  read must be one whole version (it parses, and its sum matches), and per writer the versions
  it sees never go back.
holder H: opens a file, renames it, unlinks it, and keeps reading and writing through the open
  descriptor, as programs do with a file another program replaces.
Any violation exits 1 with a message.
"""
import json, os, sys, time

role, ident, mnt, shared, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
end = time.time() + duration


def own(w):
    return os.path.join(mnt, "%08x-0000-4000-8000-00000000%04x.json" % (0x77, w))


def version(w, n):
    return json.dumps({"writer": w, "seq": n, "pad": "x" * (n % 40 * 97), "sum": w * 1_000_000 + n}).encode()


def fail(msg):
    print(f"{role}{ident}: {msg}", flush=True)
    sys.exit(1)


if role == "writer":
    n = 0
    while time.time() < end:
        n += 1
        for path in (shared, own(ident)):
            data = version(ident, n)
            if n % 2:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, data)
                os.close(fd)
            else:
                tmp = path + ".%d.tmp" % ident
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, data)
                os.close(fd)
                os.replace(tmp, path)
    print(json.dumps({"saves": 2 * n}), flush=True)
elif role == "reader":
    writers = int(sys.argv[6])
    last = {}
    reads = 0
    while time.time() < end:
        for path in [shared] + [own(w) for w in range(writers)]:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            chunks = []
            while True:
                b = os.read(fd, 4096)
                if not b:
                    break
                chunks.append(b)
            os.close(fd)
            data = b"".join(chunks)
            if not data:
                continue  # created, not yet written
            try:
                v = json.loads(data)
            except ValueError:
                fail(f"read of {path} is not one version: {data[:80]!r}... ({len(data)} bytes)")
            if v["sum"] != v["writer"] * 1_000_000 + v["seq"] or v["pad"] != "x" * (v["seq"] % 40 * 97):
                fail(f"mixed version in {path}: {data[:80]!r}")
            key = (path, v["writer"])
            if v["seq"] < last.get(key, 0):
                fail(f"{path}: writer {v['writer']} went back from {last[key]} to {v['seq']}")
            last[key] = v["seq"]
            reads += 1
    print(json.dumps({"reads": reads}), flush=True)
elif role == "holder":
    rounds = 0
    a = os.path.join(mnt, "held-%d" % ident)
    b = os.path.join(mnt, "held-%d.moved" % ident)
    while time.time() < end:
        rounds += 1
        body = b"round %d\n" % rounds
        with open(a, "wb") as f:
            f.write(body)
        fd = os.open(a, os.O_RDWR)
        os.rename(a, b)
        if os.pread(fd, 100, 0) != body:
            fail("read after rename")
        os.pwrite(fd, b"R", 0)
        os.fsync(fd)
        with open(b, "rb") as f:
            if f.read() != b"R" + body[1:]:
                fail("a commit through a descriptor did not follow the rename")
        os.unlink(b)
        if os.pread(fd, 100, 0) != b"R" + body[1:]:
            fail("read after unlink")
        if os.fstat(fd).st_nlink != 0:
            fail("nlink of an unlinked open file")
        os.pwrite(fd, b"gone", 0)
        os.close(fd)
        if os.path.exists(a) or os.path.exists(b):
            fail("an unlinked file came back at close")
    print(json.dumps({"rounds": rounds}), flush=True)
