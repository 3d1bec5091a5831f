"""Moderated-newsgroup throughput with a real INN on loopback.

    .venv/bin/python benchmarks/newsgroups.py [--articles 1000] [--clients 8]

Baseline in the same run: the same number of approved articles POSTed straight to INN by 4
connections (listmod's default outbox connections), one article after another on each: how fast
this INN takes articles at all.
listmod: `listmod serve` with one list whose deliver is nntp://...; the submissions are sent by
SMTP from --clients connections, each is judged by the starter rules (accepted), stored, and
POSTed with Approved:. End to end: from the first MAIL FROM until INN's group holds every article.
Needs inn2 (make test installs it). Only loopback; every loop is bounded by --articles.
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from aiosmtpd.controller import Controller  # noqa: E402
from servers import INN_BIN, Inn  # noqa: E402

from listmod.delivery.nntp import NntpClient  # noqa: E402

LIST = "news-submit@example.org"
BODY = "".join(f"Line {n} of a submission about parsers, with enough text to be typical.\r\n" for n in range(40))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def article(n: int, tag: str, approved: bool) -> bytes:
    return (f"From: Poster {n} <poster{n % 50}@example.net>\r\nNewsgroups: {'test.open' if approved else 'test.moderated'}\r\n"
            f"Subject: Parsers, part {n}\r\nMessage-ID: <{tag}-{n}@bench.example>\r\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n{'Approved: bench@example.org' + chr(13) + chr(10) if approved else ''}"
            f"\r\n{BODY}").encode()


def group_count(port: int, group: str) -> int:
    client = NntpClient("127.0.0.1", port, timeout=10)
    try:
        reply = client.command(f"GROUP {group}")
        return int(reply.text.split()[0]) if reply.code == 211 else 0
    finally:
        client.close()


def baseline(port: int, count: int, connections: int = 4) -> float:
    def worker(numbers):
        client = NntpClient("127.0.0.1", port, timeout=30)
        try:
            for n in numbers:
                reply = client.post(article(n, "direct", approved=True))
                assert reply.code == 240, reply
        finally:
            client.close()
    start = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(worker, [range(i, count, connections) for i in range(connections)]))
    return count / (time.perf_counter() - start)


class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def run_listmod(inn_port: int, count: int, clients: int) -> tuple[float, float, int]:
    home = Path(tempfile.mkdtemp(prefix="listmod-bench-news-"))
    sink = Controller(Discard(), hostname="127.0.0.1", port=free_port())
    sink.start()
    smtp_port = free_port()
    shutil.copytree(ROOT / "rules", home / "rules", ignore=shutil.ignore_patterns("50-newcomers.toml"))
    (home / "listmod.toml").write_text(textwrap.dedent(f"""
        [server]
        smtp = "127.0.0.1:{smtp_port}"
        hostname = "lists.example.org"
        [outbound]
        host = "127.0.0.1"
        port = {sink.port}
        [[list]]
        address = "{LIST}"
        moderators = ["mod@example.org"]
        default_nonmember_action = "accept"
        deliver = "nntp://127.0.0.1:{inn_port}/test.moderated"
        """))
    proc = subprocess.Popen([sys.executable, "-m", "listmod", "serve", "--config", str(home / "listmod.toml")],
                            cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", smtp_port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        before = group_count(inn_port, "test.moderated")

        def sender(numbers):
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as s:
                for n in numbers:
                    s.sendmail("news@loopback.test", [LIST], article(n, "viamod", approved=False))
        start = time.perf_counter()
        threads = [threading.Thread(target=sender, args=(range(i, count, clients),)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        intake = time.perf_counter() - start
        deadline = time.monotonic() + 300
        while group_count(inn_port, "test.moderated") - before < count and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        posted = group_count(inn_port, "test.moderated") - before
        rss = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) // 1024
        if posted < count:
            raise SystemExit(f"only {posted} of {count} articles reached the group in 300 s")
        return count / elapsed, count / intake, rss
    finally:
        proc.terminate()
        proc.wait(30)
        sink.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if INN_BIN is None:
        raise SystemExit("INN is not installed: run `make test` once (it installs inn2) or apt-get install inn2")
    inn = Inn(free_port())
    inn.start()
    try:
        direct = baseline(inn.port, args.articles)
        rate, intake, rss = run_listmod(inn.port, args.articles, args.clients)
    finally:
        inn.cleanup()
    print(f"INN direct POST (4 connections):     {direct:8.1f} articles/s")
    print(f"listmod submission -> article in group: {rate:8.1f} posts/s  ({rate / direct:.2f} of direct)")
    print(f"  of which SMTP intake (all 250s):     {intake:8.1f} posts/s")
    print(f"listmod peak RSS:                    {rss:8d} MiB")


if __name__ == "__main__":
    main()
