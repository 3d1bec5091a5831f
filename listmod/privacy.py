"""What listmod keeps about a person, and how it lets go of it (docs/privacy.md).

`export`: everything stored about one address, as JSON. `forget`: their erasable data blanked
everywhere — their messages, their address wherever it appears (other people's messages, notices
and digests waiting in the outbox, servers' answers), the rendered reasons and evidence of the audit
records about them — while the audit chain still verifies, because it holds only their keyed
pseudonym and digests of the erasable text. What is under a legal hold (an escalated post whose
hold the owner has not released) is kept, and `forget` says so. Afterwards the store is rewritten
(VACUUM, then the WAL truncated) and the Maildirs under state_dir scrubbed, so that no byte of the
address is left under state_dir. `purge_expired`: the raw messages of decided posts, after their
list's `retain_messages`."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import audit
from .config import Config

FORGOTTEN = "[forgotten]"
# Columns that may hold an address in text someone else wrote (a Cc, a quote, a server's answer):
# the address is replaced there. The audit trail's hashed columns are never touched.
_SCRUBBED = {
    "messages": ("envelope_from", "rcpt_tos", "raw"),
    "posts": ("sender", "subject", "reason", "evidence", "context", "excerpt", "thread", "message_id"),
    "outbox": ("recipient", "envelope_from", "body", "last_error"),
    "inbox": ("envelope_from", "raw", "error"),
    "replies": ("sender", "summary"),
    "remotes": ("last_error",),
    "audit": ("reason", "evidence"),
}


@dataclass
class ForgetReport:
    address: str
    posts: int = 0              # their own posts, blanked
    mentions: int = 0           # other rows where the address was replaced
    audit_records: int = 0      # audit records whose erasable text was blanked
    removed: dict[str, int] = field(default_factory=dict)   # rows deleted: members, standing, ...
    held: list[str] = field(default_factory=list)           # posts kept under a legal hold
    files: int = 0              # Maildir files scrubbed or removed
    compacted: bool = False     # the store rewritten and its WAL emptied

    def summary(self) -> str:
        lines = [f"forgot {self.address}: {self.posts} post(s) blanked, {self.mentions} mention(s) replaced, "
                 f"{self.audit_records} audit record(s) erased, {self.files} Maildir file(s) scrubbed"]
        lines += [f"  removed {n} row(s) from {table}" for table, n in self.removed.items() if n]
        if self.held:
            lines.append(f"  KEPT under a legal hold (escalated, not released): post(s) {', '.join(self.held)}; "
                         "the address stays in them until the owner runs `listmod privacy release ID`")
        if not self.compacted:
            lines.append("  the store could not be rewritten now (busy); old pages go at the next `listmod "
                         "privacy forget` or when the daemon is stopped")
        return "\n".join(lines)


def _pattern(address: str) -> re.Pattern[bytes]:
    return re.compile(re.escape(address.strip().lower().encode()), re.I)


def _held_posts(conn: sqlite3.Connection) -> dict[int, str]:
    """Posts under a legal hold: escalated, and not released by the owner. id -> label."""
    return {pid: short or str(pid) for pid, short in conn.execute(
        "SELECT id, short_id FROM posts WHERE escalated = 1 AND hold_released IS NULL")}


def export(conn: sqlite3.Connection, secret: bytes, address: str) -> dict[str, Any]:
    """Everything stored about `address` (the GDPR's right of access), as one JSON-ready object."""
    address = address.strip().lower()
    alias = audit.pseudonym(secret, address)
    posts = [dict(zip(("id", "list", "state", "action", "rule", "reason", "subject", "message_id", "received",
                       "decided", "raw"), (*row[:10], row[10].decode("utf-8", "replace") if row[10] else ""),
                      strict=True))
             for row in conn.execute(
                 "SELECT p.id, p.list, p.state, p.action, p.rule, p.reason, p.subject, p.message_id, p.created_at, "
                 "p.decided_at, m.raw FROM posts p JOIN messages m ON m.id = p.message WHERE lower(p.sender) = ? "
                 "ORDER BY p.id", (address,))]
    return {
        "address": address,
        "pseudonym": alias,
        "memberships": [dict(zip(("list", "added_at", "nomail", "metoo"), r, strict=True)) for r in conn.execute(
            "SELECT list, added_at, nomail, metoo FROM members WHERE address = ?", (address,))],
        "standing": [dict(zip(("list", "standing", "set_at"), r, strict=True)) for r in conn.execute(
            "SELECT list, trust, set_at FROM standing WHERE address = ?", (address,))],
        "posts": posts,
        "audit": [dict(zip(("seq", "time", "list", "post", "action", "reason", "actor"), r, strict=True))
                  for r in conn.execute("SELECT seq, time, list, post, action, reason, actor FROM audit "
                                        "WHERE sender = ? OR actor LIKE ? ORDER BY seq", (alias, f"%:{alias}"))],
        "mail_to_them": [dict(zip(("id", "kind", "list", "state", "created_at"), r, strict=True))
                         for r in conn.execute("SELECT id, kind, list, state, created_at FROM outbox "
                                               "WHERE lower(recipient) = ? ORDER BY id", (address,))],
        "requests_waiting": [dict(zip(("list", "action", "expires_at"), r, strict=True)) for r in conn.execute(
            "SELECT list, action, expires_at FROM confirmations WHERE address = ?", (address,))],
        "moderators_notes": [dict(zip(("list", "note", "at"), r, strict=True)) for r in conn.execute(
            "SELECT list, note, at FROM member_notes WHERE address = ? ORDER BY at", (address,))],
        "appeals": [dict(zip(("id", "list", "appeal", "state", "outcome", "received_at"), r, strict=True))
                    for r in conn.execute("SELECT id, list, text, state, outcome, received_at FROM appeals "
                                          "WHERE address = ? ORDER BY id", (address,))],
        "moderation_replies": [dict(zip(("message_id", "received_at", "summary"), r, strict=True))
                               for r in conn.execute("SELECT message_id, received_at, summary FROM replies "
                                                     "WHERE lower(sender) = ?", (address,))],
        "mentioned_in_other_posts": conn.execute(
            "SELECT COUNT(*) FROM messages m WHERE instr(lower(CAST(m.raw AS TEXT)), ?) > 0 AND NOT EXISTS "
            "(SELECT 1 FROM posts p WHERE p.message = m.id AND lower(p.sender) = ?)", (address, address)).fetchone()[0],
        "note": "Server logs are outside listmod's store; with log_addresses = false they hold only the "
                "pseudonym above.",
    }


def forget(conn: sqlite3.Connection, secret: bytes, address: str, *, actor: str, reason: str,
           at: float | None = None) -> ForgetReport:
    """Blank everything about `address` in the store (inside the caller's transaction), legal holds
    excepted. Files and the store's free pages are `scrub_files` and `compact`, after the commit."""
    at = time.time() if at is None else at
    address = address.strip().lower()
    alias = audit.pseudonym(secret, address)
    pattern = _pattern(address)
    report = ForgetReport(address)
    held = _held_posts(conn)
    held_messages = {m for (m,) in conn.execute(
        f"SELECT message FROM posts WHERE id IN ({','.join('?' * len(held))})", tuple(held))} if held else set()

    # their own posts: the message and what was derived from it
    own = conn.execute("SELECT id, message FROM posts WHERE lower(sender) = ?", (address,)).fetchall()
    for post_id, message in own:
        if post_id in held or message in held_messages:
            report.held.append(held.get(post_id, str(post_id)))
            continue
        conn.execute("UPDATE posts SET sender = '', subject = '', reason = '', evidence = '', context = '', "
                     "excerpt = '' WHERE id = ?", (post_id,))
        conn.execute("UPDATE messages SET raw = X'', envelope_from = '', peer = '' WHERE id = ?", (message,))
        conn.execute("DELETE FROM outbox WHERE post = ? AND state IN ('pending', 'failed')", (post_id,))
        report.posts += 1

    # the address wherever else it appears
    needle = address
    for table, columns in _SCRUBBED.items():
        key = "seq" if table == "audit" else ("message_id" if table == "replies" else
                                              "remote" if table == "remotes" else "id")
        for column in columns:
            post_column = {"posts": "id", "outbox": "post"}.get(table, "NULL")
            rows = conn.execute(f"SELECT {key}, {column}, {post_column} FROM {table} WHERE "
                                f"instr(lower(CAST({column} AS TEXT)), ?) > 0", (needle,)).fetchall()
            for ident, value, post in rows:
                if (table == "messages" and ident in held_messages) or post in held:
                    continue   # the evidence of a post under a legal hold stays whole
                if table == "audit":
                    continue   # audit text is erased whole below, never rewritten
                if isinstance(value, bytes):
                    new: Any = pattern.sub(FORGOTTEN.encode(), value)
                else:
                    new = re.sub(re.escape(address), FORGOTTEN, value, flags=re.I)
                conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (new, ident))
                report.mentions += 1

    # the audit records about them (their pseudonym as sender or actor, or the address in the text)
    held_ids = tuple(held)
    seqs = [s for (s,) in conn.execute(
        "SELECT seq FROM audit WHERE (sender = ? OR actor LIKE ? OR instr(lower(reason), ?) > 0 "
        "OR instr(lower(evidence), ?) > 0) AND (reason != '' OR evidence != '')"
        + (f" AND (post IS NULL OR post NOT IN ({','.join('?' * len(held_ids))}))" if held_ids else ""),
        (alias, f"%:{alias}", needle, needle, *held_ids))]
    if seqs:
        report.audit_records = audit.erase(conn, secret, seqs, actor=actor, reason=reason, at=at)

    # the rows that are about them alone
    for table, column in (("members", "address"), ("standing", "address"), ("confirmations", "address"),
                          ("notice_log", "recipient"), ("staff", "address"), ("member_notes", "address"),
                          ("appeals", "address"), ("appealable", "address")):
        report.removed[table] = conn.execute(f"DELETE FROM {table} WHERE lower({column}) = ?", (address,)).rowcount
    conn.execute("UPDATE member_notes SET author = '' WHERE lower(author) = ?", (address,))
    conn.execute("UPDATE posts SET claimed_by = NULL WHERE lower(claimed_by) = ?", (address,))
    conn.execute("UPDATE appeals SET decided_by = '' WHERE decided_by = ?", (f"moderator:{address}",))
    if not report.held:
        report.removed["people"] = conn.execute("DELETE FROM people WHERE pseudonym = ?", (alias,)).rowcount
    return report


def scrub_files(folders: list[Path], address: str) -> int:
    """Maildir files under these folders: a copy addressed to the person is removed, any other file
    that mentions the address has it replaced. The number of files changed."""
    pattern = _pattern(address)
    changed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if not path.is_file():
                continue
            data = path.read_bytes()
            if not pattern.search(data):
                continue
            head = data.split(b"\n\n", 1)[0]
            if re.search(rb"(?im)^delivered-to:[ \t]*" + pattern.pattern + rb"[ \t]*\r?$", head):
                path.unlink()
            else:
                path.write_bytes(pattern.sub(FORGOTTEN.encode(), data))
            changed += 1
    return changed


def compact(conn: sqlite3.Connection) -> bool:
    """Rewrite the store so that no old page keeps what was blanked, and empty the WAL. False when
    another connection kept the WAL from being emptied (the next checkpoint does it)."""
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute("VACUUM")
    busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0


def release_hold(conn: sqlite3.Connection, secret: bytes, post_id: int, *, actor: str, reason: str,
                 at: float | None = None) -> bool:
    """The owner lets an escalated post go from the legal hold: from now on it is forgotten and
    purged like any other. False when it was not under one."""
    at = time.time() if at is None else at
    row = conn.execute("SELECT p.list, p.message_id, p.sender, m.sha256 FROM posts p JOIN messages m "
                       "ON m.id = p.message WHERE p.id = ? AND p.escalated = 1 AND p.hold_released IS NULL",
                       (post_id,)).fetchone()
    if row is None:
        return False
    conn.execute("UPDATE posts SET hold_released = ? WHERE id = ?", (at, post_id))
    audit.append(conn, secret, list=row[0], post=post_id, message_id=row[1] or "", sha256=row[3],
                 sender=row[2] or "", action="hold-released", reason=reason, template=audit.FREE_TEXT,
                 rule="", source="command line", actor=actor, at=at)
    return True


def purge_expired(conn: sqlite3.Connection, config: Config, at: float, limit: int = 500) -> int:
    """Blank the raw messages whose posts were all decided longer ago than their list's
    retain_messages (0: kept), none under a legal hold, none with copies still waiting."""
    purged = 0
    for mlist in config.lists:
        if mlist.retain_messages <= 0:
            continue
        rows = conn.execute(
            "SELECT DISTINCT p.message FROM posts p JOIN messages m ON m.id = p.message "
            "WHERE p.list = ? AND p.state != 'held' AND p.decided_at < ? AND length(m.raw) > 0 "
            "AND NOT EXISTS (SELECT 1 FROM posts q WHERE q.message = p.message AND (q.state = 'held' "
            "  OR (q.escalated = 1 AND q.hold_released IS NULL) OR q.decided_at >= ?)) "
            "AND NOT EXISTS (SELECT 1 FROM outbox o JOIN posts q ON q.id = o.post WHERE q.message = p.message "
            "  AND o.state IN ('pending', 'sending')) LIMIT ?",
            (mlist.address, at - mlist.retain_messages, at - mlist.retain_messages, limit)).fetchall()
        for (message,) in rows:
            conn.execute("UPDATE messages SET raw = X'' WHERE id = ?", (message,))
            conn.execute("UPDATE posts SET excerpt = '', context = '' WHERE message = ?", (message,))
            purged += 1
    return purged


def export_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, default=str)
