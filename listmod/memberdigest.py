"""Digests for members who chose them (`options digest on`): instead of each post, one MIME digest
(multipart/digest, RFC 2046 5.1.5) of the posts accepted since the last one, every
`member_digest_every` (a day). Each post goes in as the bytes it was received with."""

from __future__ import annotations

import email.utils
import secrets
import sqlite3
import time
from email.message import Message
from email.policy import compat32

from .config import ListConfig
from .posts import enqueue_notice
from .rawmail import crlf_lines

MAX_POSTS = 200   # the rest go in the next digest


def digest_members(conn: sqlite3.Connection, mlist: ListConfig) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT address FROM members WHERE list = ? AND digest = 1 AND nomail = 0 AND disabled_at IS NULL "
        "ORDER BY address", (mlist.address,))]


def send_due(conn: sqlite3.Connection, mlist: ListConfig, hostname: str, at: float, force: bool = False) -> int:
    """Queue the list's member digest if one is due (inside the caller's transaction); how many
    members it goes to."""
    last = conn.execute("SELECT sent_at, last_post FROM member_digests WHERE list = ?", (mlist.address,)).fetchone()
    sent_at, last_post = last if last else (None, 0)
    if last is None:   # the first time: start from now, not from the list's whole history
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM posts WHERE list = ?", (mlist.address,)).fetchone()[0]
        conn.execute("INSERT INTO member_digests (list, sent_at, last_post) VALUES (?, ?, ?)",
                     (mlist.address, at, top))
        if not force:
            return 0
        sent_at, last_post = at, 0
    if not force and sent_at is not None and at - sent_at < mlist.member_digest_every:
        return 0
    recipients = digest_members(conn, mlist)
    rows = conn.execute(
        "SELECT p.id, p.subject, m.raw FROM posts p JOIN messages m ON m.id = p.message WHERE p.list = ? "
        "AND p.state = 'accepted' AND p.id > ? AND length(m.raw) > 0 ORDER BY p.id LIMIT ?",
        (mlist.address, last_post, MAX_POSTS)).fetchall()
    if not rows or not recipients:
        conn.execute("UPDATE member_digests SET sent_at = ?, last_post = MAX(last_post, ?) WHERE list = ?",
                     (at, rows[-1][0] if rows else last_post, mlist.address))
        return 0
    data = assemble(mlist, [(subject or "(no subject)", raw) for _pid, subject, raw in rows], hostname, at)
    for member in recipients:
        enqueue_notice(conn, None, mlist, member, data, at)
    conn.execute("UPDATE member_digests SET sent_at = ?, last_post = ? WHERE list = ?", (at, rows[-1][0], mlist.address))
    return len(recipients)


def assemble(mlist: ListConfig, posts: list[tuple[str, bytes]], hostname: str, at: float) -> bytes:
    boundary = "listmod-member-digest-" + secrets.token_hex(12)
    while any(boundary.encode() in raw for _, raw in posts):
        boundary = "listmod-member-digest-" + secrets.token_hex(12)
    head = Message(policy=compat32)
    head["From"] = email.utils.formataddr((mlist.address, mlist.address))
    head["To"] = mlist.address
    head["Subject"] = f"[{mlist.local_part}] digest of {len(posts)} post(s), {time.strftime('%Y-%m-%d', time.gmtime(at))}"
    head["Date"] = email.utils.formatdate(at, localtime=True)
    head["Message-ID"] = email.utils.make_msgid("listmod-digest", domain=hostname)
    head["List-Id"] = f"<{mlist.list_id}>"
    head["List-Post"] = f"<mailto:{mlist.address}>"
    head["List-Unsubscribe"] = f"<mailto:{mlist.request_address}?subject=unsubscribe>"
    head["Precedence"] = "list"
    head["X-Loop"] = mlist.address
    contents = "\r\n".join(f"  {n}. {subject[:200]}" for n, (subject, _raw) in enumerate(posts, 1))
    out = [head.as_bytes(policy=compat32.clone(linesep="\r\n", max_line_length=998)).rstrip(b"\r\n"),
           b"MIME-Version: 1.0", f'Content-Type: multipart/digest; boundary="{boundary}"'.encode(), b"",
           f"--{boundary}".encode(), b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: 8bit",
           b"", f"{mlist.address}: {len(posts)} post(s)\r\n\r\n{contents}\r\n\r\nTo get each post as it comes, "
           f"send \"options digest off\" to {mlist.request_address}.".encode()]
    for _subject, raw in posts:
        out += [f"--{boundary}".encode(), b"Content-Type: message/rfc822", b"", crlf_lines(raw).rstrip(b"\r\n")]
    out += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(out)
