"""listmod against its peers, the machine's limits, and itself, in one run:

    .venv/bin/python benchmarks/peers.py [--posts 500,2000] [--clients 8] [--members 10]
                                         [--peers mailman3,mlmmj] [--out results.json]

The method of ../shared/peers/mailman3 and ../shared/peers/mlmmj, with one client for all: ~1 KB
text posts from the members in turn, `--clients` threads sending over persistent connections from
one shared, finite list of posts (LMTP for listmod and Mailman; mlmmj has no listener, so each post is
piped into `mlmmj-receive` as Postfix's local(8) would), `--members` members who each get every post,
one outbound counting sink (an aiosmtpd SMTP server in a process of its own that counts the bench
posts' Message-IDs and their RCPTs). Each scenario starts a fresh server and sink, sends 50 posts to
warm up, then M posts:

- intake posts/s = M / (first connect .. last 250);
- delivered posts/s = M / (first connect .. the sink has seen every Message-ID and M x members RCPTs);
- memory: the peak of the summed PSS of the server's processes (sampled every 0.25 s).

The references, measured the same way in the same run:
- `bare`: an aiosmtpd LMTP server that answers 250 at once (intake's ceiling);
- `limit`, the zero-cost limit: the same client hands each post with its RCPTs straight to the same
  sink over its persistent connections — what a list manager that cost nothing would deliver.

listmod runs as `listmod serve` with its defaults (durable store, starter rules less the newcomers'
flood rule), members who are not the posters, one transaction per post; `held` sends the same posts
from non-members (every post held, no fan-out); `personal` sets `personalize = true` (one copy per
member). Mailman 3 core is installed from PyPI into its own venv (var/peers/mailman-venv) and mlmmj
from Debian (apt-get) when asked for with --peers. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import queue
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIST = "bench@example.org"
PREFIX = "<peer-"
BODY = textwrap.dedent("""\
    Hi all,

    Following up on the thread from last week: the draft agenda for the
    planning call is now in the shared folder. Item {i} covers the migration
    of the build machines, which we postponed twice already.

    A few points I would like us to settle before Thursday:

      * who owns the rollout checklist for the new release branch;
      * whether the staging environment keeps the old retention policy;
      * a date for the next maintenance window (my vote is the 14th).

    If nobody objects I will send the final version to the list on
    Wednesday evening, so that everyone has a day to read it.

    Thanks, and see you on the call.
    """)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"a server exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f}s")


def post(i: int, tag: str, sender: str, to: str, crlf: bool = True) -> bytes:
    text = (f"From: {sender}\nTo: {to}\nSubject: Planning call, item {i}\n"
            f"Message-ID: {PREFIX}{tag}-{i}-{time.time_ns()}@bench.example>\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 +0000\nMIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=us-ascii\n\n" + BODY.format(i=i))
    return (text.replace("\n", "\r\n") if crlf else text).encode()


# --- the servers run in processes of their own (`peers.py _sink PORT FILE`, `peers.py _bare PORT`) ---

def serve_sink(port: int, count_file: str) -> None:
    """Counts the bench posts it receives: distinct Message-IDs, RCPTs, transactions; written to
    `count_file` every 50 ms. Listens with a backlog of 4096: mlmmj opens a connection per post, all at
    once, and its mlmmj-send has no read timeout (see ../shared/peers/mlmmj)."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    class Count:
        def __init__(self) -> None:
            self.ids: set[bytes] = set()
            self.rcpts = 0
            self.transactions = 0

        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            # offered as Postfix and Exim offer it; the zero-cost limit's smtplib client does not use it
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_DATA(self, server, session, envelope):
            data = envelope.original_content or b""
            start = data.find(b"Message-ID: " + PREFIX.encode())
            if start < 0:
                start = data.find(b"Message-Id: " + PREFIX.encode())
            if start >= 0:
                self.ids.add(data[start + 12: data.find(b">", start) + 1])
                self.rcpts += len(envelope.rcpt_tos)
                self.transactions += 1
            return "250 OK"

    async def main() -> None:
        handler = Count()
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: SMTP(handler, hostname="sink", data_size_limit=None),
                                 "127.0.0.1", port, backlog=4096)
        while True:
            await asyncio.sleep(0.05)
            with open(count_file + ".tmp", "w") as f:
                f.write(f"{len(handler.ids)} {handler.rcpts} {handler.transactions}")
            os.replace(count_file + ".tmp", count_file)

    asyncio.run(main())


def serve_bare(port: int) -> None:
    import asyncio

    from aiosmtpd.lmtp import LMTP

    class Accept:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: LMTP(Accept(), hostname="bare", data_size_limit=None), "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    asyncio.run(main())


class Sink:
    def __init__(self, work: Path):
        self.port = free_port()
        self.file = work / f"sink-{self.port}.count"
        self.proc = subprocess.Popen([sys.executable, __file__, "_sink", str(self.port), str(self.file)],
                                     stdout=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def counts(self) -> tuple[int, int, int]:
        try:
            ids, rcpts, transactions = self.file.read_text().split()
            return int(ids), int(rcpts), int(transactions)
        except (FileNotFoundError, ValueError):
            return 0, 0, 0

    def wait_for(self, ids: int, rcpts: int, timeout: float) -> float | None:
        """The time (perf_counter) at which the sink had seen `ids` posts and `rcpts` RCPTs; None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen, copies, _ = self.counts()
            if seen >= ids and copies >= rcpts:
                return time.perf_counter()
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


# --- the client ---

def send_all(posts: list[tuple[str, list[str], bytes]], clients: int, connect,
             times: list[float] | None = None) -> tuple[float, float, int]:
    """Sends every post from `clients` threads, each over one persistent connection made by
    `connect()`; returns (start, time of the last 250, failures). `times`, when given, gets each
    transaction's duration."""
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    for p in posts:
        jobs.put(p)
    last = [0.0]
    failures = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = connect()
        try:
            while True:
                try:
                    sender, rcpts, data = jobs.get_nowait()
                except queue.Empty:
                    return
                began = time.perf_counter()
                try:
                    refused = conn.sendmail(sender, rcpts, data)
                    failed = bool(refused)
                except smtplib.SMTPException:
                    failed = True
                with lock:
                    last[0] = time.perf_counter()
                    failures[0] += failed
                    if times is not None:
                        times.append(last[0] - began)
        finally:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                pass

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return start, last[0], failures[0]


def lmtp(port: int):
    return lambda: smtplib.LMTP("127.0.0.1", port, timeout=120)


# --- memory ---

def children(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (their own threads included) so far."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def summed_kib(pids: list[int], path: str, field: str) -> float:
    """The sum of one field (kB) of /proc/PID/<path> over `pids`, in MiB: Pss of smaps_rollup, VmRSS
    of status."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/{path}") as f:
                for line in f:
                    if line.startswith(field):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total / 1024


def pss_mib(pids: list[int]) -> float:
    return summed_kib(pids, "smaps_rollup", "Pss:")


def rss_mib(pids: list[int]) -> float:
    return summed_kib(pids, "status", "VmRSS:")


class Sampler(threading.Thread):
    """The peak of the summed PSS of `pids()` every 0.25 s while a scenario runs."""

    def __init__(self, pids) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak, self.done = pids, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            self.peak = max(self.peak, pss_mib(self.pids()))

    def stop(self) -> float:
        self.done.set()
        self.join()
        return round(self.peak, 1)


# --- scenarios ---

def members(n: int) -> list[str]:
    return [f"member{i}@example.org" for i in range(n)]


def figures(name: str, m: int, start: float, last: float, delivered: float | None, failures: int,
            pss: float | None) -> dict:
    return {"server": name, "posts": m, "intake": round(m / (last - start), 1),
            "delivered": round(m / (delivered - start), 1) if delivered else None,
            "failures": failures, "pss_mib": pss}


def run_bare(m: int, args, work: Path) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "_bare", str(port)])
    try:
        wait_port(port, proc)
        send_all([("a@example.org", [LIST], post(i, "w", "a@example.org", LIST)) for i in range(50)],
                 args.clients, lmtp(port))
        batch = [("a@example.org", [LIST], post(i, "bare", "a@example.org", LIST)) for i in range(m)]
        start, last, failures = send_all(batch, args.clients, lmtp(port))
        return figures("bare", m, start, last, None, failures, None)
    finally:
        proc.terminate()
        proc.wait()


def run_limit(m: int, args, work: Path) -> dict:
    sink = Sink(work)
    try:
        rcpts = members(args.members)
        smtp = lambda: smtplib.SMTP("127.0.0.1", sink.port, timeout=120)  # noqa: E731
        send_all([(rcpts[0], rcpts, post(i, "w", rcpts[0], LIST)) for i in range(50)], args.clients, smtp)
        sink.wait_for(50, 50 * args.members, 60)
        batch = [(rcpts[i % len(rcpts)], rcpts, post(i, "limit", rcpts[i % len(rcpts)], LIST)) for i in range(m)]
        start, last, failures = send_all(batch, args.clients, smtp)
        done = sink.wait_for(50 + m, (50 + m) * args.members, args.timeout)
        return figures("limit", m, start, last, done, failures, None)
    finally:
        sink.stop()


def start_listmod(home: Path, sink: Sink, lmtp_port: int, members_: int, posters: list[str],
                  list_extra: str = "") -> subprocess.Popen:
    """`listmod serve` in `home` with its defaults: LMTP on `lmtp_port`, the starter rules less the
    newcomers' flood rule (it would rightly hold a load generator's posts), one list of `members_`
    members who get every post, and the `posters`, members with nomail (so each post goes to the
    others and `not_metoo` changes nothing)."""
    home.mkdir()
    shutil.copytree(ROOT / "rules", home / "rules", ignore=shutil.ignore_patterns("50-newcomers.toml"))
    config = home / "listmod.toml"
    config.write_text(textwrap.dedent(f"""
        [server]
        smtp = ""
        lmtp = "127.0.0.1:{lmtp_port}"
        hostname = "bench.example.org"
        state_dir = "var"
        rules_dir = "rules"
        [outbound]
        host = "127.0.0.1"
        port = {sink.port}
        [[list]]
        address = "{LIST}"
        """) + list_extra)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "listmod"]
    subprocess.run(cmd + ["members", "add", LIST, *members(members_), *posters, "--config", str(config)],
                   check=True, cwd=home, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(cmd + ["members", "options", LIST, *posters, "--nomail", "on", "--config", str(config)],
                   check=True, cwd=home, env=env, stdout=subprocess.DEVNULL)
    return subprocess.Popen(cmd + ["serve", "--config", str(config)], cwd=home, env=env,
                            stdout=open(home / "daemon.log", "wb"), stderr=subprocess.STDOUT)


def run_listmod(m: int, args, work: Path, mode: str) -> dict:
    """mode: "deliver" (members post, every post fanned out), "held" (non-members: all held),
    "personal" (personalize = true)."""
    home = work / f"listmod-{mode}-{m}"
    sink = Sink(work)
    lmtp_port = free_port()
    posters = [f"poster{i}@example.org" for i in range(4)]
    proc = start_listmod(home, sink, lmtp_port, args.members, posters,
                         "personalize = true\n" if mode == "personal" else "")
    senders = posters if mode != "held" else [f"stranger{i}@example.net" for i in range(4)]
    try:
        wait_port(lmtp_port, proc)
        send_all([(senders[i % 4], [LIST], post(i, "w", senders[i % 4], LIST)) for i in range(50)],
                 args.clients, lmtp(lmtp_port))
        fan = mode != "held"
        if fan and sink.wait_for(50, 50 * args.members, 120) is None:
            raise SystemExit(f"listmod ({mode}) did not deliver the warm-up posts: {sink.counts()}; "
                             f"see {home / 'daemon.log'}")
        sampler = Sampler(lambda: children(proc.pid))
        sampler.start()
        batch = [(senders[i % 4], [LIST], post(i, mode, senders[i % 4], LIST)) for i in range(m)]
        cpu = cpu_seconds(children(proc.pid))
        start, last, failures = send_all(batch, args.clients, lmtp(lmtp_port))
        done = sink.wait_for(50 + m, (50 + m) * args.members, args.timeout) if fan else None
        cpu = cpu_seconds(children(proc.pid)) - cpu
        result = figures(f"listmod-{mode}", m, start, last, done, failures, sampler.stop())
        result["cpu_ms_per_post"] = round(cpu * 1000 / m, 2)
        if fan and done is None:
            result["error"] = f"timed out; the sink saw {sink.counts()}"
        return result
    finally:
        proc.terminate()
        proc.wait()
        sink.stop()


# --- GNU Mailman 3 core ---

MAILMAN_CFG = """\
[mailman]
layout: dev
site_owner: owner@example.com

[paths.dev]
var_dir: {var}

[mta]
incoming: mailman.mta.null.NullMTA
lmtp_host: 127.0.0.1
lmtp_port: {lmtp}
smtp_host: 127.0.0.1
smtp_port: {sink}

[runner.rest]
start: no

[webservice]
hostname: 127.0.0.1
port: {rest}
"""

MAILMAN_SETUP = """\
from mailman.config import config
from mailman.interfaces.archiver import ArchivePolicy
from mailman.interfaces.member import MemberRole
from mailman.interfaces.usermanager import IUserManager
from mailman.utilities.datetime import now
from zope.component import getUtility


def configure(mlist, count):
    users = getUtility(IUserManager)
    mlist.send_welcome_message = False
    mlist.send_goodbye_message = False
    mlist.admin_notify_mchanges = False
    mlist.archive_policy = ArchivePolicy.never
    mlist.digests_enabled = False
    for i in range(int(count)):
        email = 'member%d@example.org' % i
        address = users.get_address(email) or users.create_address(email)
        address.verified_on = now()
        mlist.subscribe(address, MemberRole.member, send_welcome_message=False)
    config.db.commit()
"""


def mailman_venv(args) -> Path:
    venv = ROOT / "var" / "peers" / "mailman-venv"
    if not (venv / "bin" / "mailman").exists():
        print("installing GNU Mailman 3 core from PyPI into", venv, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "mailman"], check=True)
    return venv


def run_mailman(m: int, args, work: Path) -> dict:
    venv = mailman_venv(args)
    home = work / f"mailman-{m}"
    (home / "etc").mkdir(parents=True)
    sink = Sink(work)
    port = free_port()
    cfg = home / "etc" / "mailman.cfg"
    cfg.write_text(MAILMAN_CFG.format(var=home / "var", lmtp=port, sink=sink.port, rest=free_port()))
    (home / "mmbench.py").write_text(MAILMAN_SETUP)
    env = dict(os.environ, PYTHONPATH=str(home))
    root = ["--run-as-root"] if os.geteuid() == 0 else []

    def mailman(*words: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "mailman"), *root, "-C", str(cfg), *words], env=env,
                              stdin=subprocess.DEVNULL, timeout=300, **kw)

    mailman("create", "test@example.com", check=True, capture_output=True)
    mailman("shell", "-l", "test@example.com", "-r", "mmbench.configure", str(args.members), check=True,
            capture_output=True)
    with open(home / "start.log", "wb") as log:   # the master keeps its stdio: never a pipe
        mailman("start", check=True, stdout=log, stderr=subprocess.STDOUT)
    master = None
    try:
        deadline = time.monotonic() + 60
        while master is None and time.monotonic() < deadline:
            try:
                master = int((home / "var" / "master.pid").read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.2)
        wait_port(port, timeout=120)
        time.sleep(2)
        roster = members(args.members)
        to = "test@example.com"
        send_all([(roster[i % len(roster)], [to], post(i, "w", roster[i % len(roster)], to)) for i in range(50)],
                 args.clients, lmtp(port))
        if sink.wait_for(50, 50 * args.members, 300) is None:
            raise SystemExit(f"Mailman did not deliver the warm-up posts: {sink.counts()} (logs in {home})")
        sampler = Sampler(lambda: children(master) if master else [])
        sampler.start()
        batch = [(roster[i % len(roster)], [to], post(i, "mm", roster[i % len(roster)], to)) for i in range(m)]
        start, last, failures = send_all(batch, args.clients, lmtp(port))
        done = sink.wait_for(50 + m, (50 + m) * args.members, args.timeout)
        return figures("mailman3", m, start, last, done, failures, sampler.stop())
    finally:
        pids = children(master) if master else []
        mailman("stop", check=False, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.3)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        sink.stop()


# --- mlmmj ---

def mlmmj_ready() -> None:
    if shutil.which("mlmmj-receive") is None and not Path("/usr/bin/mlmmj-receive").exists():
        print("installing mlmmj from Debian", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "mlmmj"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


class Reaper(threading.Thread):
    """mlmmj-receive forks and exits; its children are reparented to us (a subreaper) and reaped here."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.05)


def run_mlmmj(m: int, args, work: Path) -> dict:
    mlmmj_ready()
    spool = work / f"mlmmj-{m}"
    spool.mkdir()
    sink = Sink(work)
    answers = "example.com\nowner@example.com\nen\n"
    subprocess.run(["/usr/bin/mlmmj-make-ml", "-L", "test", "-s", str(spool)], input=answers.encode(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listdir = spool / "test"
    control = listdir / "control"
    for name, value in {"relayhost": "127.0.0.1", "smtpport": str(sink.port), "smtphelo": "mlmmj.bench.localhost",
                        "subonlypost": "", "noarchive": "", "prefix": "[test]", "verp": "",
                        "customheaders": "List-Id: <test.example.com>\nPrecedence: list\n",
                        "footer": "-- \ntest mailing list\n"}.items():
        (control / name).write_text(value + ("\n" if value and not value.endswith("\n") else ""))
    roster = members(args.members)
    for address in roster:
        subprocess.run(["/usr/bin/mlmmj-sub", "-L", str(listdir), "-a", address, "-f", "-q", "-s"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reaper = Reaper()
    reaper.start()
    to = "test@example.com"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(spool), "SENDER": "", "RECIPIENT": to, "LOCAL": "test",
           "DOMAIN": "example.com"}

    def receive(i: int, tag: str) -> None:
        sender = roster[i % len(roster)]
        data = (f"From {sender} Wed Nov 25 10:00:00 2026\nReturn-Path: <{sender}>\nX-Original-To: {to}\n"
                f"Delivered-To: {to}\n").encode() + post(i, tag, sender, to, crlf=False)
        subprocess.run(["/usr/bin/mlmmj-receive", "-L", str(listdir)], input=data, check=True,
                       env=dict(env, SENDER=sender), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run_batch(count: int, tag: str) -> tuple[float, float]:
        jobs: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(count):
            jobs.put(i)

        def worker() -> None:
            while True:
                try:
                    i = jobs.get_nowait()
                except queue.Empty:
                    return
                receive(i, tag)

        start = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return start, time.perf_counter()

    def mlmmj_pids() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().startswith("mlmmj"):
                            pids.append(int(entry))
                except OSError:
                    pass
        return pids

    try:
        run_batch(50, "w")
        if sink.wait_for(50, 50 * args.members, 120) is None:
            raise SystemExit(f"mlmmj did not deliver the warm-up posts: {sink.counts()}")
        sampler = Sampler(mlmmj_pids)
        sampler.start()
        start, last = run_batch(m, "mlmmj")
        done = sink.wait_for(50 + m, (50 + m) * args.members, args.timeout)
        result = figures("mlmmj", m, start, last, done, 0, sampler.stop())
        deadline = time.monotonic() + 60
        while mlmmj_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        return result
    finally:
        reaper.stop.set()
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", default="500,2000", help="comma-separated post counts (default 500,2000)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--peers", default="", help="also run these: mailman3,mlmmj")
    parser.add_argument("--listmod", default="deliver,held,personal", help="listmod scenarios to run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for delivery")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="listmod-peers-"))
    results: list[dict] = []
    peers = [p for p in args.peers.split(",") if p]
    try:
        for m in (int(x) for x in args.posts.split(",")):
            runs = [("bare", lambda: run_bare(m, args, work)), ("limit", lambda: run_limit(m, args, work))]
            runs += [(f"listmod-{mode}", lambda mode=mode: run_listmod(m, args, work, mode))
                     for mode in args.listmod.split(",") if mode]
            if "mlmmj" in peers:
                runs.append(("mlmmj", lambda: run_mlmmj(m, args, work)))
            if "mailman3" in peers:
                runs.append(("mailman3", lambda: run_mailman(m, args, work)))
            for name, run in runs:
                print(f"{name}, {m} posts ...", flush=True)
                result = run()
                print("   ", json.dumps(result), flush=True)
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results, args))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


def table(results: list[dict], args) -> str:
    lines = [f"\n{'server':<18}{'posts':>6}{'intake/s':>10}{'delivered/s':>13}{'PSS MiB':>9}"]
    for r in results:
        lines.append(f"{r['server']:<18}{r['posts']:>6}{r['intake']:>10}{r['delivered'] or '-':>13}"
                     f"{r['pss_mib'] if r['pss_mib'] is not None else '-':>9}")
    for m in sorted({r["posts"] for r in results}):
        by = {r["server"]: r for r in results if r["posts"] == m}

        def ratio(a: str, key_a: str, b: str, key_b: str) -> str:
            if a in by and b in by and by[a].get(key_a) and by[b].get(key_b):
                return f"{by[a][key_a] / by[b][key_b]:.2f}"
            return "-"
        lines.append(f"\n{m} posts, {args.clients} clients, {args.members} members:")
        lines.append(f"  listmod delivered / zero-cost limit: {ratio('listmod-deliver', 'delivered', 'limit', 'delivered')}"
                     f" (target 0.6); personalised: {ratio('listmod-personal', 'delivered', 'limit', 'delivered')}")
        lines.append(f"  listmod intake, all held / bare LMTP: {ratio('listmod-held', 'intake', 'bare', 'intake')}"
                     " (target 0.75)")
        lines.append(f"  listmod intake with fan-out / bare LMTP: {ratio('listmod-deliver', 'intake', 'bare', 'intake')}"
                     " (target 0.5)")
        for peer in ("mlmmj", "mailman3"):
            if peer in by:
                lines.append(f"  listmod delivered / {peer}: {ratio('listmod-deliver', 'delivered', peer, 'delivered')}")
        if "listmod-deliver" in by:
            lines.append(f"  listmod PSS peak (all its processes): {by['listmod-deliver']['pss_mib']} MiB (target < 80)")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_sink":
        serve_sink(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_bare":
        serve_bare(int(sys.argv[2]))
    else:
        main()
