"""Digests of held posts for the moderators: one multipart/digest message per list (RFC 2046 5.1.5),
a plain-text summary with the exact commands to reply with, then each held post attached."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import quopri
import secrets
import sqlite3
import textwrap
import time
import unicodedata
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32

from .. import appeals, audit, tokens
from ..config import Config, ListConfig
from ..ladder import leaders
from ..message import printable
from ..posts import POST_COLUMNS, PostRecord, enqueue_notice
from ..rawmail import crlf_lines
from ..stats import WEEK, weekly_summary
from ..store import insert
from ..threads import state_of
from ..tomlfile import format_duration
from .commands import digest_help, lines_under_post


def digest_mac(secret: bytes, list_address: str, core: str) -> str:
    digest = hmac.new(secret, f"digest\0{list_address}\0{core}".encode(), hashlib.sha256).hexdigest()
    return digest[:16]


def digest_message_id(secret: bytes, mlist: ListConfig, at: float, hostname: str) -> str:
    core = f"{mlist.list_id}.{int(at * 1000)}"
    return f"<digest.{core}.{digest_mac(secret, mlist.address, core)}@{hostname}>"


def verify_digest_id(secret: bytes, mlist_address: str, message_id: str) -> bool:
    """True when a Message-ID is one of our digests for that list (its HMAC checks out)."""
    inner = message_id.strip("<>").split("@", 1)[0]
    if not inner.startswith("digest."):
        return False
    core, _, mac = inner[len("digest."):].rpartition(".")
    return bool(core) and hmac.compare_digest(mac.encode("utf-8"), digest_mac(secret, mlist_address, core).encode())


@dataclass(frozen=True)
class Digest:
    list: str
    message_id: str
    posts: tuple[PostRecord, ...]   # every post the digest shows (new in full, older in one line)
    data: bytes
    deferred: int = 0               # new posts left for the next digest (digest_max_size)


def decided_since(conn: sqlite3.Connection, mlist: ListConfig, since: float) -> list[str]:
    """What was decided since the last digest, grouped by what and who, wrapped to 78 columns:
    "  approved by alice@example.org (3): K7Q2 9XWD ABCD"."""
    rows = conn.execute(
        "SELECT short_id, state, actor, reason FROM posts WHERE list = ? AND short_id IS NOT NULL "
        "AND state != 'held' AND decided_at > ? ORDER BY decided_at", (mlist.address, since)).fetchall()
    if not rows:
        return []
    groups: dict[tuple[str, str], list[str]] = {}
    for short_id, state, actor, reason in rows:
        who = actor.split(":", 1)[1] if ":" in actor else actor
        item = short_id + (f" ({textwrap.shorten(reason or '', 40, placeholder='...')})" if state == "rejected" else "")
        groups.setdefault((_VERB.get(state, state), who), []).append(item)
    lines = [f"Decided since the last digest ({len(rows)}):"]
    for (verb, who), items in groups.items():
        lines += textwrap.wrap(f"{verb} by {who} ({len(items)}): " + ", ".join(items), 78,
                               initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
    return lines


_VERB = {"accepted": "approved", "rejected": "rejected", "discarded": "discarded"}


@dataclass(frozen=True)
class _Shown:
    post: PostRecord
    size: int
    excerpt: str
    parsed: bool
    escalated: bool
    attach: bool


@dataclass(frozen=True)
class _Queue:
    """What a digest lists of a list's held posts, read with bounded queries: a queue of ten
    thousand costs the digest about what a queue of fifty does."""
    shown: list[_Shown]        # new posts (no digest showed them), escalated first, in full
    older: list[PostRecord]    # shown by an earlier digest and still waiting, one line each
    deferred: int              # new posts left for the next digest
    unlisted: int              # older posts not listed for want of room
    count: int                 # every held post of the list
    oldest: float | None       # when the oldest of them arrived


_P_COLUMNS = ", ".join(f"p.{c.strip()}" for c in POST_COLUMNS.split(","))
_HELD = "p.list = ? AND p.state = 'held'"


def _select(conn: sqlite3.Connection, mlist: ListConfig) -> _Queue:
    """Which held posts a digest shows in full (new ones, escalated first, up to digest_max_items
    and digest_max_size; a post larger than the cap alone is described, not attached), which in
    one line (shown by an earlier digest and still waiting, in the places left under
    digest_max_items), how many new ones wait for the next digest, and how many older ones are
    not listed. Each read goes through a partial index of the held queue (posts.digested marks
    the ones a digest listed), so none grows with the store or the queue but by a count."""
    # counts from the partial indexes alone (INDEXED BY: the planner would pick the (state, list)
    # index and read every held row)
    count, oldest = conn.execute(f"SELECT COUNT(*), MIN(p.created_at) FROM posts p INDEXED BY idx_posts_held "
                                 f"WHERE {_HELD}", (mlist.address,)).fetchone()
    if not count:
        return _Queue([], [], 0, 0, 0, None)
    new_count = conn.execute(f"SELECT COUNT(*) FROM posts p INDEXED BY idx_posts_held_new WHERE {_HELD} "
                             f"AND p.digested IS NULL", (mlist.address,)).fetchone()[0]
    new_escalated = conn.execute(f"SELECT COUNT(*) FROM posts p WHERE {_HELD} AND p.escalated = 1 "
                                 f"AND p.digested IS NULL", (mlist.address,)).fetchone()[0] if new_count else 0
    shown: list[_Shown] = []
    total = 0
    if new_count:
        # every escalated post goes out at once; of the others, at most digest_max_items (the
        # longest waiting first); each read walks its partial index only as far as it takes
        columns = f"SELECT {_P_COLUMNS}, m.size, p.excerpt, p.parsed, COALESCE(p.escalated, 0) FROM posts p " \
                  f"JOIN messages m ON m.id = p.message WHERE {_HELD} AND p.digested IS NULL"
        rows = conn.execute(f"{columns} AND p.escalated = 1 ORDER BY p.created_at, p.id",
                            (mlist.address,)).fetchall() if new_escalated else []
        rows += conn.execute(f"{columns} AND COALESCE(p.escalated, 0) != 1 ORDER BY p.created_at, p.id LIMIT ?",
                             (mlist.address, mlist.digest_max_items)).fetchall()
        for row in rows:
            post = PostRecord(*row[:-4])
            size, excerpt, parsed, escalated = row[-4], row[-3] or "", row[-2], bool(row[-1])
            attach = size <= mlist.digest_max_size
            full = len(shown) >= mlist.digest_max_items or (attach and shown and total + size > mlist.digest_max_size)
            if not escalated and full:
                continue
            total += size if attach else 0
            shown.append(_Shown(post, size, excerpt, bool(parsed if parsed is not None else 1), escalated, attach))
    room = max(mlist.digest_max_items - len(shown), 0)
    older_count = count - new_count
    older: list[PostRecord] = []
    if older_count and room:   # escalated ones first, then the longest waiting
        older = [PostRecord(*row) for row in conn.execute(
            f"SELECT {_P_COLUMNS} FROM posts p WHERE {_HELD} AND p.escalated = 1 AND p.digested IS NOT NULL "
            f"ORDER BY p.created_at, p.id LIMIT ?", (mlist.address, room))]
        older += [PostRecord(*row) for row in conn.execute(
            f"SELECT {_P_COLUMNS} FROM posts p WHERE {_HELD} AND p.digested IS NOT NULL "
            f"AND COALESCE(p.escalated, 0) != 1 ORDER BY p.created_at, p.id LIMIT ?",
            (mlist.address, room - len(older)))] if room > len(older) else []
    return _Queue(shown, older, new_count - len(shown), older_count - len(older), count, oldest)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in text)


def _fit(text: str, width: int) -> str:
    """`text` cut (with '~') and padded to exactly `width` terminal columns."""
    text = printable(" ".join(text.split()))
    if _width(text) > width:
        out, used = [], 0
        for c in text:
            w = _width(c)
            if used + w > width - 1:
                break
            out.append(c)
            used += w
        text = "".join(out) + "~"
    return text + " " * (width - _width(text))


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


SUMMARY_LEGEND = "  ! escalated  ~ thread cooling/locked  @ claimed  + waiting past remind_after"


def summary_line(n: int, post: PostRecord, at: float, marks: str) -> str:
    """One held post in at most 79 columns: number, id, marks, age, sender, subject, rule."""
    return (f"{n:>2} {post.short_id or '':<6}{marks:<2}{_age(at - post.created_at):>4} "
            f"{_fit(post.sender or '<>', 22)} {_fit(post.subject or '(no subject)', 26)} "
            f"{_fit(post.rule or '-', 14)}").rstrip()


def build_digest(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, hostname: str,
                 at: float | None = None, health: list[str] | None = None) -> Digest | None:
    """The digest of the posts held for `mlist` now; None when nothing is held (nor appealed). It is
    made from what intake stored (sender, subject, excerpt) and the raw bytes, never from a fresh
    parse, so no post, however it is built, can stop a digest. It opens with one line per post (20
    fit an 80x24 screen), then what was decided, threads cooling down, appeals, then each post in
    full with the lines to reply with."""
    at = time.time() if at is None else at
    queue = _select(conn, mlist)
    appeal_lines = appeals.digest_lines(conn, secret, mlist, at)
    if not queue.count and not appeal_lines:
        return None
    shown, older, deferred, unlisted = queue.shown, queue.older, queue.deferred, queue.unlisted
    last = conn.execute("SELECT MAX(sent_at) FROM digests WHERE list = ?", (mlist.address,)).fetchone()[0]
    decided = decided_since(conn, mlist, last or 0.0)
    message_id = digest_message_id(secret, mlist, at, hostname)
    all_token = tokens.digest_token(secret, mlist.address, message_id)

    def command(post: PostRecord) -> str:
        return tokens.command_id(post.short_id or "", tokens.post_token(secret, mlist.address, post.id,
                                                                        post.short_id or ""))
    listed = [i.post for i in shown] + older
    context = _post_context(conn, mlist, listed, at)
    oldest = at - queue.oldest if queue.oldest is not None else 0.0
    appealed = len(appeals.open_appeals(conn, mlist.address)) if appeal_lines else 0
    lines = [f"{queue.count} post(s) to {mlist.address} await moderation (the oldest for {format_duration(oldest)})"
             + (f"; {appealed} appeal(s)" if appealed else "") + ":"] if queue.count else \
        [f"{appealed} appeal(s) for {mlist.address}:", ""]
    for n, post in enumerate(listed, start=1):
        lines.append(summary_line(n, post, at, context[post.id].marks))
    if deferred or unlisted:
        lines.append(f"   ... and {deferred + unlisted} more (digest_max_items); `listmod queue` lists them all")
    if listed:
        lines += [SUMMARY_LEGEND, ""]
    lines += health or []
    if decided:
        lines += decided + [""]
    lines += _thread_lines(conn, secret, mlist, at)
    lines += appeal_lines
    for n, item in enumerate(shown, start=1):
        post = item.post
        flags = []
        if item.escalated:
            flags.append("ESCALATED")
        if at - post.created_at > mlist.remind_after:
            flags.append(f"REMINDER: waiting for {format_duration(at - post.created_at)}")
        if not item.attach:
            flags.append(f"{item.size:,} bytes: too large to attach; `listmod queue` shows it")
        elif not item.parsed:
            flags.append("could not be parsed: attached as raw bytes")
        lines.append(f"[{n}] {post.short_id}  held {format_duration(at - post.created_at)}  from {post.sender or '<>'}"
                     + (f"  ({', '.join(flags)})" if flags else ""))
        lines.append(f"    Subject: {post.subject or '(no subject)'}")
        lines.append(f"    Held by {post.rule} ({post.source}): {post.reason}")
        lines += [f"    {x}" for x in context[post.id].notes]
        lines += [f"    | {t}" for t in item.excerpt.splitlines()]
        cid = command(post)
        lines += lines_under_post(cid) + [""]
    if older:
        lines.append(f"Still waiting (shown in an earlier digest), {len(older)}"
                     + (f" of {len(older) + unlisted}" if unlisted else "") + ":")
        for n, post in enumerate(older, start=len(shown) + 1):
            marks = context[post.id].marks
            flags = [f for f, on in (("ESCALATED", "!" in marks),
                                     (f"REMINDER: waiting for {format_duration(at - post.created_at)}",
                                      at - post.created_at > mlist.remind_after)) if on]
            lines.append(f"  [{n}] {command(post)}  held {format_duration(at - post.created_at)}  {post.sender or '<>'}  "
                         f"{textwrap.shorten(post.subject or '(no subject)', 50, placeholder='...')}  ({post.rule})"
                         + (f"  ({', '.join(flags)})" if flags else ""))
            lines += [f"      {x}" for x in context[post.id].notes]
        lines.append("")
    if deferred:
        lines += [f"{deferred} more new post(s) wait for the next digest (this one is at its limit, "
                  f"digest_max_items or digest_max_size).", ""]
    lines += digest_help(all_token)
    attached = [i for i in shown if i.attach]
    raws = dict(conn.execute(
        f"SELECT p.id, m.raw FROM posts p JOIN messages m ON m.id = p.message WHERE p.id IN "
        f"({','.join('?' * len(attached))})", [i.post.id for i in attached])) if attached else {}
    data = _assemble(mlist, message_id, at, queue.count, "\n".join(lines), audit.head_header(conn),
                     [(i.post, raws.get(i.post.id, b""), i.parsed) for i in attached])
    return Digest(mlist.address, message_id, tuple(listed), data, deferred)


@dataclass(frozen=True)
class _Context:
    marks: str
    notes: tuple[str, ...]


def _post_context(conn: sqlite3.Connection, mlist: ListConfig, posts: list[PostRecord],
                  at: float) -> dict[int, _Context]:
    """Per listed post: its marks for the summary, and the lines shown under it (the thread's
    cool-down or lock, a moderator's claim, the moderators' notes on the sender)."""
    out = {}
    notes_of: dict[str, list[str]] = {}
    for post in posts:
        escalated, thread, claimed_by, claimed_at = conn.execute(
            "SELECT COALESCE(escalated, 0), COALESCE(thread, ''), claimed_by, claimed_at FROM posts WHERE id = ?",
            (post.id,)).fetchone()
        state = state_of(conn, mlist.address, thread, at)
        lines, marks = [], ""
        if escalated:
            marks += "!"
        if state.state:
            marks += "~"
            lines.append("Thread: " + ("LOCKED by the moderators" if state.state == "locked" else
                                       f"COOLING DOWN until {time.strftime('%H:%M UTC', time.gmtime(state.until or 0))}"))
        if claimed_by and at - (claimed_at or 0) <= mlist.claim_for:
            marks += "@"
            lines.append(f"Claimed by {claimed_by} until "
                         f"{time.strftime('%H:%M UTC', time.gmtime((claimed_at or 0) + mlist.claim_for))}")
        if at - post.created_at > mlist.remind_after:
            marks += "+"
        if post.sender and post.sender not in notes_of:
            notes_of[post.sender] = [
                f"Note on {post.sender} ({author}, {time.strftime('%Y-%m-%d', time.gmtime(when))}): "
                f"{textwrap.shorten(note, 160, placeholder='...')}"
                for note, author, when in conn.execute(
                    "SELECT note, author, at FROM member_notes WHERE list = ? AND address = ? ORDER BY at DESC LIMIT 3",
                    (mlist.address, post.sender.lower()))]
        lines += notes_of.get(post.sender, [])
        out[post.id] = _Context(marks[:2], tuple(lines))
    return out


def _thread_lines(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, at: float) -> list[str]:
    """The threads cooling down or locked now, with what ends them and, when a post of the thread
    is held, the lines to copy (a post's token is the authority over its thread)."""
    rows = conn.execute("SELECT key, COALESCE(subject, ''), state, until FROM threads WHERE list = ? AND "
                        "state IN ('cooling', 'locked') AND (state = 'locked' OR until > ?) ORDER BY until",
                        (mlist.address, at)).fetchall()
    if not rows:
        return []
    lines = [f"Threads cooling down or locked ({len(rows)}):"]
    for key, subject, state, until in rows[:20]:
        when = "locked" if state == "locked" else f"cooling until {time.strftime('%H:%M UTC', time.gmtime(until))}"
        lines.append(f"  {_fit(subject or '(no subject)', 50).rstrip()}  {when}")
        held = conn.execute("SELECT id, short_id FROM posts WHERE list = ? AND thread = ? AND state = 'held' "
                            "ORDER BY created_at DESC LIMIT 1", (mlist.address, key)).fetchone()
        if held:
            cid = tokens.command_id(held[1], tokens.post_token(secret, mlist.address, held[0], held[1]))
            lines.append(f"      unlock {cid}" + ("" if state == "locked" else f"    lock {cid}"))
    return lines + [""]


def _assemble(mlist: ListConfig, message_id: str, at: float, count: int, summary: str, audit_head: str,
              attachments: list[tuple[PostRecord, bytes, bool]]) -> bytes:
    """The multipart/digest written out by hand: each held post goes in as its stored bytes
    (message/rfc822), or as an opaque file when it could not be parsed, never re-serialised."""
    boundary = "listmod-digest-" + secrets.token_hex(12)
    while any(boundary.encode() in raw for _, raw, _ in attachments):
        boundary = "listmod-digest-" + secrets.token_hex(12)
    head = Message(policy=compat32)
    head["Subject"] = f"[{mlist.address}] {count} held post(s) await moderation"
    head["From"] = email.utils.formataddr((f"{mlist.address} moderation", mlist.moderation_address))
    head["To"] = ", ".join(mlist.moderators) or mlist.owner or mlist.owner_alias
    head["Reply-To"] = mlist.moderation_address
    head["Date"] = email.utils.formatdate(at, localtime=True)
    head["Message-ID"] = message_id
    head["Auto-Submitted"] = "auto-generated"
    head["X-Loop"] = mlist.address
    head["Audit-Head"] = audit_head  # a witness of the audit chain, kept in the moderators' mailboxes
    # no folding under 998 characters: a Message-ID folded onto a continuation line is legal, but
    # some clients then fail to thread the replies under it
    out = [head.as_bytes(policy=compat32.clone(linesep="\r\n", max_line_length=998)).rstrip(b"\r\n"),
           b"MIME-Version: 1.0", f'Content-Type: multipart/digest; boundary="{boundary}"'.encode(),
           b"", b"This is a digest of held posts in MIME format (RFC 2046).", f"--{boundary}".encode()]
    text = summary.encode("utf-8")
    if text.isascii():
        out += [b"Content-Type: text/plain; charset=us-ascii", b"Content-Transfer-Encoding: 7bit", b"",
                text.replace(b"\n", b"\r\n")]
    else:  # quoted-printable, not base64: the commands stay readable in any client's source view
        encoded = quopri.encodestring(text).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        out += [b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: quoted-printable",
                b"", encoded.rstrip(b"\r\n")]
    for post, raw, parsed in attachments:
        out.append(f"--{boundary}".encode())
        if parsed:
            out += [b"Content-Type: message/rfc822", f"Content-Description: held post {post.short_id}".encode(),
                    b"", crlf_lines(raw).rstrip(b"\r\n")]
        else:
            name = f"held-{post.short_id}.eml"
            out += [f'Content-Type: application/octet-stream; name="{name}"'.encode(),
                    f'Content-Disposition: attachment; filename="{name}"'.encode(),
                    b"Content-Transfer-Encoding: base64", b"",
                    base64.encodebytes(raw).replace(b"\n", b"\r\n").rstrip(b"\r\n")]
    out += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(out)


def record_digest(conn: sqlite3.Connection, digest: Digest, at: float) -> int:
    digest_id = insert(conn, "INSERT INTO digests (list, message_id, sent_at, items, deferred) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (digest.list, digest.message_id, at, len(digest.posts), digest.deferred))
    conn.executemany("INSERT OR IGNORE INTO digest_items (digest, post) VALUES (?, ?)",
                     [(digest_id, p.id) for p in digest.posts])
    conn.executemany("UPDATE posts SET digested = ? WHERE id = ? AND digested IS NULL",
                     [(at, p.id) for p in digest.posts])
    return digest_id


def queue_digest(conn: sqlite3.Connection, digest: Digest, mlist: ListConfig, imap_folder: str | None,
                 mail_moderators: bool, at: float) -> None:
    """A digest is an outbox row with its bytes: APPENDed to the IMAP folder, or written to the
    local Maildir (and mailed to each moderator when there is a smarthost); no restart or outage
    loses it."""
    target = f"imap:{imap_folder}" if imap_folder is not None else "maildir"
    conn.execute(
        "INSERT INTO outbox (post, kind, list, recipient, envelope_from, body, state, attempts, "
        "next_attempt, created_at) VALUES (NULL, 'digest', ?, ?, ?, ?, 'pending', 0, ?, ?)",
        (mlist.address, target, mlist.bounce_address, digest.data, at, at))
    if imap_folder is None and mail_moderators:
        for moderator in mlist.moderators:
            enqueue_notice(conn, None, mlist, moderator, digest.data, at)
    if mlist.leaders_moderate and mail_moderators:   # leaders have no access to the moderators' folder
        for leader in leaders(conn, mlist, at):
            if leader not in mlist.moderators:
                enqueue_notice(conn, None, mlist, leader, digest.data, at)


def make_digest(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, at: float,
                force: bool = False) -> Digest | None:
    """Build, record and queue a digest in one transaction (it is recorded if and only if it will
    be delivered) when one is due, or (`force`, as `listmod digest send` asks) whenever posts are held."""
    if not force and not digest_due(conn, mlist, at):
        return None
    health = None
    if mlist.health_summary:
        last_health = conn.execute("SELECT MAX(health) FROM digests WHERE list = ?", (mlist.address,)).fetchone()[0]
        if (last_health is None or at - last_health >= WEEK) and conn.execute(
                "SELECT 1 FROM posts WHERE list = ? AND created_at < ? LIMIT 1", (mlist.address, at - WEEK)).fetchone():
            health = weekly_summary(conn, mlist.address, at)   # a list with a week of history
    digest = build_digest(conn, secret, mlist, config.server.hostname, at, health)
    if digest is None:
        return None
    record_digest(conn, digest, at)
    if health:
        conn.execute("UPDATE digests SET health = ? WHERE message_id = ?", (at, digest.message_id))
    queue_digest(conn, digest, mlist, config.imap.digest_folder if config.imap else None,
                 config.outbound is not None, at)
    return digest


def digest_due(conn: sqlite3.Connection, mlist: ListConfig, at: float) -> bool:
    """A digest is due when something is held that no digest showed yet and either the interval
    has passed, a full digest's worth (digest_max_items) of such posts waits, or a post was
    escalated; or when reminders are due. After a digest that reached its size limit, the rest wait
    for the interval (escalations do not). Counting only the posts no digest showed keeps a long
    queue from sending a digest for every post that joins it."""
    last, deferred = conn.execute("SELECT sent_at, COALESCE(deferred, 0) FROM digests WHERE list = ? "
                                  "ORDER BY sent_at DESC LIMIT 1", (mlist.address,)).fetchone() or (None, 0)
    new = conn.execute(
        "SELECT COUNT(*), COALESCE(MAX(escalated), 0) FROM posts WHERE list = ? AND state = 'held' "
        "AND digested IS NULL", (mlist.address,)).fetchone()
    held = conn.execute("SELECT COUNT(*), MIN(created_at) FROM posts INDEXED BY idx_posts_held "
                        "WHERE list = ? AND state = 'held'", (mlist.address,)).fetchone()   # index-only, every tick
    if conn.execute("SELECT 1 FROM appeals WHERE list = ? AND state = 'open' AND received_at > ? LIMIT 1",
                    (mlist.address, last or 0.0)).fetchone():
        return True   # an appeal waits for a moderator who has not seen it
    interval_passed = last is None or at - last >= mlist.digest_every
    long_queue = new[0] >= mlist.digest_max_items and not deferred
    if new[0] and (interval_passed or long_queue or new[1]):
        return True
    return bool(held[0]) and interval_passed and held[1] is not None and at - held[1] > mlist.remind_after
