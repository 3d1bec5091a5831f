"""Intake benchmark: listmod vs a bare aiosmtpd server, measured in the same run.

    .venv/bin/python benchmarks/intake.py [--messages 4000] [--clients 16] [--size 10240] [--members 10]

Each run sends a fixed number of ~10 KB posts from N concurrent loopback SMTP clients (one
connection each, one message after another) and reports messages/second and the p50/p99 time from
MAIL FROM to the final reply. Baseline: a bare aiosmtpd server that accepts and discards.
listmod runs as `listmod serve` with one list of --members members, its durable store (WAL,
synchronous=FULL, group commit), and delivery to a bare sink running at the same time, so the
figures include the fan-out competing for the same two cores. The end-to-end figure is the time
until the sink has every member's copy. Memory is listmod's peak RSS (VmHWM).
Only loopback addresses are used; every loop is bounded by --messages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIST = "bench@example.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listened on {port}")


def message(i: int, size: int, sender: str) -> bytes:
    head = (f"From: {sender}\r\nTo: {LIST}\r\nSubject: benchmark post {i}\r\n"
            f"Message-ID: <bench-{i}-{time.time_ns()}@example.org>\r\n"
            "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
    line = "The quick brown fox jumps over the lazy dog; listmod benchmark text.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body).encode()


async def reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def client(port: int, jobs: asyncio.Queue, latencies: list[float], failures: list[int],
                 size: int, sender: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply(reader)
    writer.write(b"EHLO bench.example.org\r\n")
    await reply(reader)
    while True:
        try:
            i = jobs.get_nowait()
        except asyncio.QueueEmpty:
            break
        data = message(i, size, sender).replace(b"\r\n.", b"\r\n..")
        started = time.perf_counter()
        writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
        await reply(reader)
        writer.write(f"RCPT TO:<{LIST}>\r\n".encode())
        await reply(reader)
        writer.write(b"DATA\r\n")
        await reply(reader)
        writer.write(data + b"\r\n.\r\n")
        code = await reply(reader)
        latencies.append(time.perf_counter() - started)
        if code != 250:
            failures.append(code)
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def probe(port: int, done: asyncio.Event, rtts: list[float]) -> None:
    """A client that only says NOOP every 50 ms: the longest wait for its answer is the worst
    stall any client saw (including the load generator's own scheduling, in both runs alike)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply(reader)
    writer.write(b"EHLO probe.example.org\r\n")
    await reply(reader)
    while not done.is_set():
        started = time.perf_counter()
        writer.write(b"NOOP\r\n")
        await reply(reader)
        rtts.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)
    writer.close()


def storm_message(i: int, sender: str) -> bytes:
    """~1.5 MB of RFC 2047 encoded-words in one Subject: what made decode_header stall a daemon."""
    words = " ".join(["=?utf-8?q?abc?="] * 100_000)
    return (f"From: {sender}\r\nTo: {LIST}\r\nSubject: {words}\r\n"
            f"Message-ID: <storm-{i}-{time.time_ns()}@example.org>\r\n\r\nstorm\r\n").encode()


async def storms(port: int, count: int, sender: str, failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply(reader)
    writer.write(b"EHLO storm.example.org\r\n")
    await reply(reader)
    for i in range(count):
        await asyncio.sleep(0.5)
        writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{LIST}>\r\nDATA\r\n".encode())
        for _ in range(3):
            await reply(reader)
        writer.write(storm_message(i, sender) + b"\r\n.\r\n")
        if await reply(reader) != 250:
            failures.append(i)
    writer.close()


async def load(port: int, count: int, clients: int, size: int, sender: str, storm_count: int = 0) -> dict:
    jobs: asyncio.Queue = asyncio.Queue()
    for i in range(count):
        jobs.put_nowait(i)
    latencies: list[float] = []
    failures: list[int] = []
    storm_failures: list[int] = []
    rtts: list[float] = []
    done = asyncio.Event()
    watcher = asyncio.create_task(probe(port, done, rtts))
    started = time.perf_counter()
    await asyncio.gather(*(client(port, jobs, latencies, failures, size, sender) for _ in range(clients)),
                         storms(port, storm_count, sender, storm_failures))
    elapsed = time.perf_counter() - started
    done.set()
    await watcher
    latencies.sort()
    return {"rate": count / elapsed, "elapsed": elapsed,
            "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000, "failures": len(failures),
            "stall": max(rtts, default=0.0) * 1000, "storm_failures": len(storm_failures)}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_bare(args) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "bare_sink.py"), str(port)],
                            stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        asyncio.run(load(port, min(200, args.messages), args.clients, args.size, "m0@example.org"))
        return asyncio.run(load(port, args.messages, args.clients, args.size, "m0@example.org", args.storms))
    finally:
        proc.terminate()
        proc.wait()


def run_listmod(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="listmod-bench-"))
    sink_port, smtp_port = free_port(), free_port()
    count_file = work / "sink.count"
    # the starter rules, less 50-newcomers.toml: its flood rule would hold a load generator's posts
    shutil.copytree(ROOT / "rules", work / "rules", ignore=shutil.ignore_patterns("50-newcomers.toml"))
    # the storms are let through the header limits, so that their parsing is what is measured
    storm_limits = '\n        max_header_size = "4MB"' if args.storms else ""
    (work / "listmod.toml").write_text(textwrap.dedent(f"""
        [server]
        smtp = "127.0.0.1:{smtp_port}"
        hostname = "bench.example.org"
        max_message_size = "20MB"{storm_limits}
        state_dir = "var"
        rules_dir = "rules"
        [outbound]
        host = "127.0.0.1"
        port = {sink_port}
        [[list]]
        address = "{LIST}"
        metoo = true
        """))  # metoo: the posting member gets a copy too, so each post fans out to every member
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "listmod"]
    members = [f"m{i}@example.org" for i in range(args.members)]
    sender = members[0] if members else "nonmember@example.org"
    if members:
        subprocess.run(cmd + ["members", "add", LIST, *members, "--config", str(work / "listmod.toml")],
                       check=True, cwd=work, env=env, stdout=subprocess.DEVNULL)
    else:  # no roster: accept everyone, so intake is measured without any fan-out
        with open(work / "listmod.toml", "a") as f:
            f.write('default_nonmember_action = "accept"\n')
    log = open(work / "daemon.log", "wb")
    sink = subprocess.Popen([sys.executable, str(HERE / "bare_sink.py"), str(sink_port), str(count_file)],
                            stdout=subprocess.DEVNULL)
    proc = subprocess.Popen(cmd + ["serve", "--config", str(work / "listmod.toml")], cwd=work, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(sink_port, sink)
        wait_port(smtp_port, proc)
        started = time.perf_counter()
        result = asyncio.run(load(smtp_port, args.messages, args.clients, args.size, sender, args.storms))
        expected = args.messages * args.members
        deadline = time.monotonic() + 600
        delivered = 0
        while time.monotonic() < deadline:
            try:
                delivered = int(count_file.read_text() or 0)
            except (FileNotFoundError, ValueError):
                delivered = 0
            if delivered >= expected:
                break
            time.sleep(0.05)
        result["end_to_end"] = args.messages / (time.perf_counter() - started)
        result["delivered"] = delivered
        result["expected"] = expected
        result["rss"] = peak_rss_mib(proc.pid)
        return result
    finally:
        proc.terminate()
        proc.wait()
        sink.terminate()
        sink.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--storms", type=int, default=0,
                        help="also send this many ~1.5 MB header storms, one every 0.5 s, during the load")
    args = parser.parse_args()
    print(f"{args.messages} messages of ~{args.size // 1024} KB from {args.clients} concurrent loopback "
          f"clients; listmod list with {args.members} members, delivering to a bare sink meanwhile\n")
    bare = run_bare(args)
    lm = run_listmod(args)
    print(f"{'server':<28}{'msg/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-250':>9}{'worst stall ms':>16}")
    for name, r in (("bare aiosmtpd (discard)", bare), ("listmod (durable intake)", lm)):
        print(f"{name:<28}{r['rate']:>10.0f}{r['p50']:>10.1f}{r['p99']:>10.1f}{r['failures']:>9}{r['stall']:>16.0f}")
    if args.storms:
        print(f"\nheader storms sent during the load: {args.storms} (~1.5 MB each); not answered 250 by "
              f"listmod: {lm['storm_failures']}")
    print(f"\nlistmod / bare intake rate: {lm['rate'] / bare['rate']:.2f}")
    print(f"listmod end to end (all {lm['expected']} copies at the sink: {lm['delivered']}): "
          f"{lm['end_to_end']:.0f} posts/s")
    print(f"listmod peak RSS: {lm['rss']:.0f} MiB")


if __name__ == "__main__":
    main()
