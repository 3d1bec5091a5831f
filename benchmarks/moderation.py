"""Moderation speed with a real Dovecot on loopback.

    .venv/bin/python benchmarks/moderation.py [--replies 100] [--digest-posts 500]

1. Reply to delivery (the IDLE path): 100 posts are held; for each, a moderator's reply with its
   `approve ID-TOKEN` line is APPENDed to the moderation mailbox (as the MTA would deliver it), and
   the time until the post reaches the sink is measured. One reply at a time; median and p99.
   Baseline in the same run: the time for Dovecot to answer the APPEND itself.
2. Digest: 500 held posts in a store; the time to build their digest, and to APPEND it.
Needs dovecot (make test installs it). Only loopback; every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from aiosmtpd.controller import Controller  # noqa: E402
from imapclient import IMAPClient  # noqa: E402
from servers import Dovecot  # noqa: E402

LIST = "bench@example.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Arrivals:
    def __init__(self):
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        found = re.search(rb"^Message-ID:\s*(<[^>]+>)", envelope.original_content, re.M | re.I)
        if found and "member@example.org" in envelope.rcpt_tos:
            with self.lock:
                self.at.setdefault(found.group(1).decode(), time.perf_counter())
        return "250 OK"


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def reply_latency(args) -> None:
    imap = Dovecot(free_port(), "moderation", "s3cret")
    imap.start()
    arrivals = Arrivals()
    sink_port, smtp_port = free_port(), free_port()
    sink = Controller(arrivals, hostname="127.0.0.1", port=sink_port)
    sink.start()
    work = Path(tempfile.mkdtemp(prefix="listmod-modbench-"))
    proc = None
    try:
        shutil.copytree(ROOT / "rules", work / "rules")
        (work / "imap.secret").write_text("s3cret\n")
        (work / "listmod.toml").write_text(textwrap.dedent(f"""
            [server]
            smtp = "127.0.0.1:{smtp_port}"
            state_dir = "var"
            rules_dir = "rules"
            [outbound]
            host = "127.0.0.1"
            port = {sink_port}
            [imap]
            host = "127.0.0.1"
            port = {imap.port}
            username = "moderation"
            password_file = "imap.secret"
            [[list]]
            address = "{LIST}"
            moderators = ["mod@example.org"]
            digest_every = "2s"
            digest_max_items = 1000
            """))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "listmod"]
        conf = ["--config", str(work / "listmod.toml")]
        subprocess.run(cmd + ["members", "add", LIST, "member@example.org"] + conf, cwd=work, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        proc = subprocess.Popen(cmd + ["serve"] + conf, cwd=work, env=env, stdout=open(work / "log", "wb"),
                                stderr=subprocess.STDOUT)
        wait(lambda: _listening(smtp_port), 20, "listmod")
        import smtplib
        with smtplib.SMTP("127.0.0.1", smtp_port) as s:
            for i in range(args.replies):
                s.sendmail("stranger@example.net", [LIST],
                           f"From: stranger@example.net\r\nTo: {LIST}\r\nSubject: held {i}\r\n"
                           f"Message-ID: <held-{i}@bench>\r\n\r\nplease let me in\r\n".encode())
        client = IMAPClient("127.0.0.1", port=imap.port, ssl=False)
        client.login("moderation", "s3cret")

        from email import message_from_bytes
        from email.policy import default

        def all_commands():
            """The approve line of every held post, from the digests so far (each digest shows its
            new posts in full; a later one lists the older ones in one line each)."""
            if not client.folder_exists("Moderation"):
                return None
            client.select_folder("Moderation", readonly=True)
            found: dict[int, str] = {}
            digest_id = ""
            for uid in client.search("ALL"):
                message = message_from_bytes(client.fetch([uid], ["RFC822"])[uid][b"RFC822"], policy=default)
                text = next(message.iter_parts()).get_content().replace("\r\n", "\n")
                for n, line in re.findall(r"Subject: held (\d+)\n.*?\n\s+(approve \S+)", text, re.S):
                    found[int(n)] = line
                    digest_id = message["Message-ID"]
            return (found, digest_id) if len(found) == args.replies else None
        commands, digest_id = wait(all_commands, 60, "digests of all held posts")
        append_times, latencies = [], []
        for i in range(args.replies):
            raw = (f"From: mod@example.org\r\nTo: moderation@example.org\r\nSubject: Re: held\r\n"
                   f"Message-ID: <bench-reply-{i}@client>\r\nIn-Reply-To: {digest_id}\r\n\r\n"
                   f"{commands[i]}\r\n\r\n> quoted digest\r\n").encode()
            started = time.perf_counter()
            client.append("INBOX", raw)
            append_times.append(time.perf_counter() - started)
            arrived = wait(lambda: arrivals.at.get(f"<held-{i}@bench>"), 30, f"delivery of post {i}")
            latencies.append(arrived - started)
        client.logout()
        latencies.sort()
        print(f"reply in IMAP -> post at the sink, {args.replies} replies one at a time (IDLE):")
        print(f"  median {statistics.median(latencies) * 1000:.0f} ms   p99 "
              f"{latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f} ms   max {latencies[-1] * 1000:.0f} ms")
        print(f"  baseline, Dovecot answering the APPEND itself: median "
              f"{statistics.median(append_times) * 1000:.1f} ms")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        sink.stop()
        imap.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def digest_time(args) -> None:
    from listmod.config import ImapConfig, ListConfig
    from listmod.mailbox import append_digest
    from listmod.message import parse
    from listmod.moderation.digest import build_digest
    from listmod.posts import Judged, record_intake
    from listmod.rules import Decision
    from listmod.store import Store
    work = Path(tempfile.mkdtemp(prefix="listmod-digestbench-"))
    imap = Dovecot(free_port(), "moderation", "s3cret")
    imap.start()
    try:
        (work / "pw").write_text("s3cret\n")
        store = Store(work / "db.sqlite3", b"k" * 32)
        # every post listed (digest_max_items), so that the build covers them all
        mlist = ListConfig(address=LIST, moderators=("mod@example.org",), digest_max_items=args.digest_posts)
        body = ("This is a held post with a few lines of text.\r\n" * 40)
        with store.transaction() as conn:
            for i in range(args.digest_posts):
                raw = (f"From: p{i}@example.net\r\nSubject: held post {i}\r\nMessage-ID: <d{i}@bench>\r\n\r\n"
                       f"{body}").encode()
                record_intake(conn, store.secret, raw=raw, envelope_from=f"p{i}@example.net", rcpt_tos=[LIST],
                              peer="bench", post=parse(raw, f"p{i}@example.net"),
                              judged=[Judged(mlist, Decision("hold", "bench", "default-nonmember", "default",
                                                             "default"))])
        conn = store.connect()
        started = time.perf_counter()
        digest = build_digest(conn, store.secret, mlist, "bench.example.org")
        built = time.perf_counter() - started
        started = time.perf_counter()
        append_digest(ImapConfig(port=imap.port, username="moderation", password_file=work / "pw"), "Moderation",
                      digest.data)
        appended = time.perf_counter() - started
        print(f"digest of {args.digest_posts} held posts ({len(digest.data) / 1024 / 1024:.1f} MiB, "
              f"{len(digest.posts)} listed, {digest.deferred} left for the next by digest_max_size): "
              f"built in {built * 1000:.0f} ms, APPENDed in {appended * 1000:.0f} ms")
    finally:
        imap.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=100)
    parser.add_argument("--digest-posts", type=int, default=500)
    args = parser.parse_args()
    reply_latency(args)
    digest_time(args)


if __name__ == "__main__":
    main()
