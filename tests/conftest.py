"""Fixtures: a real aiosmtpd sink, and the listmod daemon as a real process on loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
LISTMOD = [sys.executable, "-m", "listmod"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition",
               state: Callable[[], object] | None = None):
    """Poll until `predicate` is truthy; on timeout, say what was awaited and (`state`) what was seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; last seen: {state()!r}" if state else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        time.sleep(0.02)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell a failed test at teardown."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.content)


class SinkHandler:
    """Records what it is sent. `answers` maps a recipient to the RCPT reply to give instead of 250
    (a list of replies is used up one per attempt, then 250)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: dict[str, list[str] | str] = {}
        self.data_answers: list[str] = []   # answers at DATA instead of 250, used up one per message
        self.data_always: str | None = None  # an answer at DATA for every message while set
        self.before_250: Callable[[], None] | None = None  # runs (once) just before a DATA is accepted
        self.pipelining = True  # offered in EHLO, as Postfix and Exim do (aiosmtpd reads pipelined commands)
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            answer = self.answers.get(address.lower())
            if isinstance(answer, list):
                answer = answer.pop(0) if answer else None
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.data_always:
                return self.data_always
            if self.data_answers:
                return self.data_answers.pop(0)
            hook, self.before_250 = self.before_250, None
            if hook is not None:
                hook()
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content))
        return "250 OK"

    def copies(self) -> list[tuple[str, Received]]:
        """(recipient, message) for every recipient copy received."""
        with self.lock:
            return [(rcpt.lower(), r) for r in self.received for rcpt in r.rcpt_tos]


@dataclass
class Sink:
    handler: SinkHandler
    port: int
    controller: Controller

    def copies(self):
        return self.handler.copies()

    def copies_for(self, message_id: str) -> list[tuple[str, Received]]:
        return [(rcpt, r) for rcpt, r in self.copies() if r.message.get("Message-ID") == message_id]


@pytest.fixture
def sink():
    handler = SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)  # offers SMTPUTF8
    controller.start()
    try:
        yield Sink(handler, port, controller)
    finally:
        controller.stop()


@pytest.fixture
def dovecot():
    """A throwaway Dovecot on a loopback port, user `moderation` (tests/servers.py)."""
    from servers import Dovecot
    server = Dovecot(free_port(), "moderation", "s3cret")
    server.start()
    yield server
    server.cleanup()


RULES_DIR = ROOT / "rules"


def load_test_rules(tmp: Path) -> Path:
    """The starter rules without 50-newcomers.toml, whose flood rule would (rightly) hold the posts
    of a load generator that sends hundreds of posts an hour from a few addresses."""
    target = tmp / "load-rules"
    shutil.copytree(RULES_DIR, target, ignore=shutil.ignore_patterns("50-newcomers.toml"))
    return target


@dataclass
class Daemon:
    """A listmod process with its own config, state dir and ports."""

    dir: Path
    config_path: Path
    smtp_port: int
    lmtp_port: int | None
    proc: subprocess.Popen | None = None
    log_path: Path = field(default=None)  # type: ignore[assignment]

    def start(self, expect_ready: bool = True) -> None:
        self.log_path = self.dir / f"daemon-{int(time.time() * 1000)}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(LISTMOD + ["serve", "--config", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                     env=_env())
        if expect_ready:
            wait_until(lambda: self._listening() or self.proc.poll() is not None, 20,
                       "the daemon to listen")
            if self.proc.poll() is not None:
                raise AssertionError(f"listmod serve exited {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def _listening(self) -> bool:
        """Every configured listener answers (SMTP is opened before LMTP: waiting for SMTP alone
        let a test reach for LMTP a moment too early)."""
        for port in (self.smtp_port, self.lmtp_port):
            if port is None:
                continue
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(LISTMOD + list(args) + ["--config", str(self.config_path)],
                                capture_output=True, text=True, cwd=self.dir, env=_env(), timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"listmod {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def cli_json(self, *args: str) -> list[dict]:
        out = self.cli(*args, "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.dir / "var" / "listmod.sqlite3", timeout=10)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)

    def outbox_idle(self) -> bool:
        """Nothing waits in the outbox (every copy and notice sent or failed): a check that
        something did NOT happen can be made once this holds."""
        return self.db().execute("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')").fetchone()[0] == 0

    def answer(self, mail_from: str, to: str, body: bytes, options: tuple[str, ...] = ()) -> tuple[int, bytes]:
        """One transaction; the final answer to DATA (code, text), whatever it is."""
        with self.smtp() as s:
            s.ehlo()
            s.mail(mail_from, list(options))
            s.rcpt(to)
            return s.data(body)

    def send(self, mail_from: str, to: str | list[str], body: bytes) -> dict:
        with self.smtp() as s:
            return s.sendmail(mail_from, [to] if isinstance(to, str) else to, body)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LISTMOD_CONFIG", None)
    return env


LIST = "dev@example.org"
MEMBERS = ["alice@example.org", "bob@example.org", "carol@example.net"]


def make_config(tmp: Path, *, sink_port: int | None, smtp_port: int, lmtp_port: int | None = None,
                extra_lists: str = "", rules_dir: Path | None = None, server_extra: str = "",
                outbound_extra: str = "", list_extra: str = "", max_message_size: str = "1MB",
                moderators: tuple[str, ...] = ("mod@example.org",), metoo: bool = True) -> Path:
    """`metoo`: the posting member (alice, who sends most test posts) gets a copy of her own post too,
    so that a test counts one copy per member; tests of the default pass metoo=False."""
    rules = tmp / "rules"
    if not rules.exists():
        shutil.copytree(rules_dir or RULES_DIR, rules)
    outbound = ""
    if sink_port is not None:
        outbound = textwrap.dedent(f"""
            [outbound]
            host = "127.0.0.1"
            port = {sink_port}
            retry_after = "0.2s"
            retry_max = "1s"
            """) + outbound_extra
    text = textwrap.dedent(f"""
        [server]
        smtp = "127.0.0.1:{smtp_port}"
        lmtp = "{f'127.0.0.1:{lmtp_port}' if lmtp_port else ''}"
        hostname = "lists.example.org"
        max_message_size = "{max_message_size}"
        state_dir = "var"
        rules_dir = "rules"
        """) + server_extra + outbound + textwrap.dedent(f"""
        [[list]]
        address = "{LIST}"
        moderators = {json.dumps(list(moderators))}
        owner = "owner@example.org"
        """) + ("metoo = true\n" if metoo else "") + list_extra + extra_lists
    path = tmp / "listmod.toml"
    path.write_text(text)
    return path


@pytest.fixture
def make_daemon(tmp_path: Path, request):
    """Build (and by default start) a daemon; everything it started is stopped afterwards, and when
    the test failed, the end of each daemon's log is printed (pytest shows it with the failure)."""
    made: list[Daemon] = []

    def build(sink: Sink | None = None, *, start: bool = True, members: list[str] = MEMBERS,
              lmtp: bool = False, files: dict[str, str] | None = None, **config) -> Daemon:
        home = tmp_path / f"d{len(made)}"
        home.mkdir()
        for name, text in (files or {}).items():
            (home / name).write_text(text)
        smtp_port = free_port()
        lmtp_port = free_port() if lmtp else None
        path = make_config(home, sink_port=sink.port if sink else None, smtp_port=smtp_port,
                           lmtp_port=lmtp_port, **config)
        d = Daemon(home, path, smtp_port, lmtp_port)
        made.append(d)
        if members:
            d.cli("members", "add", LIST, *members)
        if start:
            d.start()
        return d

    yield build
    for d in made:
        d.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            for d in made:
                for log in sorted(d.dir.glob("daemon-*.log")):
                    print(f"\n--- {request.node.name}: {log.name} (its last 4,000 characters) ---\n"
                          f"{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)


def post_bytes(sender: str = "alice@example.org", subject: str = "hello", body: str = "Hi all.",
               to: str = LIST, message_id: str | None = None, extra: str = "") -> bytes:
    message_id = message_id or f"<{time.time_ns()}.{threading.get_ident()}@test.example>"
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n{extra}\r\n{body}\r\n").encode()


def dkim_key_pair() -> tuple[bytes, bytes]:
    """A throwaway RSA key for DKIM tests: (the private key as PEM, its DNS record "v=DKIM1; k=rsa; p=...")."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}".encode()
