"""The chaos harness: one daemon doing all of its work at once — posts fanned out to a real aiosmtpd
sink, held posts in digests APPENDed to a real Dovecot, moderators' replies read back from it,
newsgroup submissions POSTed to a real INN — while it is killed with SIGKILL at random moments, its
servers are stopped and started, and its disk fills up. Afterwards the promises are counted:

- every message answered 250 is in the store with a decision and an audit record (losses);
- every accepted post reached each member exactly once, counted at the sink by Message-ID and
  recipient, and each newsgroup article is in the group exactly once (duplicates). SMTP itself leaves
  one window no sender can close: the receiving server has said 250 and the sender dies before it
  can write that down. A second copy is counted as *in that window* only when the copy was being sent
  at a kill and the delivery journal did not record it; any other second copy is a duplicate;
- every moderator's reply is applied at most once (no post decided twice by a person);
- `listmod audit verify` passes.

The random moments come from one seed, printed with the summary (`LISTMOD_CHAOS_SEED` repeats a run).
"""

from __future__ import annotations

import os
import random
import re
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default

from conftest import LIST, MEMBERS, Daemon, Sink, post_bytes, wait_until
from imapclient import IMAPClient
from servers import Dovecot, Inn

from listmod.delivery.nntp import NntpClient
from listmod.delivery.outbox import DeliveryJournal

NEWS = "news@example.org"
GROUP = "test.moderated"
MODERATOR = "mod@example.org"
PHASES = ("intake", "fan-out", "digest", "reply", "nntp")


def seed() -> int:
    return int(os.environ.get("LISTMOD_CHAOS_SEED") or random.SystemRandom().randrange(1, 10**9))


def long_run() -> bool:
    """`make chaos` sets LISTMOD_CHAOS=long: 20 kills and more posts; `make test` runs the short one."""
    return os.environ.get("LISTMOD_CHAOS", "") == "long"


def daemon_config(dovecot: Dovecot | None, inn: Inn | None) -> dict:
    """make_daemon keywords: the list (fan-out, digests to IMAP when `dovecot`) and, with `inn`, a
    newsgroup submission address."""
    server_extra = ""
    files = {}
    if dovecot is not None:
        server_extra = (f'\n[imap]\nhost = "127.0.0.1"\nport = {dovecot.port}\nusername = "{dovecot.user}"\n'
                        f'password_file = "imap.secret"\npoll_every = "1s"\n')
        files["imap.secret"] = dovecot.password + "\n"
    extra_lists = ""
    if inn is not None:
        extra_lists = (f'\n[[list]]\naddress = "{NEWS}"\nmoderators = ["{MODERATOR}"]\nowner = "owner@example.org"\n'
                       f'deliver = "nntp://127.0.0.1:{inn.port}/{GROUP}"\ndefault_nonmember_action = "accept"\n'
                       f'digest_every = "1s"\n')
    return dict(server_extra=server_extra, files=files, extra_lists=extra_lists, moderators=(MODERATOR,),
                list_extra='digest_every = "1s"\n')


@dataclass
class Tally:
    """What the clients saw: Message-IDs answered 250 (by kind), and those with no answer."""
    acked: dict[str, str] = field(default_factory=dict)   # Message-ID -> "member" | "stranger" | "news"
    unknown: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sending: int = 0                                       # transactions in progress (for the intake phase)


class Load(threading.Thread):
    """One client connection sending `count` posts: mostly members' (fanned out), every fifth from a
    stranger (held, then approved by the moderator), every fourth a newsgroup submission when there
    is a news server. Reconnects (bounded) while the daemon is down; a post with no answer counts as
    unknown, as a sending MTA would retry it — and it is retried here, under a new Message-ID."""

    def __init__(self, number: int, daemon: Daemon, tally: Tally, count: int, news: bool, stop: threading.Event,
                 body_size: int = 800, strangers: bool = True):
        super().__init__(daemon=True, name=f"chaos-load-{number}")
        self.number, self.d, self.tally, self.count, self.news, self.stop = number, daemon, tally, count, news, stop
        self.body = "chaos " * (body_size // 6)
        self.strangers = strangers

    def connect(self) -> smtplib.SMTP | None:
        deadline = time.monotonic() + 90
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                return self.d.smtp()
            except OSError:
                time.sleep(0.05)
        return None

    def run(self) -> None:
        s = self.connect()
        i = 0
        while i < self.count and s is not None and not self.stop.is_set():
            mid = f"<chaos-{self.number}-{i}-{time.time_ns()}@load.test>"
            if self.news and i % 4 == 3:
                kind, to, sender = "news", NEWS, "poster@example.net"
                raw = (f"From: {sender}\r\nNewsgroups: {GROUP}\r\nSubject: Part {i}\r\nMessage-ID: {mid}\r\n"
                       f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\n{self.body}\r\n").encode()
            else:
                kind = "stranger" if self.strangers and i % 5 == 4 else "member"
                sender = "stranger@example.net" if kind == "stranger" else MEMBERS[i % len(MEMBERS)]
                to, raw = LIST, post_bytes(sender=sender, message_id=mid, subject=f"chaos {self.number}.{i}",
                                           body=self.body)
            with self.tally.lock:
                self.tally.sending += 1
            try:
                s.sendmail(sender, [to], raw)
                with self.tally.lock:
                    self.tally.acked[mid] = kind
                i += 1
            except smtplib.SMTPResponseException as err:
                with self.tally.lock:
                    self.tally.unknown.add(mid)
                if err.smtp_code >= 500 and err.smtp_code != 554:
                    raise
                time.sleep(0.05)  # 451 (a full disk) or 421: a sending MTA tries again later
                s = self._reconnect(s)
            except (smtplib.SMTPException, OSError):
                with self.tally.lock:
                    self.tally.unknown.add(mid)
                s = self._reconnect(s)
            finally:
                with self.tally.lock:
                    self.tally.sending -= 1
        if s is not None:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass

    def _reconnect(self, s: smtplib.SMTP) -> smtplib.SMTP | None:
        try:
            s.close()
        except Exception:
            pass
        return self.connect()


def imap(server: Dovecot) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    client.login(server.user, server.password)
    return client


def folder(server: Dovecot, name: str) -> list[bytes]:
    client = imap(server)
    try:
        if not client.folder_exists(name):
            return []
        client.select_folder(name, readonly=True)
        uids = client.search("ALL")
        return [v[b"RFC822"] for _, v in sorted(client.fetch(uids, ["RFC822"]).items())] if uids else []
    finally:
        client.logout()


class Moderator(threading.Thread):
    """Reads each new digest in the moderation folder and answers it with `approve all TOKEN`, as a
    moderator's mail client would (the reply lands in the replies folder). Sets `replied` after each
    reply, so a kill can be aimed at reply processing."""

    def __init__(self, dovecot: Dovecot, stop: threading.Event):
        super().__init__(daemon=True, name="chaos-moderator")
        self.dovecot, self.stop = dovecot, stop
        self.answered: dict[str, str] = {}   # digest Message-ID -> the reply's Message-ID
        self.replies = 0
        self.last_reply = b""
        self.replied = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.answer_new()
            except Exception as err:  # Dovecot stopped by an outage test: try again shortly
                self.errors.append(f"{type(err).__name__}: {err}")
            self.stop.wait(0.3)

    def answer_new(self) -> None:
        for raw in folder(self.dovecot, "Moderation"):
            digest = message_from_bytes(raw, policy=default)
            mid = digest["Message-ID"]
            if mid in self.answered:
                continue
            found = re.search(r"approve all ([A-Z2-7]{8})", next(digest.iter_parts()).get_content())
            if not found:
                continue
            reply_id = f"<r{time.time_ns()}@client.example>"
            reply = (f"From: {MODERATOR}\r\nTo: {digest['To'] or 'dev-moderation@example.org'}\r\n"
                     f"Subject: Re: {digest['Subject']}\r\nMessage-ID: {reply_id}\r\n"
                     f"In-Reply-To: {mid}\r\nReferences: {mid}\r\n\r\napprove all {found.group(1)}\r\n").encode()
            client = imap(self.dovecot)
            try:
                client.append("INBOX", reply)
            finally:
                client.logout()
            self.answered[mid] = reply_id   # only once the reply is in: Dovecot may be gone meanwhile
            self.replies += 1
            self.last_reply = reply
            self.replied.set()


@dataclass
class Kill:
    phase: str
    at: float
    in_flight: set[tuple[str, str]]      # (Message-ID, recipient) of post copies sent but not journaled
    digests_in_flight: set[int]          # digest outbox ids being appended, not journaled


def in_flight(d: Daemon) -> tuple[set[tuple[str, str]], set[int]]:
    """After a kill: the copies that were being sent and that the journal does not show accepted."""
    journaled = set(DeliveryJournal.read(d.dir / "var" / "delivered.journal"))
    conn = d.db()
    try:
        posts = {(mid, rcpt.lower()) for copy, mid, rcpt in conn.execute(
            "SELECT o.id, p.message_id, o.recipient FROM outbox o JOIN posts p ON p.id = o.post "
            "WHERE o.state = 'sending' AND o.kind = 'post'") if copy not in journaled}
        digests = {copy for (copy,) in conn.execute(
            "SELECT id FROM outbox WHERE state = 'sending' AND kind = 'digest'") if copy not in journaled}
    finally:
        conn.close()
    return posts, digests


def busy(d: Daemon, kind: str, states: tuple[str, ...] = ("sending",)) -> bool:
    conn = d.db()
    try:
        marks = ",".join("?" * len(states))
        return conn.execute(f"SELECT 1 FROM outbox WHERE kind = ? AND state IN ({marks}) LIMIT 1",
                            (kind, *states)).fetchone() is not None
    except Exception:
        return False
    finally:
        conn.close()


class Killer:
    """SIGKILLs the daemon at random moments within a chosen phase and starts it again."""

    def __init__(self, d: Daemon, rng: random.Random, tally: Tally, moderator: Moderator | None):
        self.d, self.rng, self.tally, self.moderator = d, rng, tally, moderator
        self.kills: list[Kill] = []
        self.missed: Counter[str] = Counter()
        self.replays = 0

    def active(self, phase: str) -> bool:
        if phase == "intake":
            return self.tally.sending > 0
        if phase == "fan-out":
            return busy(self.d, "post")
        if phase == "digest":
            return busy(self.d, "digest", ("pending", "sending"))
        if phase == "nntp":
            return busy(self.d, "article", ("pending", "sending"))
        if phase == "reply":
            return self.moderator is not None and self.moderator.replied.is_set()
        raise ValueError(phase)

    def kill_during(self, phase: str, wait: float = 20.0) -> bool:
        """Wait (bounded) until `phase` is under way, then kill after a random 0-150 ms. False when the
        phase never came within `wait` seconds (counted as missed, and the summary says so)."""
        if phase == "reply" and self.moderator is not None:
            self.moderator.replied.clear()
        deadline = time.monotonic() + wait
        while not self.active(phase):
            if time.monotonic() > deadline:
                self.missed[phase] += 1
                return False
            time.sleep(0.005)
        time.sleep(self.rng.uniform(0, 0.15))
        self.d.kill9()
        posts, digests = in_flight(self.d)
        self.kills.append(Kill(phase, time.time(), posts, digests))
        time.sleep(self.rng.uniform(0, 0.5))   # the clients find it gone and retry
        self.d.start()
        if phase == "reply" and self.moderator is not None:
            # the MTA delivers the same reply again (as after a lost acknowledgement): a replay
            client = imap(self.moderator.dovecot)
            try:
                client.append("INBOX", self.moderator.last_reply)
            finally:
                client.logout()
            self.replays += 1
        return True


class Smarthost:
    """The sink as a server that can go away and come back on the same port (a smarthost outage)."""

    def __init__(self, sink: Sink):
        self.sink = sink

    def stop(self) -> None:
        self.sink.controller.stop()

    def start(self) -> None:
        import asyncio
        self.sink.controller.loop = asyncio.new_event_loop()   # stop() closed the old one
        self.sink.controller.start()


# --- counting the promises ---

@dataclass
class Findings:
    lost: list[str]
    wrong_state: list[tuple[str, str]]
    post_copies: int
    duplicates: list[tuple[str, str, int]]        # outside the SMTP window: a broken promise
    window_duplicates: int                         # a second copy of one in flight at a kill
    missing_copies: list[tuple[str, str]]
    articles: int
    article_problems: list[tuple[str, int]]
    digest_duplicates: int
    window_digest_duplicates: int
    decided_twice: list[str]
    refused_replies: int
    chain: str

    @property
    def ok(self) -> bool:
        return not (self.lost or self.wrong_state or self.duplicates or self.missing_copies
                    or self.article_problems or self.digest_duplicates or self.decided_twice) \
            and "chain intact" in self.chain

    def problems(self) -> str:
        """The broken promises, each with its first few cases (for an assertion message)."""
        found = [(what, cases) for what, cases in (
            ("answered 250, not in the store", self.lost), ("not accepted in the end", self.wrong_state),
            ("copies twice outside SMTP's window at a kill (Message-ID, member, copies)", self.duplicates),
            ("copies missing", self.missing_copies), ("articles missing or twice", self.article_problems),
            ("posts decided twice", self.decided_twice)) if cases]
        lines = [f"{len(cases)} {what}: {cases[:5]}" for what, cases in found]
        if self.digest_duplicates:
            lines.append(f"{self.digest_duplicates} digests twice")
        if "chain intact" not in self.chain:
            lines.append(f"audit chain: {self.chain}")
        return "\n".join(lines)


def why_held(d: Daemon, moderator: Moderator | None, dovecot: Dovecot | None) -> str:
    """For a drain that timed out: the digests that listed the posts still held, whether the moderator
    answered them, and whether the daemon read those replies."""
    conn = d.db()
    try:
        rows = conn.execute("SELECT p.message_id, d.message_id FROM posts p LEFT JOIN digest_items i ON i.post = p.id "
                            "LEFT JOIN digests d ON d.id = i.digest WHERE p.state = 'held' LIMIT 20").fetchall()
        seen = {m for (m,) in conn.execute("SELECT message_id FROM replies")}
    finally:
        conn.close()
    lines = []
    for post, digest in rows:
        reply = moderator.answered.get(digest) if moderator and digest else None
        lines.append(f"{post} in digest {digest}: answered by {reply}, read by the daemon: {reply in seen}")
    if dovecot is not None:
        lines.append(", ".join(f"{name} {len(folder(dovecot, name))}" for name in ("INBOX", "Processed", "Failed")))
    return "\n".join(lines)


def drain(d: Daemon, timeout: float = 180, moderator: Moderator | None = None, dovecot: Dovecot | None = None) -> None:
    """Held posts approved (by the moderator thread) and every copy sent or failed."""
    conn = d.db()
    try:
        wait_until(lambda: conn.execute("SELECT COUNT(*) FROM posts WHERE state = 'held'").fetchone()[0] == 0,
                   timeout, "every held post decided by the moderator's replies",
                   state=lambda: why_held(d, moderator, dovecot))
        wait_until(lambda: conn.execute("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')")
                   .fetchone()[0] == 0, timeout, "the outbox to drain",
                   state=lambda: conn.execute("SELECT kind, state, COUNT(*), MAX(last_error) FROM outbox WHERE "
                                              "state IN ('pending', 'sending') GROUP BY kind, state").fetchall())
    finally:
        conn.close()


def count(d: Daemon, sink: Sink, tally: Tally, kills: list[Kill], inn: Inn | None,
          dovecot: Dovecot | None) -> Findings:
    conn = d.db()
    try:
        state = dict(conn.execute("SELECT message_id, state FROM posts"))
        audited = {m for (m,) in conn.execute("SELECT DISTINCT message_id FROM audit")}
        human = Counter(m for (m,) in conn.execute(
            "SELECT message_id FROM audit WHERE actor LIKE 'moderator:%' AND action = 'accept'"))
        refused = conn.execute("SELECT COUNT(*) FROM audit WHERE actor LIKE 'moderator:%' AND action = 'refused'"
                               ).fetchone()[0]
        digest_ids = {}
        for copy, body in conn.execute("SELECT id, body FROM outbox WHERE kind = 'digest'"):
            found = re.search(rb"(?im)^Message-ID:\s*(<[^>]+>)", bytes(body or b""))
            if found:
                digest_ids[found.group(1).decode()] = copy
    finally:
        conn.close()
    lost = sorted(m for m in tally.acked if m not in state or m not in audited)
    wrong = sorted((m, state[m]) for m in tally.acked if m in state and state[m] != "accepted")

    allowed = set().union(*(k.in_flight for k in kills)) if kills else set()
    copies = Counter((r.message["Message-ID"], rcpt) for rcpt, r in sink.copies()
                     if rcpt in MEMBERS and not r.message["Auto-Submitted"])
    duplicates, window, missing = [], 0, []
    for mid, kind in tally.acked.items():
        if kind == "news":
            continue
        for member in MEMBERS:
            n = copies[(mid, member)]
            if n == 0:
                missing.append((mid, member))
            elif n == 2 and (mid, member) in allowed:
                window += 1
            elif n > 1:
                duplicates.append((mid, member, n))
    strays = [(mid, rcpt, n) for (mid, rcpt), n in copies.items() if mid not in tally.acked and
              mid not in tally.unknown]
    duplicates += strays   # a copy of something nobody sent in this run

    articles, article_problems = 0, []
    if inn is not None:
        in_group = articles_in_group(inn)
        articles = sum(in_group.values())
        article_problems = [(m, in_group[m]) for m, kind in tally.acked.items() if kind == "news" and in_group[m] != 1]

    digest_dups = window_digest = 0
    if dovecot is not None:
        seen = Counter(message_from_bytes(raw, policy=default)["Message-ID"] for raw in folder(dovecot, "Moderation"))
        allowed_digests = set().union(*(k.digests_in_flight for k in kills)) if kills else set()
        for mid, n in seen.items():
            if n == 2 and digest_ids.get(mid) in allowed_digests:
                window_digest += 1
            elif n > 1:
                digest_dups += 1
    chain = d.cli("audit", "verify", check=False).stdout.strip()
    return Findings(lost, wrong, sum(copies.values()), duplicates, window, missing, articles, article_problems,
                    digest_dups, window_digest, sorted(m for m, n in human.items() if n > 1), refused, chain)


def articles_in_group(inn: Inn) -> Counter[str]:
    client = NntpClient("127.0.0.1", inn.port, timeout=10)
    try:
        if client.command(f"GROUP {GROUP}").code != 211:
            return Counter()
        reply = client.command("HDR Message-ID 1-")
        if reply.code != 225:
            return Counter()
        return Counter(line.split(b" ", 1)[1].decode() for line in client.read_block().splitlines())
    finally:
        client.close()


def summary(name: str, seed_: int, tally: Tally, f: Findings, kills: list[Kill], missed: Counter[str],
            extra: str = "", replays: int = 0) -> str:
    phases = Counter(k.phase for k in kills)
    lines = [
        f"chaos {name}: seed {seed_}; {len(kills)} kills ({', '.join(f'{p} {n}' for p, n in phases.items())})"
        + (f"; phases not reached: {dict(missed)}" if missed else "") + (f"; {extra}" if extra else ""),
        f"  no 250 lost: {len(tally.acked)} answered 250 ({len(tally.unknown)} unanswered, retried), "
        f"{len(f.lost)} lost, {len(f.wrong_state)} not accepted in the end",
        f"  each copy once: {f.post_copies} members' copies, {len(f.missing_copies)} missing, "
        f"{len(f.duplicates)} duplicates ({f.window_duplicates} more in SMTP's window at a kill)",
        f"  each article once: {f.articles} in {GROUP}, {len(f.article_problems)} missing or twice",
        f"  each digest once: {f.digest_duplicates} duplicates ({f.window_digest_duplicates} in the window)",
        f"  each reply at most once: {len(f.decided_twice)} posts decided twice; {replays} replies "
        f"delivered again after a kill, {f.refused_replies} refused as replays",
        f"  audit: {f.chain.splitlines()[0] if f.chain else '(no answer)'}",
    ]
    return "\n".join(lines)
