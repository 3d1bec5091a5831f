"""The aiosmtpd handler for SMTP and LMTP: check recipients, parse, decide, commit, answer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import logging
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email._header_value_parser import get_addr_spec, get_angle_addr  # as aiosmtpd parses them
from email.errors import HeaderParseError
from typing import Any, AnyStr

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from ..bounces import parse_report, verp_recipient
from ..config import Config, ListConfig, ServerConfig
from ..message import Post, parse
from ..metrics import JUDGE_SECONDS, received
from ..oplog import event, who
from ..posts import Judged, PostRecord, record_intake
from ..rules import Decision, OutOfSlice, RuleSet, decide
from ..rules.context import build_context, context_json, verified_sender
from ..store import GroupWriter, StoreError
from ..subscriptions import first_message_id, forward_to_owner, handle_request, read_request
from ..threads import thread_of
from .inbox import store_reply
from .status import human_size, with_status

log = logging.getLogger("listmod.intake")

MAX_RECIPIENTS = 100
DATA_SLOT_WAIT = 5.0  # seconds a DATA waits for a free slot under max_concurrent_data, then 451
# A small, plain message is first judged on the event loop, for at most INLINE_SLICE seconds:
# handing every message to a thread cost a fifth of intake's throughput (each hop between threads
# waits for the GIL). Larger ones, nested MIME (parsing 300 levels in 20 KB takes 160 ms), and any
# that need more than the slice go to a judge thread and get the whole judge_budget. Parsing 32 KB
# of the worst shapes we know (10,000 addresses, 10,000 parameters) takes under 40 ms.
INLINE_SIZE = 32 * 1024
INLINE_MULTIPARTS = 8
INLINE_SLICE = 0.05


def judged_inline(raw: bytes) -> bool:
    return len(raw) <= INLINE_SIZE and raw.lower().count(b"multipart/") <= INLINE_MULTIPARTS
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"\n[^ \t\r\n]")


class Refused(Exception):
    """The message breaks one of the intake limits; the text is the whole SMTP reply."""


def check_shape(raw: bytes, server: ServerConfig) -> None:
    """Header size and count, before any parsing (one search each, linear): raises Refused."""
    found = _HEAD_END.search(raw)
    head = raw[: found.start()] if found else raw
    if len(head) > server.max_header_size:
        raise Refused(f"552 5.3.4 The message header is {len(head):,} bytes; this server takes at most "
                      f"{server.max_header_size:,} (max_header_size)")
    fields = len(_FIELD_START.findall(head)) + 1
    if fields > server.max_header_count:
        raise Refused(f"552 5.3.4 The message has {fields:,} header fields; this server takes at most "
                      f"{server.max_header_count:,} (max_header_count)")


def check_mime(post: Post, server: ServerConfig) -> None:
    if post.mime_depth > server.max_mime_depth:
        raise Refused(f"554 5.6.0 The message nests MIME parts {post.mime_depth} deep; this server takes "
                      f"at most {server.max_mime_depth} (max_mime_depth)")
    if post.mime_parts > server.max_mime_parts:
        raise Refused(f"554 5.6.0 The message has {post.mime_parts:,} MIME parts; this server takes at "
                      f"most {server.max_mime_parts:,} (max_mime_parts)")


class ClientLimits:
    """Connections per client address (trusted relays exempt) and messages in transfer at once."""

    def __init__(self, server: ServerConfig):
        self.per_ip = server.max_connections_per_ip
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in server.trusted_relays]
        self.connections: dict[str, int] = {}
        self.data_slots = asyncio.Semaphore(server.max_concurrent_data)
        self.sessions: set[FastData] = set()   # the open connections, for a prompt stop
        self.closing = False

    def close_idle(self) -> int:
        """At a stop: no new transactions. Each connection between transactions is told 421 and
        closed now; one in a transaction finishes it and is told 421 at its next command. Returns
        how many were closed."""
        self.closing = True
        idle = [s for s in self.sessions if s.between_transactions()]
        for session in idle:
            session.goodbye()
        return len(idle)

    def is_trusted(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def open(self, host: str) -> bool:
        """Count a new connection; False when the address has too many already."""
        count = self.connections.get(host, 0) + 1
        self.connections[host] = count
        return count <= self.per_ip or self.is_trusted(host)

    @property
    def open_connections(self) -> int:
        return sum(self.connections.values())

    def close(self, host: str) -> None:
        count = self.connections.get(host, 1) - 1
        if count > 0:
            self.connections[host] = count
        else:
            self.connections.pop(host, None)


@dataclass(frozen=True)
class Recipient:
    """What an accepted RCPT address is to us: a list's posting address or its bounce address."""

    mlist: ListConfig
    role: str  # "post" | "bounces" | "moderation" | "request" | "join" | "leave" | "owner"


class ListDirectory:
    """Maps envelope recipients to lists; anything else is refused (never an open relay)."""

    def __init__(self, config: Config):
        self._by_address: dict[str, Recipient] = {}
        for mlist in config.lists:
            self._by_address[mlist.address] = Recipient(mlist, "post")
            self._by_address[mlist.bounce_address] = Recipient(mlist, "bounces")
            self._by_address[mlist.moderation_address] = Recipient(mlist, "moderation")
            self._by_address[mlist.request_address] = Recipient(mlist, "request")
            self._by_address[mlist.join_address] = Recipient(mlist, "join")
            self._by_address[mlist.leave_address] = Recipient(mlist, "leave")
            self._by_address[mlist.owner_alias] = Recipient(mlist, "owner")

        self._news_lists = sum(1 for m in config.lists if m.news_server)

    def lookup(self, address: str) -> Recipient | None:
        """The list an address belongs to. A bounce address may carry an extension after `+`
        (LIST-bounces+alice=example.org@host, VERP), which names the member, not another list."""
        key = address.strip().strip("<>").lower()
        found = self._by_address.get(key)
        if found is None and "+" in key:
            local, _, domain = key.rpartition("@")
            base = self._by_address.get(f"{local.split('+', 1)[0]}@{domain}")
            if base is not None and base.role == "bounces":
                return base
        return found

    def crosspost_deputies(self, post: Post, rcpt_tos: list[str]) -> set[str]:
        """A submission cross-posted to groups that several of our lists moderate, sent to them
        together: one decision and one POST (RFC 5537 3.5.1). The list of the first such group in
        Newsgroups judges; the others (returned) are left out."""
        if self._news_lists < 2:
            return set()
        news = {t.mlist.address: t.mlist for a in rcpt_tos
                if (t := self.lookup(a)) and t.role == "post" and t.mlist.news_server}
        if len(news) < 2:
            return set()
        order = {g: n for n, g in enumerate(post.newsgroups)}
        first = min(news.values(), key=lambda m: min(order.get(g, len(order)) for g in m.newsgroups))
        return set(news) - {first.address}


def reply_text(text: str, limit: int = 400) -> str:
    """Reason text made safe for an SMTP reply line: ASCII, one line, bounded."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    one_line = " ".join(ascii_text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def _reply(code: str, status: str, text: str) -> str:
    """A possibly multi-line reply ('550-5.7.1 ...' continuation lines, 'ccc x.y.z' last)."""
    words = reply_text(text, limit=900).split(" ")
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > 200:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    head = [f"{code}-{status} {part}" for part in lines[:-1]]
    return "\r\n".join(head + [f"{code} {status} {lines[-1]}"])


BOUNCE_REPORT = ("A message to the list's bounce address is a delivery report; it is recorded, never "
                 "distributed.")


def bounce_report_decision(ruleset: RuleSet) -> Decision:
    return Decision("discard", BOUNCE_REPORT, "bounce", "builtin", "rules", "sent to the bounce address",
                    ruleset.digest, template=BOUNCE_REPORT)


class DataTooLarge(Exception):
    """The message passed the size limit; it was read to its end and dropped."""


async def read_data(reader: asyncio.StreamReader, limit: int | None) -> bytes:
    """Read a DATA section up to CRLF.CRLF (RFC 5321 4.1.1.4) and undo dot-stuffing.

    aiosmtpd reads a message one line at a time (a readuntil() and a debug log call per line),
    which costs as much as everything listmod does with the message. Here one search in C finds
    the terminator. Only at a line start, where the CRLF before a terminator may already have been
    read, are a few bytes looked at first. Lines longer than 1000 octets are accepted.
    Raises DataTooLarge past `limit`, and IncompleteReadError if the client goes away.
    """
    kept: list[bytes] = []
    size = 0
    too_much = False

    def take(data: bytes) -> None:
        nonlocal size, too_much
        size += len(data)
        if too_much:
            return
        kept.append(data)
        if limit and size > limit:
            too_much = True
            kept.clear()

    partial = b""  # what has been read of the current line, at a line start
    while True:
        peek = partial + await reader.readexactly(3 - len(partial))
        if peek == b".\r\n":
            break  # the terminator, right at a line start
        crlf = peek.find(b"\r\n")
        if crlf != -1:  # a short line ended within the peek: another line start follows
            take(peek[: crlf + 2])
            partial = peek[crlf + 2:]
            continue
        if peek.endswith(b"\r"):
            while peek.endswith(b"\r"):  # a CRLF may be split here: find out before searching
                peek += await reader.readexactly(1)
            if peek.endswith(b"\r\n"):
                take(peek)
                partial = b""
                continue
        # This line's own CRLF is still unread, so the next CRLF.CRLF is the terminator.
        take(peek)
        while True:
            try:
                take(await reader.readuntil(b"\r\n.\r\n"))
                break
            except asyncio.LimitOverrunError as err:  # no terminator within the buffer yet
                take(await reader.readexactly(err.consumed))
        size -= 3
        if not too_much:
            kept[-1] = kept[-1][:-3]  # drop the ".\r\n", keep the last line's CRLF
        break
    if too_much or (limit and size > limit):
        raise DataTooLarge
    content = b"".join(kept).replace(b"\r\n.", b"\r\n")
    return content[1:] if content.startswith(b".") else content


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
SIMPLE_ANGLE_ADDR = re.compile(rf"[ \t]*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*+(?!\()")


class FastData(SMTP):
    """smtp_DATA as in aiosmtpd (checks, 354, size limit 552, handler hook), reading with read_data(),
    and aiosmtpd's address parsing without the typing.Protocol class it defines on every call."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if not arg:
            return "", ""
        simple = SIMPLE_ANGLE_ADDR.match(arg)
        if simple is not None:  # <dot-atom@host.name>: what the full parser below would return, at a tenth of the cost
            addr = simple.group(1)
            if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
                return None, None
            return addr, arg[simple.end():]
        address: Any
        try:
            if arg.lstrip().startswith("<"):
                address, rest = get_angle_addr(arg)
            else:
                address, rest = get_addr_spec(arg)
        except HeaderParseError:
            return None, None
        addr = address.addr_spec
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    _client_host = ""
    _counted = False
    _too_many = False
    _command = ""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # remember which command is being answered, so that push() can add the right status code
        self._smtp_methods = {name: self._tracked(name, method) for name, method in self._smtp_methods.items()}

    def _tracked(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def run(arg: Any) -> Any:
            if self.event_handler.limits.closing and name != "QUIT" and self.between_transactions():
                self.goodbye()   # stopping: the sender tries again later, elsewhere or here
                return None
            self._command = name
            try:
                return await method(arg)
            finally:
                self._command = ""
        return run

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            if status.startswith("552 Error: message size exceeds"):  # SIZE= in MAIL FROM over the limit
                status = (f"552 5.3.4 Messages to this server are limited to {human_size(self.data_size_limit or 0)} "
                          "(max_message_size)")
            status = "\r\n".join(with_status(line, self._command) for line in status.split("\r\n"))
        await super().push(status)

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        self._client_host = peer[0] if isinstance(peer, tuple) else str(peer or "")
        self._counted = True
        limits = self.event_handler.limits
        self._too_many = not limits.open(self._client_host)
        limits.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error) -> None:
        if self._counted:
            self._counted = False
            self.event_handler.limits.close(self._client_host)
        self.event_handler.limits.sessions.discard(self)
        super().connection_lost(error)

    def between_transactions(self) -> bool:
        """No command being answered and no MAIL FROM given: closing now loses nothing."""
        return not self._command and (self.envelope is None or self.envelope.mail_from is None)

    def goodbye(self) -> None:
        """421 and close (RFC 5321 3.8: a server that must shut down answers 421)."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(b"421 4.3.2 Service shutting down; please try again later\r\n")
            transport.close()

    async def _handle_client(self) -> None:
        if self._too_many:
            log.warning("refused a connection from %s: more than %d open (max_connections_per_ip)",
                        self._client_host, self.event_handler.limits.per_ip)
            await self.push("421 4.7.0 Too many connections from your address; try again later")
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        slots = self.event_handler.limits.data_slots
        if slots.locked():  # wait_for costs a task per call: only when there is something to wait for
            try:
                await asyncio.wait_for(slots.acquire(), timeout=DATA_SLOT_WAIT)
            except TimeoutError:
                await self.push("451 4.3.2 Too many messages are being received at once; try again shortly")
                return
        else:
            await slots.acquire()
        try:
            await self._receive()
        finally:
            slots.release()

    async def _receive(self) -> None:
        assert self.envelope is not None
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await read_data(self._reader, self.data_size_limit)
        except DataTooLarge:
            lists = ", ".join(self.envelope.rcpt_tos[:3]) + (", ..." if len(self.envelope.rcpt_tos) > 3 else "")
            await self.push(f"552 5.3.4 Messages to {lists} are limited to {human_size(self.data_size_limit or 0)} "
                            f"(max_message_size)")
            self._set_post_data_state()
            return
        except asyncio.IncompleteReadError:
            return  # the client went away mid-message; nothing was stored
        except asyncio.CancelledError:
            self._writer.close()
            raise
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)


class ListmodSMTP(FastData):
    # the StreamReader limit: also how much of a message is searched for CRLF.CRLF at once
    line_length_limit = 1024 * 1024


class ListmodLMTP(FastData, LMTP):
    line_length_limit = 1024 * 1024


class IntakeHandler:
    """Thin: it asks small questions of the directory, decide() and the store, and answers.
    Parsing and judging run in worker threads, so a slow message never stalls other clients."""

    def __init__(self, config: Config, rules: Callable[[], RuleSet], writer: GroupWriter,
                 connect: Callable[[], sqlite3.Connection], secret: bytes,
                 on_accepted: Callable[[], None], lmtp: bool = False, limits: ClientLimits | None = None,
                 judges: ThreadPoolExecutor | None = None):
        self.config = config
        self.rules = rules
        self.writer = writer
        self.connect = connect
        self.secret = secret
        self.on_accepted = on_accepted
        self.lmtp = lmtp
        self.rejects_by_notice = lmtp and config.server.lmtp_rejects == "notice"
        self.directory = ListDirectory(config)
        self.limits = limits or ClientLimits(config.server)
        self.judges = judges or ThreadPoolExecutor(2, thread_name_prefix="listmod-judge")
        self._local = threading.local()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
        return conn

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        """EHLO as aiosmtpd answers it, with ENHANCEDSTATUSCODES (RFC 2034) before the last line."""
        session.host_name = hostname
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.directory.lookup(address) is None:
            return f"550 5.1.1 <{reply_text(address, 200)}>: no such list here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients in one transaction; send the rest separately"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def _moderation_reply(self, raw: bytes, mail_from: str, addresses: list[str], peer: str) -> str:
        """A reply to a digest (or a poster's withdraw) sent to LIST-moderation@: stored with its
        250, applied by the moderation worker like a reply found over IMAP."""
        target = self.directory.lookup(addresses[0])
        assert target is not None
        if not mail_from:
            return "250 2.0.0 Not applied: delivery reports are not moderation replies"
        try:
            check_shape(raw, self.config.server)
        except Refused as refused:
            return str(refused)
        mlist = target.mlist
        try:
            await asyncio.wrap_future(self.writer.submit(
                lambda conn: store_reply(conn, mlist.address, raw, mail_from, peer, time.time())))
        except StoreError:
            return "451 4.3.0 The reply could not be stored; please try again later"
        except Exception:
            log.exception("unexpected error while storing a moderation reply from %s", who(mail_from))
            return "451 4.3.0 Internal error while storing the reply; please try again later"
        self.on_accepted()
        return f"250 2.0.0 Reply received for {mlist.address}; it is applied in a moment"

    async def _service(self, raw: bytes, mail_from: str, address: str, role: str, peer: str) -> str:
        """Mail to LIST-request@, -join@, -leave@ (a membership request, answered by mail) or
        -owner@ (forwarded to the owner, else the moderators)."""
        target = self.directory.lookup(address)
        assert target is not None
        mlist = target.mlist
        try:
            check_shape(raw, self.config.server)
        except Refused as refused:
            return str(refused)
        now = time.time()
        hostname = self.config.server.hostname
        try:
            if role == "owner":
                answer = await asyncio.wrap_future(self.writer.submit(
                    lambda conn: forward_to_owner(conn, mlist, raw, now)))
            else:
                request = await asyncio.wrap_future(self.judges.submit(read_request, raw, mail_from, role))
                message_id = await asyncio.wrap_future(self.judges.submit(first_message_id, raw))
                answer = await asyncio.wrap_future(self.writer.submit(lambda conn: handle_request(
                    conn, self.secret, mlist, request, hostname=hostname, at=now,
                    per_hour=self.config.server.held_notices_per_hour, message_id=message_id, client_ip=peer,
                    per_ip_hour=self.config.server.requests_per_ip_per_hour,
                    base_url=self.config.server.base_url if self.config.server.http else "")))
        except StoreError:
            return "451 4.3.0 The request could not be stored; please try again later"
        except Exception:
            log.exception("unexpected error while handling mail to %s", address)
            return "451 4.3.0 Internal error while handling the request; please try again later"
        event(log, logging.INFO, "request", list=mlist.address, role=role, sender=who(mail_from), answer=answer)
        self.on_accepted()
        return answer

    def judge(self, raw: bytes, mail_from: str, rcpt_tos: list[str],
              first_slice: bool = False) -> tuple[Post, list[Judged]]:
        """Parse and judge within the message's time budget; raises Refused when the message breaks
        an intake limit. `first_slice`: only INLINE_SLICE seconds, then OutOfSlice."""
        started = time.monotonic()
        deadline = started + (INLINE_SLICE if first_slice else self.config.server.judge_budget)
        try:
            return self._judge(raw, mail_from, rcpt_tos, deadline, first_slice)
        finally:
            JUDGE_SECONDS.observe(time.monotonic() - started)

    def _judge(self, raw: bytes, mail_from: str, rcpt_tos: list[str], deadline: float,
               first_slice: bool) -> tuple[Post, list[Judged]]:
        check_shape(raw, self.config.server)
        post = parse(raw, mail_from)
        check_mime(post, self.config.server)
        if first_slice and time.monotonic() > deadline:
            raise OutOfSlice("parsing took the whole first slice")
        ruleset = self.rules()  # one complete rule set judges the whole message, even mid-reload
        now = time.time()
        reader = self._reader()
        skip = self.directory.crosspost_deputies(post, rcpt_tos)
        judged: list[Judged] = []
        seen: set[tuple[str, str]] = set()
        # the lookups share one read transaction: one snapshot of the store, and SQLite drops a
        # connection's page cache once per read transaction begun after another connection wrote
        if reader.in_transaction:  # left open by a failed COMMIT: start clean
            reader.execute("ROLLBACK")
        reader.execute("BEGIN")
        try:
            for address in rcpt_tos:
                target = self.directory.lookup(address)
                if target is None or (target.mlist.address, target.role) in seen or target.mlist.address in skip:
                    continue
                seen.add((target.mlist.address, target.role))
                mlist = target.mlist
                if target.role == "bounces":
                    judged.append(Judged(mlist, bounce_report_decision(ruleset), report=parse_report(raw),
                                         verp=verp_recipient(address)))
                    continue
                thread = thread_of(reader, post, mlist.address, now)
                ctx = build_context(reader, post, mlist, self.config, ruleset, now, thread)
                judged.append(Judged(mlist, decide(post, ctx, ruleset, deadline, slice_only=first_slice),
                                     context_json(ctx), thread,
                                     verified_sender(post, ctx.sender_is_member, self.config.server.authserv_id)))
        finally:
            reader.execute("COMMIT")
        return post, judged

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        if mail_from == "<>":
            mail_from = ""
        rcpts = list(envelope.rcpt_tos)
        peer = f"{session.peer[0]}:{session.peer[1]}" if isinstance(session.peer, tuple) else str(session.peer)
        roles = {a: t.role for a in rcpts if (t := self.directory.lookup(a)) is not None}
        host = session.peer[0] if isinstance(session.peer, tuple) else ""
        client_ip = "" if not host or self.limits.is_trusted(host) else host   # a local MTA is not limited
        replies = [a for a in rcpts if roles.get(a) == "moderation"]
        service = [a for a in rcpts if roles.get(a) in ("request", "join", "leave", "owner")]
        posts = [a for a in rcpts if a not in replies and a not in service]
        answers: dict[str, str] = {}
        if replies:
            reply_answer = await self._moderation_reply(raw, mail_from, replies, peer)
            answers.update((a, reply_answer) for a in replies)
        for address in service:
            answers[address] = await self._service(raw, mail_from, address, roles[address], client_ip)
        records: list[PostRecord] = []
        if posts:
            stored = await self._store_post(raw, mail_from, posts, peer)
            if isinstance(stored, str):  # 451 or a refusal: nothing was stored for these recipients
                answers.update((a, stored) for a in posts)
                if not self.lmtp and not replies and not service:
                    return stored
            else:
                records = stored
                by_list = {r.list: r for r in records}
                for address in posts:
                    target = self.directory.lookup(address)
                    record = by_list.get(target.mlist.address) if target else None
                    news = bool(target and target.mlist.news_server)
                    judge = next((r.list for r in records if (t := self.directory.lookup(r.list))
                                  and t.mlist.news_server), "") if news and record is None else ""
                    # a cross-post that another of our newsgroup lists judged gets no decision of its own
                    answers[address] = (f"250 2.0.0 Cross-posted: judged once, by {judge}" if judge
                                        else _answer(record, by_notice=news or self.rejects_by_notice))
        if self.lmtp:
            return "\r\n".join(answers[a] for a in rcpts)  # LMTP: one reply per recipient, in RCPT order
        if not posts:
            return answers[(replies or service)[0]]
        if not records:
            return answers[posts[0]]
        return _smtp_answer(records, [answers[a] for a in posts])

    async def _judge_and_store(self, raw: bytes, mail_from: str, rcpts: list[str],
                               peer: str) -> list[PostRecord]:
        if judged_inline(raw):
            try:
                post, judged = self.judge(raw, mail_from, rcpts, first_slice=True)
            except OutOfSlice:
                pass  # judged again below, in a thread, with the whole budget
            else:
                return await asyncio.wrap_future(self._commit(raw, mail_from, rcpts, peer, post, judged))
        done: concurrent.futures.Future[list[PostRecord]] = concurrent.futures.Future()
        self.judges.submit(self._judge_and_commit, raw, mail_from, rcpts, peer, done)
        return await asyncio.wrap_future(done)

    def _commit(self, raw: bytes, mail_from: str, rcpts: list[str], peer: str, post: Post,
                judged: list[Judged]) -> concurrent.futures.Future[list[PostRecord]]:
        return self.writer.submit(lambda conn: record_intake(
            conn, self.secret, raw=raw, envelope_from=mail_from, rcpt_tos=rcpts, peer=peer,
            post=post, judged=judged, hostname=self.config.server.hostname,
            notices_per_hour=self.config.server.held_notices_per_hour, reject_by_notice=self.rejects_by_notice,
            config=self.config))

    def _judge_and_commit(self, raw: bytes, mail_from: str, rcpts: list[str], peer: str,
                          done: concurrent.futures.Future) -> None:
        """In a judge thread: judge, then hand the commit to the writer straight from here, so the
        event loop is woken once, when the commit is done."""
        try:
            post, judged = self.judge(raw, mail_from, rcpts)
        except BaseException as err:
            done.set_exception(err)
            return

        def forward(f: concurrent.futures.Future) -> None:
            error = f.exception()
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(f.result())
        self._commit(raw, mail_from, rcpts, peer, post, judged).add_done_callback(forward)

    async def _store_post(self, raw: bytes, mail_from: str, rcpts: list[str],
                          peer: str) -> list[PostRecord] | str:
        """Judge and commit the post for its lists; the records, or the reply (451, or a refusal
        under the intake limits) when nothing was stored."""
        try:
            records = await self._judge_and_store(raw, mail_from, rcpts, peer)
        except Refused as refused:
            event(log, logging.INFO, "refused", sender=who(mail_from), peer=peer, lists=",".join(rcpts),
                  answer=str(refused))
            return str(refused)
        except StoreError as err:
            event(log, logging.ERROR, "not-stored", sender=who(mail_from), peer=peer, lists=",".join(rcpts),
                  error=str(err), answer="451 4.3.0")
            return "451 4.3.0 The message could not be stored; please try again later"
        except Exception:  # never crash, never lose: the sender will retry
            log.exception("unexpected error while receiving a message from %s", who(mail_from))
            return "451 4.3.0 Internal error while storing the message; please try again later"
        received()
        for r in records:
            event(log, logging.INFO, "decision", list=r.list, post=r.short_id or r.id, action=r.action,
                  rule=r.rule or "-", source=r.source, sender=who(r.sender), peer=peer)
        if any(r.state == "accepted" for r in records):
            self.on_accepted()
        return records


def _answer(record: PostRecord | None, by_notice: bool = False) -> str:
    if record is None:
        return "250 2.0.0 OK"
    if record.state == "rejected" and by_notice:
        told = "the poster is told by mail" if record.sender else "nobody to tell (null sender)"
        return _reply("250", "2.0.0", f"Rejected; {told}: {record.reason}")
    if record.state == "rejected":
        return _reply("550", "5.7.1", record.reason)
    if record.state == "held":
        return _reply("250", "2.0.0", f"Held for moderation as {record.short_id}: {record.reason}")
    if record.state == "accepted":
        return f"250 2.0.0 Accepted for {record.list} as post {record.id}"
    return f"250 2.0.0 Received (not distributed: {reply_text(record.reason, 300)})"


def _smtp_answer(records: list[PostRecord], answers: list[str]) -> str:
    """SMTP has one answer for all recipients: refuse only if every list refused."""
    if records and all(r.state == "rejected" for r in records):
        return answers[0]
    for answer in answers:
        if not answer.startswith("550"):
            return answer
    return "250 2.0.0 OK"
