"""Moderation replies mailed to LIST-moderation@: stored with their 250, applied later by the
moderation worker (as replies found over IMAP are), and set aside with the reason when they fail."""

from __future__ import annotations

import sqlite3

from ..store import insert


def store_reply(conn: sqlite3.Connection, list_address: str, raw: bytes, envelope_from: str,
                peer: str, at: float) -> int:
    return insert(conn, "INSERT INTO inbox (list, received_at, envelope_from, peer, raw, state) "
                  "VALUES (?, ?, ?, ?, ?, 'pending')", (list_address, at, envelope_from, peer, raw))


def pending_replies(conn: sqlite3.Connection, limit: int = 20) -> list[tuple[int, str, bytes]]:
    """The oldest replies not yet applied: (id, list, raw)."""
    return conn.execute("SELECT id, list, raw FROM inbox WHERE state = 'pending' ORDER BY id LIMIT ?",
                        (limit,)).fetchall()


def settle_reply(conn: sqlite3.Connection, reply_id: int, state: str, error: str, at: float) -> None:
    """'applied', or 'failed' with the reason; the raw reply is kept either way for the record."""
    conn.execute("UPDATE inbox SET state = ?, error = ?, done_at = ? WHERE id = ?",
                 (state, error, at, reply_id))
