"""The aiosmtpd handler for SMTP and LMTP: check recipients, parse, decide, commit, answer."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from email._header_value_parser import get_addr_spec, get_angle_addr  # as aiosmtpd parses them
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from .config import Config, ListConfig
from .context import build_context, context_json, thread_key
from .message import Post, parse
from .moderation import apply_reply, send_receipts
from .posts import Judged, PostRecord, record_intake
from .rules import Decision, RuleSet, decide
from .store import GroupWriter, StoreError

log = logging.getLogger("listmod.intake")

MAX_RECIPIENTS = 100


@dataclass(frozen=True)
class Recipient:
    """What an accepted RCPT address is to us: a list's posting address or its bounce address."""

    mlist: ListConfig
    role: str  # "post" | "bounces" | "moderation"


class ListDirectory:
    """Maps envelope recipients to lists; anything else is refused (never an open relay)."""

    def __init__(self, config: Config):
        self._by_address: dict[str, Recipient] = {}
        for mlist in config.lists:
            self._by_address[mlist.address] = Recipient(mlist, "post")
            self._by_address[mlist.bounce_address] = Recipient(mlist, "bounces")
            self._by_address[mlist.moderation_address] = Recipient(mlist, "moderation")

        self._news_lists = sum(1 for m in config.lists if m.news_server)

    def lookup(self, address: str) -> Recipient | None:
        return self._by_address.get(address.strip().strip("<>").lower())

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


def bounce_report_decision(ruleset: RuleSet) -> Decision:
    return Decision("discard", "A message to the list's bounce address is a delivery report; it is "
                    "recorded, never distributed.", "bounce", "builtin", "rules",
                    "sent to the bounce address", ruleset.digest)


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


class FastData(SMTP):
    """smtp_DATA as in aiosmtpd (checks, 354, size limit 552, handler hook), reading with read_data(),
    and aiosmtpd's address parsing without the typing.Protocol class it defines on every call."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if not arg:
            return "", ""
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
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await read_data(self._reader, self.data_size_limit)
        except DataTooLarge:
            await self.push("552 Error: Too much mail data")
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
    """Thin: it asks small questions of the directory, decide() and the store, and answers."""

    def __init__(self, config: Config, rules: Callable[[], RuleSet], writer: GroupWriter,
                 reader: sqlite3.Connection, secret: bytes, on_accepted: Callable[[], None],
                 lmtp: bool = False):
        self.config = config
        self.rules = rules
        self.writer = writer
        self.reader = reader
        self.secret = secret
        self.on_accepted = on_accepted
        self.lmtp = lmtp
        self.directory = ListDirectory(config)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.directory.lookup(address) is None:
            return f"550 5.1.1 <{reply_text(address, 200)}>: no such list here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients in one transaction; send the rest separately"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def _moderation_reply(self, raw: bytes, mail_from: str, addresses: list[str]) -> str:
        """A reply to a digest (or a poster's withdraw) sent to LIST-moderation@: applied, audited
        and receipted in one transaction; bounces and auto-replies are ignored, never answered."""
        target = self.directory.lookup(addresses[0])
        assert target is not None
        probe = parse(raw, mail_from)
        auto = [v.lower() for v in probe.header("auto-submitted") if not v.lower().startswith("no")]
        if not mail_from or auto:
            return "250 2.0.0 Not applied: automatic messages are not moderation replies"
        config, secret = self.config, self.secret

        def job(conn):
            at = time.time()
            receipt = apply_reply(conn, secret, config, raw, via_list=target.mlist, at=at)
            send_receipts(conn, receipt, config, raw, at)
            return receipt
        try:
            receipt = await asyncio.wrap_future(self.writer.submit(job))
        except StoreError:
            return "451 4.3.0 The reply could not be stored; please try again later"
        except Exception:
            log.exception("unexpected error while applying a moderation reply from %s", mail_from)
            return "451 4.3.0 Internal error while applying the reply; please try again later"
        self.on_accepted()
        applied = sum(1 for r in receipt.results if r.applied)
        return f"250 2.0.0 Reply received: {applied} of {len(receipt.results)} command(s) applied; a receipt follows"

    def judge(self, raw: bytes, mail_from: str, rcpt_tos: list[str]) -> tuple[Post, list[Judged]]:
        post = parse(raw, mail_from)
        ruleset = self.rules()  # one complete rule set judges the whole message, even mid-reload
        judged: list[Judged] = []
        seen: set[tuple[str, str]] = set()
        now = time.time()
        skip = self.directory.crosspost_deputies(post, rcpt_tos)
        for address in rcpt_tos:
            target = self.directory.lookup(address)
            if target is None or (target.mlist.address, target.role) in seen or target.mlist.address in skip:
                continue
            seen.add((target.mlist.address, target.role))
            mlist = target.mlist
            if target.role == "bounces":
                judged.append(Judged(mlist, bounce_report_decision(ruleset)))
                continue
            ctx = build_context(self.reader, post, mlist, self.config, ruleset, now)
            judged.append(Judged(mlist, decide(post, ctx, ruleset), context_json(ctx), thread_key(post)))
        return post, judged

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        if mail_from == "<>":
            mail_from = ""
        rcpts = list(envelope.rcpt_tos)
        replies = [a for a in rcpts if (t := self.directory.lookup(a)) and t.role == "moderation"]
        posts = [a for a in rcpts if a not in replies]
        answers: dict[str, str] = {}
        if replies:
            reply_answer = await self._moderation_reply(raw, mail_from, replies)
            answers.update((a, reply_answer) for a in replies)
        records: list[PostRecord] = []
        if posts:
            peer = f"{session.peer[0]}:{session.peer[1]}" if isinstance(session.peer, tuple) else str(session.peer)
            stored = await self._store_post(raw, mail_from, posts, peer)
            if isinstance(stored, str):  # 451: nothing was stored for these recipients
                answers.update((a, stored) for a in posts)
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
                                        else _answer(record, news=news))
        if self.lmtp:
            return "\r\n".join(answers[a] for a in rcpts)  # LMTP: one reply per recipient, in RCPT order
        if replies and not posts:
            return answers[replies[0]]
        return _smtp_answer(records, [answers[a] for a in posts])

    async def _store_post(self, raw: bytes, mail_from: str, rcpts: list[str],
                          peer: str) -> list[PostRecord] | str:
        """Judge and commit the post for its lists; the records, or the 451 reply when it could not be stored."""
        try:
            post, judged = self.judge(raw, mail_from, rcpts)
            future = self.writer.submit(lambda conn: record_intake(
                conn, self.secret, raw=raw, envelope_from=mail_from, rcpt_tos=rcpts, peer=peer,
                post=post, judged=judged, hostname=self.config.server.hostname))
            records = await asyncio.wrap_future(future)
        except StoreError as err:
            log.error("could not commit a message from %s: %s", mail_from or "<>", err)
            return "451 4.3.0 The message could not be stored; please try again later"
        except Exception:  # never crash, never lose: the sender will retry
            log.exception("unexpected error while receiving a message from %s", mail_from or "<>")
            return "451 4.3.0 Internal error while storing the message; please try again later"
        if any(r.state == "accepted" for r in records):
            self.on_accepted()
        return records


def _answer(record: PostRecord | None, news: bool = False) -> str:
    if record is None:
        return "250 2.0.0 OK"
    if record.state == "rejected" and news:
        return _reply("250", "2.0.0", f"Rejected; the poster is told by mail: {record.reason}")
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
