"""Digests of held posts for the moderators: one multipart/digest message per list (RFC 2046 5.1.5),
a plain-text summary with the exact commands to reply with, then each held post attached."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import sqlite3
import textwrap
import time
from dataclasses import dataclass
from email.charset import QP, Charset
from email.message import Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.policy import compat32

from . import tokens
from .config import ListConfig
from .message import parse
from .posts import PostRecord, held_posts
from .store import insert


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
    return bool(core) and hmac.compare_digest(mac, digest_mac(secret, mlist_address, core))


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class Digest:
    list: str
    message_id: str
    posts: tuple[PostRecord, ...]
    data: bytes


def _excerpt(raw: bytes) -> list[str]:
    lines = [t.strip() for t in parse(raw).body.splitlines() if t.strip() and not t.startswith(">")]
    return [textwrap.shorten(t, 76, placeholder=" ...") for t in lines[:2]]


def decided_since(conn: sqlite3.Connection, mlist: ListConfig, since: float) -> list[str]:
    rows = conn.execute(
        "SELECT short_id, state, actor, reason FROM posts WHERE list = ? AND short_id IS NOT NULL "
        "AND state != 'held' AND decided_at > ? ORDER BY decided_at", (mlist.address, since)).fetchall()
    out = []
    for short_id, state, actor, reason in rows:
        who = actor.split(":", 1)[1] if ":" in actor else actor
        out.append(f"{short_id} {state} by {who}" + (f" ({reason})" if state == "rejected" else ""))
    return out


def build_digest(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, hostname: str,
                 at: float | None = None) -> Digest | None:
    """The digest of every post held for `mlist` now; None when nothing is held."""
    at = time.time() if at is None else at
    held = held_posts(conn, mlist.address)
    if not held:
        return None
    last = conn.execute("SELECT MAX(sent_at) FROM digests WHERE list = ?", (mlist.address,)).fetchone()[0]
    decided = decided_since(conn, mlist, last or 0.0)
    raws = {pid: raw for pid, raw in conn.execute(
        f"SELECT p.id, m.raw FROM posts p JOIN messages m ON m.id = p.message WHERE p.id IN "
        f"({','.join('?' * len(held))})", [p.id for p in held])}
    escalated = {pid for (pid,) in conn.execute(
        "SELECT id FROM posts WHERE list = ? AND state = 'held' AND escalated = 1", (mlist.address,))}
    message_id = digest_message_id(secret, mlist, at, hostname)
    oldest = max(at - p.created_at for p in held)
    lines = [f"{len(held)} post(s) to {mlist.address} await moderation (the oldest for {_age(oldest)}).", ""]
    if decided:
        lines += ["Decided since the last digest: " + "; ".join(decided), ""]
    for n, post in enumerate(held, start=1):
        cid = tokens.command_id(post.short_id or "", tokens.post_token(secret, mlist.address, post.id,
                                                                       post.short_id or ""))
        flags = []
        if post.id in escalated:
            flags.append("ESCALATED")
        if at - post.created_at > mlist.remind_after:
            flags.append(f"REMINDER: waiting for {_age(at - post.created_at)}")
        lines.append(f"[{n}] {post.short_id}  held {_age(at - post.created_at)}  from {post.sender or '<>'}"
                     + (f"  ({', '.join(flags)})" if flags else ""))
        lines.append(f"    Subject: {post.subject or '(no subject)'}")
        lines.append(f"    Held by {post.rule} ({post.source}): {post.reason}")
        lines += [f"    | {t}" for t in _excerpt(raws.get(post.id, b""))]
        lines.append(f"    approve {cid}")
        lines.append(f"    reject {cid} <reason for the poster>")
        lines.append(f"    discard {cid}")
        lines.append("")
    lines += ["Reply to this message with one command per line, above the quoted text:",
              "  approve ID   reject ID reason   discard ID   defer ID (leave it held)",
              "  trust ID (approve; this sender posts without review from now on)",
              "  ban ID (reject; later posts from this sender are rejected)",
              "  approve all   reject all reason   (every post in this digest)", ""]
    outer = MIMEMultipart("digest")
    outer["Subject"] = f"[{mlist.address}] {len(held)} held post(s) await moderation"
    outer["From"] = email.utils.formataddr((f"{mlist.address} moderation", mlist.moderation_address))
    outer["To"] = ", ".join(mlist.moderators) or mlist.owner or mlist.owner_alias
    outer["Reply-To"] = mlist.moderation_address
    outer["Date"] = email.utils.formatdate(at, localtime=True)
    outer["Message-ID"] = message_id
    outer["Auto-Submitted"] = "auto-generated"
    outer["X-Loop"] = mlist.address
    text = "\n".join(lines)
    if text.isascii():
        summary = MIMEText(text, "plain", "us-ascii")
    else:  # quoted-printable, not base64: the commands stay readable in any client's source view
        charset = Charset("utf-8")
        charset.body_encoding = QP
        summary = MIMEText(text, "plain", charset)  # type: ignore[arg-type]  # a Charset is accepted
    outer.attach(summary)
    for post in held:
        inner: Message = BytesParser(policy=compat32).parsebytes(raws.get(post.id, b""))
        outer.attach(MIMEMessage(inner))
    # no folding of headers under 998 characters: a Message-ID folded onto a continuation line is
    # legal, but some clients then fail to thread the replies under it
    data = outer.as_bytes(policy=compat32.clone(linesep="\r\n", max_line_length=998))
    return Digest(mlist.address, message_id, tuple(held), data)


def record_digest(conn: sqlite3.Connection, digest: Digest, at: float) -> int:
    digest_id = insert(conn, "INSERT INTO digests (list, message_id, sent_at, items) VALUES (?, ?, ?, ?)",
                       (digest.list, digest.message_id, at, len(digest.posts)))
    conn.executemany("INSERT INTO digest_items (digest, post) VALUES (?, ?)",
                     [(digest_id, p.id) for p in digest.posts])
    return digest_id


def digest_due(conn: sqlite3.Connection, mlist: ListConfig, at: float) -> bool:
    """A digest is due when something is held that no digest showed yet and either the interval
    has passed, the queue is long, or a post was escalated; or when reminders are due."""
    last = conn.execute("SELECT MAX(sent_at) FROM digests WHERE list = ?", (mlist.address,)).fetchone()[0]
    new = conn.execute(
        "SELECT COUNT(*), COALESCE(MAX(escalated), 0) FROM posts p WHERE list = ? AND state = 'held' "
        "AND NOT EXISTS (SELECT 1 FROM digest_items d WHERE d.post = p.id)", (mlist.address,)).fetchone()
    held = conn.execute("SELECT COUNT(*), MIN(created_at) FROM posts WHERE list = ? AND state = 'held'",
                        (mlist.address,)).fetchone()
    interval_passed = last is None or at - last >= mlist.digest_every
    if new[0] and (interval_passed or held[0] >= mlist.digest_max_items or new[1]):
        return True
    return bool(held[0]) and interval_passed and held[1] is not None and at - held[1] > mlist.remind_after

