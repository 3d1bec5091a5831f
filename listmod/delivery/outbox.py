"""The outbox worker: list copies and notices out by SMTP (or into a local Maildir), each copy once.

A copy's row goes pending -> sending (committed before any byte leaves) -> sent | failed, or back
to pending with a later next_attempt. The only way a recipient can get a copy twice is a crash
after the receiving server said 250 and before the copy's id reached the delivery journal (one
write and fsync); rows found in 'sending' at start-up that the journal does not name are sent
again, as Postfix does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import sqlite3
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import audit
from ..config import Config, ListConfig
from ..kinds import OutboxKind
from ..notices import undelivered_notice
from ..oplog import event, who
from ..posts import article_failed, enqueue_notice, post_by_id
from ..rawmail import crlf_lines, split_message
from ..store import GroupWriter, Store, StoreError, immediate
from ..supervise import QuietLog
from ..tlsclient import client_tls_context, is_loopback
from ..tomlfile import format_duration
from ..web import unsubscribe_url
from .articles import approved_article, article_message_id
from .nntp import NntpClient, NntpError, judge_post_reply
from .smtpsend import StaleConnection, transaction

log = logging.getLogger("listmod.delivery")

REPLACED_HEADERS = {b"list-id", b"list-post", b"list-unsubscribe", b"list-help", b"list-owner",
                    b"list-subscribe", b"list-archive", b"archived-at", b"precedence", b"x-loop",
                    b"return-path", b"delivered-to"}


@dataclass(frozen=True)
class Copy:
    id: int
    post: int | None
    kind: str            # an OutboxKind: post (a list copy), article (to a news server), notice, digest
    list: str
    recipient: str
    envelope_from: str
    attempts: int
    created_at: float


@dataclass(frozen=True)
class Outcome:
    copy: Copy
    result: str          # "sent" | "failed" | "retry" | "refused" (a 5xx for the whole transaction)
    detail: str = ""


def list_headers(mlist: ListConfig, message_id: str = "") -> list[bytes]:
    request = mlist.request_address
    lines = [
        f"List-Id: <{mlist.list_id}>".encode(),
        f"List-Post: <mailto:{mlist.address}>".encode(),
        f"List-Help: <mailto:{request}?subject=help>".encode(),
        f"List-Subscribe: <mailto:{request}?subject=subscribe>".encode(),
        f"List-Unsubscribe: <mailto:{request}?subject=unsubscribe>".encode(),
        f"List-Owner: <mailto:{mlist.owner_alias}>".encode(),
    ]
    if mlist.archive_url:
        lines.append(f"List-Archive: <{mlist.archive_url}>".encode())
    if mlist.archived_at and message_id:  # RFC 5064
        lines.append(f"Archived-At: <{archived_at(mlist, message_id)}>".encode())
    return [*lines, b"Precedence: list", f"X-Loop: {mlist.address}".encode()]


def archived_at(mlist: ListConfig, message_id: str) -> str:
    """The archive's URL of one post: the template with the Message-ID (without <>) URL-quoted."""
    return mlist.archived_at.format(message_id=quote(message_id.strip().strip("<>"), safe="@!$&'()*+,;=-._~"))


def list_copy(raw: bytes, mlist: ListConfig, message_id: str = "") -> bytes:
    """The post as members receive it: list headers set (RFC 2369/2919/5064), the rest byte for byte."""
    fields, _sep, body = split_message(raw)
    kept = [f for f in fields if f and f.split(b":", 1)[0].strip().lower() not in REPLACED_HEADERS]
    lines = kept + list_headers(mlist, message_id)
    return b"\r\n".join(lines) + b"\r\n\r\n" + crlf_lines(body)


def write_maildir(folder: Path, name: str, data: bytes) -> Path:
    """One message into a Maildir folder: written to tmp/, fsynced, renamed into new/ (a second
    write of the same name replaces the first, so a retried copy is still one file)."""
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(data.replace(b"\r\n", b"\n"))
        f.flush()
        os.fsync(f.fileno())
    target = folder / "new" / name
    os.replace(tmp, target)
    return target


class MaildirSink:
    """Writes each copy as one file in a Maildir, named after its outbox row so a retry overwrites."""

    def __init__(self, path: Path, hostname: str):
        self.path = path
        self.hostname = hostname.replace("/", "_").replace(":", "_")

    def deliver(self, copies: list[Copy], body: bytes) -> list[Outcome]:
        out = []
        for copy in copies:
            head = f"Delivered-To: {copy.recipient}\r\nReturn-Path: <{copy.envelope_from}>\r\n".encode()
            write_maildir(self.path, f"listmod-{copy.id}.{self.hostname}", head + body)
            out.append(Outcome(copy, "sent", "written to the local Maildir"))
        return out

    def close(self) -> None:
        pass


class SmtpSink:
    """One persistent SMTP connection to the smarthost, used by one worker thread."""

    def __init__(self, config: Config):
        assert config.outbound is not None
        self.outbound = config.outbound
        self.hostname = config.server.hostname
        self.conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        """A connection to the smarthost: STARTTLS when configured or offered, its certificate
        verified unless tls_verify = false; a login only over TLS or to a loopback server."""
        o = self.outbound
        conn = smtplib.SMTP(o.host, o.port, local_hostname=self.hostname, timeout=o.timeout)
        conn.ehlo()
        encrypted = False
        if o.starttls or conn.has_extn("starttls"):
            conn.starttls(context=client_tls_context(o.tls_verify, o.tls_ca_file))
            conn.ehlo()
            encrypted = True
        if o.username and not encrypted and not is_loopback(o.host):
            conn.close()
            raise smtplib.SMTPException(f"the smarthost {o.host}:{o.port} offers no STARTTLS; listmod does not "
                                        "send the password in clear over the network")
        if o.username:
            conn.login(o.username, o.password() or "")
        return conn

    def deliver(self, copies: list[Copy], body: bytes) -> list[Outcome]:
        """One transaction for the batch on the kept connection (pipelined when the smarthost
        offers PIPELINING); a kept connection the smarthost has since closed is replaced once."""
        envelope_from = copies[0].envelope_from
        for attempt in (1, 2):
            fresh = self.conn is None
            try:
                if self.conn is None:
                    self.conn = self._connect()
                options, unsendable = self._options(envelope_from, copies, body)
                if unsendable:
                    return unsendable + (self.deliver(sendable, body) if (sendable := [
                        c for c in copies if c not in {u.copy for u in unsendable}]) else [])
                refused = transaction(self.conn, envelope_from, [c.recipient for c in copies], body, options)
                break
            except StaleConnection as err:
                self.close()
                if fresh or attempt == 2:
                    return self._unreachable(copies, err)
            except ValueError as err:  # an address no SMTP command can carry
                return [Outcome(c, "failed", f"5.1.3 {err}") for c in copies]
            except smtplib.SMTPRecipientsRefused as err:
                return [_from_reply(c, *err.recipients.get(c.recipient, (451, b"refused"))) for c in copies]
            except smtplib.SMTPResponseException as err:
                # a 5xx at MAIL or DATA speaks of the message or of the server, not of one recipient:
                # retried for refused_retry_for before the copies count as failed
                self.close()
                return [_from_reply(c, err.smtp_code, err.smtp_error, whole=True) for c in copies]
            except (OSError, smtplib.SMTPException) as err:
                self.close()
                return self._unreachable(copies, err)
        return [_from_reply(c, *refused[c.recipient]) if c.recipient in refused
                else Outcome(c, "sent", "250") for c in copies]

    def _unreachable(self, copies: list[Copy], err: Exception) -> list[Outcome]:
        """No 250 came (no connection, or it failed mid-transaction): the copies are tried again
        later. A failure after the message's data was sent is SMTP's window (RFC 1047): the server
        may have taken it, and the copy may arrive twice."""
        why = f"cannot reach the smarthost {self.outbound.host}:{self.outbound.port}: {err}"
        return [Outcome(c, "retry", why) for c in copies]

    def _options(self, envelope_from: str, copies: list[Copy],
                 body: bytes) -> tuple[list[str], list[Outcome]]:
        """SMTPUTF8 for UTF-8 addresses or raw UTF-8 headers, 8BITMIME for 8-bit bodies (RFC 6531,
        RFC 6152), when the smarthost offers them; the copies that cannot be sent without them."""
        assert self.conn is not None
        options = []
        utf8_addresses = not all(a.isascii() for a in [envelope_from, *(c.recipient for c in copies)])
        if utf8_addresses or not body.isascii():
            if self.conn.has_extn("smtputf8"):
                options.append("SMTPUTF8")
            elif utf8_addresses:
                why = "5.6.7 the smarthost does not offer SMTPUTF8, which this internationalised address needs"
                return [], [Outcome(c, "failed", why) for c in copies
                             if not (c.recipient.isascii() and envelope_from.isascii())]
            if self.conn.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
        return options, []

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self.conn = None


def _from_reply(copy: Copy, code: int, text: bytes | str, whole: bool = False) -> Outcome:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    detail = f"{code} {message}".strip()
    if 500 <= code < 600:
        return Outcome(copy, "refused" if whole else "failed", detail)
    return Outcome(copy, "retry", detail)


class NewsSink:
    """POSTs approved articles to one list's news server over one kept-open connection."""

    def __init__(self, mlist: ListConfig, timeout: float):
        server = mlist.news_server
        assert server is not None
        self.mlist, self.server, self.timeout = mlist, server, timeout
        self.client: NntpClient | None = None

    def _connect(self) -> NntpClient:
        return NntpClient(self.server.host, self.server.port, tls=self.server.tls, timeout=self.timeout,
                          context=client_tls_context(self.mlist.nntp_tls_verify, self.mlist.nntp_tls_ca_file),
                          username=self.mlist.nntp_username, password=self.mlist.nntp_password())

    def deliver(self, copies: list[Copy], article_for: Callable[[Copy], bytes]) -> list[Outcome]:
        """POST each copy's article (one row per approved post, whatever its groups), in order, on
        one connection; once the server cannot be reached, the rest wait for the next attempt."""
        outcomes: list[Outcome] = []
        for n, copy in enumerate(copies):
            outcome = self._post(copy, article_for(copy))
            outcomes.append(outcome)
            if outcome.result == "retry" and self.client is None:
                outcomes += [Outcome(c, "retry", outcome.detail) for c in copies[n + 1:]]
                break
        return outcomes

    def _post(self, copy: Copy, article: bytes) -> Outcome:
        where = f"the news server {self.server.endpoint}"
        for attempt in (1, 2):
            fresh = self.client is None
            try:
                if self.client is None:
                    self.client = self._connect()
                reply = self.client.post(article)
                result = judge_post_reply(reply)
                if result.outcome == "sent" and reply.code != 240:
                    log.info("post %s: %s already had the article (%s); counted as posted",
                             copy.post, where, reply)
                return Outcome(copy, result.outcome, f"{where}: {result.detail}")
            except NntpError as err:  # refused the greeting or the login
                self.close()
                result = judge_post_reply(err.reply)
                return Outcome(copy, result.outcome, f"{where} refused {err.step}: {result.detail}")
            except (OSError, ConnectionError) as err:
                self.close()
                if fresh or attempt == 2:  # a kept connection may have timed out: one fresh try
                    return Outcome(copy, "retry", f"cannot reach {where}: {err}")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class DeliveryJournal:
    """Copy ids appended (and fsynced) the moment the receiving server says 250.

    Recording 'sent' in SQLite can wait behind intake's commits; this file cannot, so the window
    in which a crash leads to a copy being sent twice shrinks to one write() after the reply.
    At start-up the journal is folded into the store before anything is sent again. Each record is
    "ID CRC\\n" (CRC-32 of the id, hex): a torn last line or any stray byte is never read as sent.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @staticmethod
    def line(copy_id: int) -> bytes:
        text = str(copy_id).encode()
        return text + b" " + f"{zlib.crc32(text):08x}".encode() + b"\n"

    def record(self, ids: list[int]) -> None:
        if not ids:
            return
        data = b"".join(self.line(i) for i in ids)
        with self._lock:
            os.write(self._fd, data)
            os.fsync(self._fd)

    def fold_if_large(self, conn: sqlite3.Connection, limit: int = 1024 * 1024) -> None:
        """Keep the journal small: mark its copies sent in the store, then empty it."""
        if os.fstat(self._fd).st_size < limit:
            return
        with self._lock:
            ids = self.read(self.path)
            with immediate(conn):
                mark_sent(conn, ids, time.time())
            os.ftruncate(self._fd, 0)

    @staticmethod
    def read(path: Path) -> list[int]:
        """The ids of the complete, checksummed records; anything else is passed over."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        ids = []
        for record in data.split(b"\n")[:-1]:  # the last piece has no newline: torn, or empty
            number, _, crc = record.partition(b" ")
            if number.isdigit() and number.isascii() and crc == f"{zlib.crc32(number):08x}".encode():
                ids.append(int(number))
        return ids

    def close(self) -> None:
        os.close(self._fd)


# --- the store side: claiming copies and recording outcomes (run through the GroupWriter) ---

_COPY_COLUMNS = "id, post, kind, list, recipient, envelope_from, attempts, created_at"


def mark_sent(conn: sqlite3.Connection, ids: list[int], at: float) -> None:
    """Copies the receiving server accepted (from the journal); a copy already settled is left alone."""
    for start in range(0, len(ids), 500):
        chunk = ids[start: start + 500]
        conn.execute(f"UPDATE outbox SET state = 'sent', done_at = ?, attempts = attempts + 1 "
                     f"WHERE state IN ('sending', 'pending') AND id IN ({','.join('?' * len(chunk))})",
                     (at, *chunk))


def release_interrupted(conn: sqlite3.Connection, journal_ids: list[int], at: float) -> int:
    """At start-up: copies the journal shows as accepted are sent; the other copies left
    'sending' by a crash are due again."""
    mark_sent(conn, journal_ids, at)
    return conn.execute("UPDATE outbox SET state = 'pending' WHERE state = 'sending'").rowcount


def claim_due(conn: sqlite3.Connection, limit: int, at: float) -> list[Copy]:
    rows = conn.execute(
        f"SELECT {_COPY_COLUMNS} FROM outbox WHERE state = 'pending' AND next_attempt <= ? "
        "ORDER BY next_attempt, id LIMIT ?", (at, limit)).fetchall()
    for start in range(0, len(rows), 500):
        chunk = [r[0] for r in rows[start: start + 500]]
        conn.execute(f"UPDATE outbox SET state = 'sending' WHERE id IN ({','.join('?' * len(chunk))})", chunk)
    return [Copy(*r) for r in rows]


def record_outcomes(conn: sqlite3.Connection, outcomes: list[Outcome], config: Config,
                    at: float, secret: bytes) -> None:
    o = config.outbound
    retry_after = o.retry_after if o else 60.0
    retry_max = o.retry_max if o else 3600.0
    give_up = o.give_up_after if o else 5 * 86400.0
    refused_for = o.refused_retry_for if o else 3600.0
    undelivered: dict[int, list[Outcome]] = {}
    sent = [o.copy.id for o in outcomes if o.result == "sent"]
    for start in range(0, len(sent), 500):
        chunk = sent[start: start + 500]
        conn.execute("UPDATE outbox SET state = 'sent', done_at = ?, last_error = NULL, attempts = attempts + 1 "
                     f"WHERE id IN ({','.join('?' * len(chunk))})", (at, *chunk))
    for outcome in outcomes:
        c = outcome.copy
        if outcome.result == "sent":
            continue
        waited = at - c.created_at
        if outcome.result == "failed" or waited > give_up or (outcome.result == "refused" and waited > refused_for):
            detail = outcome.detail if outcome.result == "failed" else \
                f"gave up after {c.attempts + 1} attempts over {format_duration(waited)}; last answer: {outcome.detail}"
            conn.execute("UPDATE outbox SET state = 'failed', done_at = ?, last_error = ?, "
                         "attempts = attempts + 1 WHERE id = ?", (at, detail, c.id))
            if c.kind == OutboxKind.ARTICLE and c.post is not None:
                article_failed(conn, secret, config, c.post, detail, at)
            elif c.kind == OutboxKind.POST and c.post is not None:
                undelivered.setdefault(c.post, []).append(replace(outcome, detail=detail))
            continue
        if c.kind == OutboxKind.DIGEST:  # moderators wait for it: try again soon after an outage ends
            delay = min(2.0 ** c.attempts, 30.0)
        else:
            delay = min(retry_after * (2 ** c.attempts), retry_max)
        conn.execute("UPDATE outbox SET state = 'pending', next_attempt = ?, last_error = ?, "
                     "attempts = attempts + 1 WHERE id = ?", (at + delay, outcome.detail, c.id))
    for post_id, failed in undelivered.items():
        copies_failed(conn, secret, config, post_id, failed, at)


def copies_failed(conn: sqlite3.Connection, secret: bytes, config: Config, post_id: int,
                  failed: list[Outcome], at: float) -> None:
    """Copies of a post that will not be delivered: one audit record, and the owner (the
    moderators when there is none) told with the server's words."""
    record = post_by_id(conn, post_id)
    mlist = config.list_for(record.list)
    if mlist is None:
        return
    sha = conn.execute("SELECT sha256 FROM messages WHERE id = ?", (record.message,)).fetchone()[0]
    detail = failed[0].detail
    audit.append(conn, secret, list=mlist.address, post=record.id, message_id=record.message_id,
                 sha256=sha, sender=record.sender, action="undelivered",
                 reason=f"{len(failed)} cop{'y' if len(failed) == 1 else 'ies'} not delivered: {detail}",
                 template="copies not delivered: {the receiving server's answer}",
                 rule="", source="outbound", actor="delivery", at=at)
    for staff in ([mlist.owner] if mlist.owner else list(mlist.moderators)):
        enqueue_notice(conn, record.id, mlist, staff, undelivered_notice(
            mlist, record.subject, record.label, len(failed), detail, config.server.hostname, to=staff), at)


def outbox_rows(conn: sqlite3.Connection, failed_only: bool = False) -> list[tuple]:
    """What waits or failed: (id, kind, list, recipient, state, attempts, next_attempt, last_error, post)."""
    states = ("failed",) if failed_only else ("pending", "sending", "failed")
    return conn.execute(
        "SELECT id, kind, list, recipient, state, attempts, next_attempt, last_error, post FROM outbox "
        f"WHERE state IN ({','.join('?' * len(states))}) ORDER BY id", states).fetchall()


def requeue(conn: sqlite3.Connection, ids: list[int] | None, at: float) -> int:
    """Failed rows (these ids, or all) made due again; sent ones are never sent twice."""
    if ids is None:
        return conn.execute("UPDATE outbox SET state = 'pending', next_attempt = ?, created_at = ? "
                            "WHERE state = 'failed'", (at, at)).rowcount
    changed = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start: start + 500]
        changed += conn.execute(f"UPDATE outbox SET state = 'pending', next_attempt = ?, created_at = ? "
                                f"WHERE state = 'failed' AND id IN ({','.join('?' * len(chunk))})",
                                (at, at, *chunk)).rowcount
    return changed


class Outbox:
    """Claims due copies, hands them to worker threads in batches, records what happened."""

    def __init__(self, config: Config, store: Store, writer: GroupWriter, secret: bytes):
        self.config = config
        self.secret = secret
        self.store = store
        self.writer = writer
        self.workers = config.outbound.connections if config.outbound else 1
        self.batch = config.outbound.batch_recipients if config.outbound else 100
        self._wake = asyncio.Event()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="listmod-outbox")
        self._sinks: list = []
        self._lists = {m.address: m for m in config.lists}
        self.journal: DeliveryJournal | None = None
        self._recording: set[asyncio.Task] = set()   # outcomes on their way into the store
        self.quiet = QuietLog(log)
        # dnspython and dkimpy cost ~14 MiB: loaded only when a list mitigates DMARC or signs
        self._policies: Any = None    # a dmarc.PolicyLookup, made when first needed
        self.signers: dict[str, Any] = {}
        if any(m.dkim_key is not None and m.dkim_selector for m in config.lists):
            from .dkimsign import Signer
            self.signers = {m.address: Signer(m.domain, m.dkim_selector, m.dkim_key)
                            for m in config.lists if m.dkim_key is not None and m.dkim_selector}

    def wake(self) -> None:
        self._wake.set()

    async def _write(self, fn):
        return await asyncio.wrap_future(self.writer.submit(fn))

    async def run(self, stopping: asyncio.Event) -> None:
        journal_path = self.config.server.state_dir / "delivered.journal"
        done = DeliveryJournal.read(journal_path)
        while True:  # the store may be busy (locked by another process) just as we start: wait
            try:
                released = await self._write(lambda conn: release_interrupted(conn, done, time.time()))
                break
            except StoreError as err:
                log.warning("could not prepare the outbox (%s); trying again in 1 s", err)
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=1.0)
                    return
                except TimeoutError:
                    pass
        journal_path.unlink(missing_ok=True)  # folded into the store, which has committed
        self.journal = DeliveryJournal(journal_path)
        if released:
            log.info("%d copies were interrupted by a stop; sending them again", released)
        running: set[asyncio.Task] = set()
        while not stopping.is_set():
            if len(running) >= self.workers:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            free = self.workers - len(running)
            try:
                copies = await self._write(lambda c: claim_due(c, free * self.batch, time.time()))
            except Exception as err:
                self.quiet("claim", logging.WARNING, "could not read the outbox (%s); trying again "
                           "shortly", err)
                copies = []
            if not copies:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                continue
            for batch in self._batches(copies):
                while len(running) >= self.workers:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self._send(batch))
                running.add(task)
                task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running, timeout=30)
        if self._recording:
            await asyncio.wait(self._recording, timeout=30)

    def _batches(self, copies: list[Copy]) -> list[list[Copy]]:
        groups: OrderedDict[tuple, list[Copy]] = OrderedDict()
        for c in copies:
            # a list copy batches with the other copies of its post; articles batch per list
            # (one POST each, on one connection); each notice goes alone
            per = {"post": c.post, "article": c.list}.get(c.kind, c.id)
            key = (c.kind, per, c.envelope_from)
            groups.setdefault(key, []).append(c)
        batches = []
        for group in groups.values():
            for i in range(0, len(group), self.batch):
                batches.append(group[i: i + self.batch])
        return batches

    async def _send(self, batch: list[Copy]) -> None:
        try:
            outcomes = await asyncio.get_running_loop().run_in_executor(self._pool, self._deliver, batch)
        except (OSError, sqlite3.Error) as err:  # raised before anything was handed to a server
            self.quiet("deliver", logging.WARNING, "delivery of %d copies could not start (%s); they are "
                       "tried again", len(batch), err)
            outcomes = [Outcome(c, "retry", f"could not start: {err}") for c in batch]
        except Exception as err:  # these copies cannot be built or sent: set aside, audited, requeueable
            self.quiet("deliver", logging.ERROR, "delivery of %d copies failed unexpectedly; they are set "
                       "aside (`listmod outbox --failed`)", len(batch), exc_info=True)
            why = f"internal error: {type(err).__name__}: {err}"[:500]
            outcomes = [Outcome(c, "failed", why) for c in batch]
        self._log_attempt(outcomes)
        # the connection is free for the next batch now: the journal has the accepted copies, and
        # every copy of this batch stays 'sending' (never claimed again) until its outcome is stored
        task = asyncio.create_task(self._record(outcomes))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, outcomes: list[Outcome]) -> None:
        note = self._note_remotes(outcomes)

        def record(conn: sqlite3.Connection) -> None:
            record_outcomes(conn, outcomes, self.config, time.time(), self.secret)
            note(conn)
        delay = 1.0
        while True:
            # what the server answered must be recorded as it was: a 250 never becomes a retry,
            # so while the store cannot commit (a full disk) the copies stay claimed and we wait
            try:
                await self._write(record)
                return
            except Exception as err:
                self.quiet("record", logging.ERROR, "could not record the outcome of %d copies (%s); "
                           "trying again in %.0fs", len(outcomes), err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _remote(self, copy: Copy) -> str:
        """Where a row goes, as the log names it (host:port, or the local Maildir)."""
        if copy.kind == OutboxKind.DIGEST:
            imap = self.config.imap
            return f"imap {imap.host}:{imap.port}" if imap and copy.recipient.startswith("imap:") else "maildir"
        if copy.kind == OutboxKind.ARTICLE:
            mlist = self._lists.get(copy.list)
            server = mlist.news_server if mlist else None
            return f"nntp {server.endpoint}" if server else "nntp ?"
        if copy.recipient.startswith("maildir:"):
            return f"archive {copy.recipient[len('maildir:'):]}"
        outbound = self.config.outbound
        return f"smtp {outbound.host}:{outbound.port}" if outbound else "maildir"

    def _note_remotes(self, outcomes: list[Outcome]) -> Callable[[sqlite3.Connection], None]:
        """Each remote's last success and last failure, for `listmod status` (best effort): a job
        for the store, run with the outcomes' own."""
        at = time.time()
        seen: dict[str, tuple[bool, str]] = {}
        for o in outcomes:
            ok = o.result == "sent"
            remote = self._remote(o.copy)
            if remote not in seen or not ok:
                seen[remote] = (ok, "" if ok else o.detail[:500])

        def note(conn: sqlite3.Connection) -> None:
            try:
                for remote, (ok, error) in seen.items():
                    conn.execute("INSERT INTO remotes (remote, last_ok, last_failure, last_error) VALUES (?, ?, ?, ?) "
                                 f"ON CONFLICT(remote) DO UPDATE SET {'last_ok' if ok else 'last_failure'} = excluded."
                                 f"{'last_ok' if ok else 'last_failure'}{'' if ok else ', last_error = excluded.last_error'}",
                                 (remote, at if ok else None, None if ok else at, error))
            except sqlite3.Error as err:  # best effort: never at the cost of recording the outcomes
                self.quiet("remotes", logging.WARNING, "could not note the remotes' state (%s)", err)
        return note

    def _log_attempt(self, outcomes: list[Outcome]) -> None:
        """One line per outcome of a delivery attempt (a batch shares its line): sent at INFO, the
        rest at WARNING, with the remote and its answer; recipients by pseudonym."""
        groups: dict[tuple[str, str], list[Outcome]] = {}
        for o in outcomes:
            groups.setdefault((o.result, o.detail), []).append(o)
        for (result, detail), group in groups.items():
            first = group[0].copy
            event(log, logging.INFO if result == "sent" else logging.WARNING, "delivery", kind=first.kind,
                  list=first.list, post=first.post, copies=len(group), result=result, remote=self._remote(first),
                  to=who(first.recipient) if len(group) == 1 and first.kind != OutboxKind.DIGEST else None,
                  attempt=first.attempts + 1, answer=detail[:300])

    # --- worker thread side ---

    def _thread_state(self):
        state = self._local
        if not hasattr(state, "conn"):
            state.conn = self.store.connect(synchronous="NORMAL")
            state.bodies = OrderedDict()
            state.news = {}
            if self.config.outbound is None:
                state.sink = MaildirSink(self.config.maildir_path, self.config.server.hostname)
            else:
                state.sink = SmtpSink(self.config)
            self._sinks.append(state)
        return state

    def _news_sink(self, state, copy: Copy) -> NewsSink | None:
        mlist = self._lists.get(copy.list)
        if mlist is None or mlist.news_server is None:
            return None
        sink = state.news.get(mlist.address)
        if sink is None:
            timeout = self.config.outbound.timeout if self.config.outbound else 60.0
            sink = state.news[mlist.address] = NewsSink(mlist, timeout)
        return sink

    def _article(self, state, copy: Copy, mlist: ListConfig) -> bytes:
        raw, message_id, sha256 = state.conn.execute(
            "SELECT m.raw, p.message_id, m.sha256 FROM posts p JOIN messages m ON m.id = p.message "
            "WHERE p.id = ?", (copy.post,)).fetchone()
        return approved_article(raw, mlist, article_message_id(
            message_id, copy.post or 0, sha256, self.config.server.hostname))

    def _body(self, state, copy: Copy) -> bytes:
        if copy.kind != "post":
            row = state.conn.execute("SELECT body FROM outbox WHERE id = ?", (copy.id,)).fetchone()
            return crlf_lines(row[0])
        cached = state.bodies.get(copy.post)
        if cached is not None:
            return cached
        raw, message_id = state.conn.execute(
            "SELECT m.raw, p.message_id FROM posts p JOIN messages m ON m.id = p.message WHERE p.id = ?",
            (copy.post,)).fetchone()
        mlist = self._lists.get(copy.list) or ListConfig(address=copy.list)
        body = list_copy(raw, mlist, message_id or "")
        if mlist.dmarc_mitigation != "none":
            from .dmarc import munged, wrapped
            mode = self._mitigation(state, copy, mlist, raw)
            if mode == "munge":
                body = munged(body, mlist)
            elif mode == "wrap":
                body = wrapped(raw, body, mlist)
        signer = self.signers.get(mlist.address)
        if signer is not None and not mlist.personalize:   # a personal copy is signed with its own headers
            body = signer.sign(body)
        state.bodies[copy.post] = body
        while len(state.bodies) > 32:
            state.bodies.popitem(last=False)
        return body

    def _mitigation(self, state, copy: Copy, mlist: ListConfig, raw: bytes) -> str:
        """The DMARC mitigation for a post's copies ("" none, "munge", "wrap"), chosen once, when
        its first copy is built, and kept in posts.dmarc; when one is applied, the audit says why."""
        conn = state.conn
        chosen = conn.execute("SELECT dmarc FROM posts WHERE id = ?", (copy.post,)).fetchone()[0]
        if chosen is not None:
            return chosen
        from .dmarc import PolicyLookup, from_address
        if self._policies is None:
            self._policies = PolicyLookup(self.config.server.nameservers)
        _name, address = from_address(raw)
        domain = address.rpartition("@")[2]
        policy = self._policies.policy_for(domain) if domain else None
        mode = mlist.dmarc_mitigation if policy is not None and policy.strict else ""
        with immediate(conn):
            if conn.execute("UPDATE posts SET dmarc = ? WHERE id = ? AND dmarc IS NULL",
                            (mode, copy.post)).rowcount == 0:  # another thread chose first
                return conn.execute("SELECT dmarc FROM posts WHERE id = ?", (copy.post,)).fetchone()[0] or ""
            if mode and policy is not None:
                post_list, message_id, sender, sha = conn.execute(
                    "SELECT p.list, p.message_id, p.sender, m.sha256 FROM posts p JOIN messages m "
                    "ON m.id = p.message WHERE p.id = ?", (copy.post,)).fetchone()
                how = ("the copies' From is the list's address; the poster's is in Reply-To and "
                       "X-Original-From" if mode == "munge" else "the post goes out wrapped (message/rfc822) in a "
                       "message from the list; the poster's address is in Reply-To and X-Original-From")
                audit.append(conn, self.secret, list=post_list, post=copy.post, message_id=message_id or "",
                             sha256=sha, sender=sender or "", action="dmarc-mitigated",
                             reason=f"{policy.describe()}: {how}",
                             template=f"the From domain's DMARC policy is strict (or unknown): {mode}",
                             rule="", source="dmarc_mitigation", actor="delivery", at=time.time())
        if mode:
            event(log, logging.INFO, "dmarc", list=mlist.address, post=copy.post, mitigation=mode,
                  policy=policy.policy if policy else "", error=policy.error if policy else "")
        return mode

    def _deliver(self, batch: list[Copy]) -> list[Outcome]:
        """Send one batch and append its accepted copies to the delivery journal at once: the time
        between the server's 250 and that write is the only window for a duplicate. The store
        records the outcomes afterwards, in the writer's next group commit (a transaction of our
        own here would wait for the writer's lock, as long as the send itself)."""
        state = self._thread_state()
        if batch[0].kind == OutboxKind.DIGEST:
            outcomes = [self._digest(state, c) for c in batch]
        elif batch[0].kind == OutboxKind.ARTICLE:
            news = self._news_sink(state, batch[0])
            if news is None:
                outcomes = [Outcome(c, "failed", f"{c.list} no longer moderates newsgroups in the "
                                    "configuration, so its approved article was not posted") for c in batch]
            else:
                outcomes = news.deliver(batch, lambda c: self._article(state, c, news.mlist))
        else:
            body = self._body(state, batch[0])
            mlist = self._lists.get(batch[0].list)
            if mlist is not None and mlist.personalize and batch[0].kind == OutboxKind.POST and len(batch) == 1 \
                    and not batch[0].recipient.startswith("maildir:"):
                body = self._personal(mlist, batch[0], body)
            remote = [c for c in batch if not c.recipient.startswith("maildir:")]
            outcomes = state.sink.deliver(remote, body) if remote else []
            outcomes += [self._archive(c, body) for c in batch if c.recipient.startswith("maildir:")]
        assert self.journal is not None  # opened by run() before any batch is claimed
        try:
            self.journal.record([o.copy.id for o in outcomes if o.result == "sent"])
        except OSError as err:  # a full disk: the store is now the only record
            self.quiet("journal", logging.ERROR, "could not write the delivery journal (%s); recording "
                       "in the store only", err)
        try:
            self.journal.fold_if_large(state.conn)
        except (OSError, sqlite3.Error) as err:
            self.quiet("journal", logging.WARNING, "could not fold the delivery journal (%s)", err)
        return outcomes

    def _personal(self, mlist: ListConfig, copy: Copy, body: bytes) -> bytes:
        """One member's copy: List-Unsubscribe with their one-click URL (RFC 8058) before the mailto,
        List-Unsubscribe-Post, and (when the list signs) a signature over both, as RFC 8058 requires."""
        server = self.config.server
        links = f"<mailto:{mlist.request_address}?subject=unsubscribe>"
        extra = b""
        if server.http is not None and server.base_url:
            url = unsubscribe_url(server.base_url, self.secret, mlist, audit.pseudonym(self.secret, copy.recipient))
            links = f"<{url}>, {links}"
            extra = b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"
        fields, _sep, rest = split_message(body)
        kept = [f for f in fields if f and f.split(b":", 1)[0].strip().lower() != b"list-unsubscribe"]
        personal = b"\r\n".join(kept) + f"\r\nList-Unsubscribe: {links}".encode() + extra + b"\r\n\r\n" + rest
        signer = self.signers.get(mlist.address)
        return signer.sign(personal) if signer is not None else personal

    def _archive(self, copy: Copy, body: bytes) -> Outcome:
        """A copy for an archive kept as a Maildir (`archive = ["maildir:/path"]`)."""
        folder = Path(copy.recipient[len("maildir:"):])
        try:
            write_maildir(folder, f"listmod-{copy.id}.{self.config.server.hostname.replace('/', '_')}", body)
        except OSError as err:
            return Outcome(copy, "retry", f"cannot write the archive Maildir {folder}: {err.strerror or err}")
        return Outcome(copy, "sent", f"written to the archive Maildir {folder}")

    def _digest(self, state, copy: Copy) -> Outcome:
        """A digest row: APPENDed to the IMAP folder its recipient names, or written to the
        local Maildir; either way the bytes come from the row."""
        data = self._body(state, copy)
        if copy.recipient.startswith("imap:") and self.config.imap is not None:
            from ..mailbox import append_digest
            folder = copy.recipient[len("imap:"):]
            try:
                append_digest(self.config.imap, folder, data)
            except Exception as err:  # any failure of the server or the network: try again
                return Outcome(copy, "retry", f"IMAP APPEND to {folder} failed ({err}); the digest is "
                                              "kept and retried")
            log.info("digest (outbox %d) for %s appended to %s", copy.id, copy.list, folder)
            return Outcome(copy, "sent", f"appended to {folder}")
        try:
            write_maildir(self.config.digest_maildir_path, f"digest-{copy.id}", data)
        except OSError as err:
            return Outcome(copy, "retry", f"cannot write the digest Maildir: {err}")
        log.info("digest (outbox %d) for %s written to %s", copy.id, copy.list,
                 self.config.digest_maildir_path / "new")
        return Outcome(copy, "sent", "written to the local Maildir")

    def close(self) -> None:
        def _close_all():
            for state in self._sinks:
                state.sink.close()
                for news in state.news.values():
                    news.close()
                state.conn.close()
        self._pool.submit(_close_all).result(timeout=30)
        self._pool.shutdown(wait=True)
        if self.journal is not None:
            self.journal.close()
