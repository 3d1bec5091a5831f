"""Soak: many posts through one daemon, with a long queue of held posts, and nothing may grow but the store.

    .venv/bin/python benchmarks/soak.py [--posts 100000] [--held 10000] [--chunk 5000] [--clients 8]

`listmod serve` with its defaults and one list of --members members; posts go in over LMTP from
--clients connections (the client of benchmarks/peers.py), members' posts fanned out to a counting
sink, and --held of them from non-members (held, never decided: the queue only grows). After each
chunk the run waits until the sink has every copy (the queues drain), then reports:

- the resident memory of every listmod process (RSS and PSS, summed; start, peak, end);
- intake posts/s of the chunk and its p50/p99 transaction time;
- decide(): the median time of build_context + decide for a sample post against the store as it is
  now (the pure core with its store reads), on a read-only connection;
- the digest build time: build_digest for the list as it is now (the held queue at its current length),
  on a read-only connection (nothing recorded).

Loopback only; bounded by --posts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from peers import LIST, Sink, children, free_port, lmtp, post, pss_mib, rss_mib, send_all, start_listmod, wait_port  # noqa: E402


def probe(home: Path, config_path: Path) -> tuple[float, float]:
    """(decide ms, digest build ms) against the store as it is, read-only."""
    from listmod.config import read_config
    from listmod.message import parse
    from listmod.moderation.digest import build_digest
    from listmod.rules import load_rules
    from listmod.rules.context import build_context
    from listmod.rules.engine import decide
    from listmod.store import load_or_create_secret

    cwd = os.getcwd()
    os.chdir(home)
    try:
        config = read_config(config_path)
        rules = load_rules(config.server.rules_dir)
        secret = load_or_create_secret(config.server.state_dir)
        conn = sqlite3.connect(f"file:{config.database_path}?mode=ro", uri=True, timeout=30)
    finally:
        os.chdir(cwd)
    mlist = config.lists[0]
    times = []
    for i in range(50):
        raw = post(i, "probe", "poster1@example.org", LIST)
        p = parse(raw, "poster1@example.org")
        t = time.perf_counter()
        ctx = build_context(conn, p, mlist, config, rules, time.time())
        decide(p, ctx, rules)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    conn.execute("BEGIN")
    build_digest(conn, secret, mlist, config.server.hostname, time.time())
    conn.execute("ROLLBACK")
    digest_ms = (time.perf_counter() - t) * 1000
    conn.close()
    return statistics.median(times) * 1000, digest_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--held", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--members", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="listmod-soak-"))
    sink = Sink(work)
    home = work / "listmod"
    lmtp_port = free_port()
    posters = [f"poster{i}@example.org" for i in range(8)]
    proc = start_listmod(home, sink, lmtp_port, args.members, posters)
    config = home / "listmod.toml"
    peak_rss = peak_pss = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_rss, peak_pss
        while not stop.wait(0.5):
            pids = children(proc.pid)
            peak_rss = max(peak_rss, rss_mib(pids))
            peak_pss = max(peak_pss, pss_mib(pids))

    try:
        wait_port(lmtp_port, proc)
        time.sleep(1)
        start_rss, start_pss = rss_mib(children(proc.pid)), pss_mib(children(proc.pid))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        print(f"{'posts':>8}{'held':>7}{'intake/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'RSS MiB':>9}{'PSS MiB':>9}"
              f"{'decide ms':>11}{'digest ms':>11}", flush=True)
        sent = held = delivered_posts = 0
        every = max(1, args.posts // max(args.held, 1))   # one held post in `every`
        rows = []
        while sent < args.posts:
            n = min(args.chunk, args.posts - sent)
            batch = []
            for i in range(sent, sent + n):
                if held < args.held and i % every == every - 1:
                    sender = f"stranger{i % 50}@example.net"
                    held += 1
                else:
                    sender = posters[i % len(posters)]
                    delivered_posts += 1
                batch.append((sender, [LIST], post(i, "soak", sender, LIST)))
            times: list[float] = []
            start, last, failures = send_all(batch, args.clients, lmtp(lmtp_port), times)
            if failures:
                raise SystemExit(f"{failures} posts were refused; see {home / 'daemon.log'}")
            elapsed = last - start
            sent += n
            if sink.wait_for(delivered_posts, delivered_posts * args.members, 1800) is None:
                raise SystemExit(f"the queues did not drain: sink {sink.counts()}, expected {delivered_posts}")
            pids = children(proc.pid)
            decide_ms, digest_ms = probe(home, config)
            times.sort()
            row = (sent, held, n / elapsed, times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000,
                   rss_mib(pids), pss_mib(pids), decide_ms, digest_ms)
            rows.append(row)
            print(f"{row[0]:>8}{row[1]:>7}{row[2]:>10.0f}{row[3]:>8.1f}{row[4]:>8.1f}{row[5]:>9.1f}{row[6]:>9.1f}"
                  f"{row[7]:>11.2f}{row[8]:>11.1f}", flush=True)
        stop.set()
        end_rss, end_pss = rss_mib(children(proc.pid)), pss_mib(children(proc.pid))
        queue_left = subprocess.run(["sqlite3", str(home / "var" / "listmod.sqlite3"),
                                     "SELECT COUNT(*) FROM outbox WHERE state IN ('pending','sending')"],
                                    capture_output=True, text=True).stdout.strip()
        size = (home / "var" / "listmod.sqlite3").stat().st_size / 2**20
        print(f"\nsoak: {sent} posts ({held} held, outstanding), {delivered_posts * args.members} copies at the sink, "
              f"outbox left {queue_left or '?'}, store {size:.0f} MiB")
        print(f"  RSS MiB: start {start_rss:.1f}, peak {peak_rss:.1f}, end {end_rss:.1f}; "
              f"PSS MiB: start {start_pss:.1f}, peak {peak_pss:.1f}, end {end_pss:.1f}")
        first, last = rows[0], rows[-1]
        print(f"  decide(): {first[7]:.2f} ms after the first chunk, {last[7]:.2f} ms after the last; "
              f"digest build: {first[8]:.1f} ms -> {last[8]:.1f} ms; intake {first[2]:.0f} -> {last[2]:.0f} posts/s")
    finally:
        stop.set()
        proc.terminate()
        proc.wait()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
