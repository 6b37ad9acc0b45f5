#!/usr/bin/env python3
"""The naive STABLE-only recipe between two NFS clients (NFS lane, in the VM).

Usage: naive.py WRITER_ROOT READER_ROOT RUNS PAUSE_S [HOLD_S]

WRITER_ROOT and READER_ROOT are the same export directory seen through node
a's and node b's mounts. Each run k (all runs at once, one thread pair each):

writer (node a), plain writes, no fsync:
  step_k/weights/model.bin  first 1 MiB, closed
  ... PAUSE_S seconds in which it writes other state files into step_k/
      (optimizer-<i>.bin, one every 4 s), as a trainer that serializes a
      checkpoint piece by piece does ...
  step_k/weights/model.bin  the remaining 1 MiB appended and flushed to the
      kernel, but the file left open (a checkpoint writer that closes its
      files later, or on another thread)
  step_k/config.json, then STABLE (touched)
  ... HOLD_S seconds (default 40), then model.bin is closed. Until then its
      second half sits in node a's page cache: an NFS client writes data
      back on close or fsync, or once it has been dirty for 30 s.

reader (node b), started once model.bin's first part is on the server:
  polls every 0.2 s: does step_k/STABLE exist (stat)? If not, stat
  weights/model.bin to show progress, which keeps that file's attributes in
  b's attribute cache. Once STABLE exists it accepts the step and checks
  what it sees: every file's size by stat, and its content by reading it.

A run fails (the recipe is caught) when the accepted step shows a file
missing or short by stat, or different when read. Prints one line per run and
a last line "naive: runs=N failures=F stat_bad=S read_bad=R".
"""

import os
import sys
import threading
import time

HALF = 1 << 20


def writer(root, k, data, cfg, pause, hold, first_done, out):
    d = f"{root}/step_{k}"
    os.makedirs(f"{d}/weights")
    with open(f"{d}/weights/model.bin", "wb") as f:
        f.write(data[:HALF])
    first_done.set()
    end = time.monotonic() + pause
    i = 0
    while time.monotonic() < end:
        with open(f"{d}/optimizer-{i}.bin", "wb") as f:
            f.write(os.urandom(4096))
        i += 1
        time.sleep(min(4.0, max(0.0, end - time.monotonic())))
    model = open(f"{d}/weights/model.bin", "ab")
    model.write(data[HALF:])
    model.flush()
    with open(f"{d}/config.json", "w") as f:
        f.write(cfg)
    open(f"{d}/STABLE", "w").close()
    out["stable_at"] = time.monotonic()
    time.sleep(hold)
    model.close()


def reader(root, k, data, cfg, first_done, out, limit):
    d = f"{root}/step_{k}"
    first_done.wait()
    t0 = time.monotonic()
    progress = []
    while not os.path.exists(f"{d}/STABLE"):
        try:
            size = os.stat(f"{d}/weights/model.bin").st_size
            if not progress or progress[-1] != size:
                progress.append(size)
        except OSError:
            pass
        if time.monotonic() - t0 > limit:
            out["seen"] = False
            return
        time.sleep(0.2)
    out["seen"] = True
    out["seen_at"] = time.monotonic()
    expect = {"weights/model.bin": data, "config.json": cfg.encode()}
    stat_bad, read_bad = [], []
    for name, want in expect.items():
        try:
            size = os.stat(f"{d}/{name}").st_size
        except OSError:
            size = None
        if size != len(want):
            stat_bad.append(f"{name}={size}")
        try:
            with open(f"{d}/{name}", "rb") as f:
                got = f.read()
        except OSError:
            got = None
        if got != want:
            read_bad.append(f"{name}={'missing' if got is None else len(got)}")
    out["stat_bad"] = stat_bad
    out["read_bad"] = read_bad
    out["progress"] = progress


def main():
    wroot, rroot, runs, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    hold = float(sys.argv[5]) if len(sys.argv) > 5 else 40.0
    os.makedirs(wroot, exist_ok=True)
    os.listdir(rroot)
    data = os.urandom(2 * HALF)
    results = []
    threads = []
    for k in range(1, runs + 1):
        cfg = '{"step":%d,"r":8}\n' % k
        ev = threading.Event()
        out = {"k": k}
        results.append(out)
        for fn, args in ((writer, (wroot, k, data, cfg, pause, hold, ev, out)),
                         (reader, (rroot, k, data, cfg, ev, out, pause + 120))):
            t = threading.Thread(target=fn, args=args)
            t.start()
            threads.append(t)
    for t in threads:
        t.join()
    failures = stat_total = read_total = 0
    for r in results:
        if not r.get("seen"):
            print(f"naive: step={r['k']} STABLE never seen", flush=True)
            continue
        lag = (r["seen_at"] - r["stable_at"]) * 1000
        bad = bool(r["stat_bad"] or r["read_bad"])
        failures += bad
        stat_total += bool(r["stat_bad"])
        read_total += bool(r["read_bad"])
        print(f"naive: step={r['k']} accepted {lag:.0f} ms after STABLE; "
              f"model.bin sizes seen while polling {r['progress']}; "
              f"short by stat: {r['stat_bad'] or 'none'}; wrong when read: {r['read_bad'] or 'none'}",
              flush=True)
    print(f"naive: runs={runs} failures={failures} stat_bad={stat_total} read_bad={read_total}", flush=True)


if __name__ == "__main__":
    main()
