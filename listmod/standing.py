"""Membership and members' options: the one place they change, for the command line, the daemon
and requests by mail alike, and every change is an audit record with its reason. Trust levels and
sanctions are in ladder.py."""

from __future__ import annotations

import sqlite3
import time

from . import audit


def _record(conn: sqlite3.Connection, secret: bytes, list_address: str, address: str, action: str,
            template: str, reason: str, actor: str, source: str, at: float) -> None:
    audit.append(conn, secret, list=list_address, post=None, message_id="", sha256="", sender=address,
                 action=action, reason=reason or template.replace("{list}", list_address),
                 template=audit.FREE_TEXT if reason else template, rule="", source=source, actor=actor, at=at)


def add_member(conn: sqlite3.Connection, secret: bytes, list_address: str, address: str, *, actor: str,
               reason: str = "", source: str = "command line", at: float | None = None) -> bool:
    """Add a member; False (and no record) when the address already is one."""
    at = time.time() if at is None else at
    if not conn.execute("INSERT OR IGNORE INTO members (list, address, added_at) VALUES (?, ?, ?)",
                        (list_address, address, at)).rowcount:
        return False
    _record(conn, secret, list_address, address, "member-added", "A member was added to {list}.", reason,
            actor, source, at)
    return True


def remove_member(conn: sqlite3.Connection, secret: bytes, list_address: str, address: str, *, actor: str,
                  reason: str = "", source: str = "command line", at: float | None = None) -> bool:
    """Remove a member; False (and no record) when the address was not one."""
    at = time.time() if at is None else at
    if not conn.execute("DELETE FROM members WHERE list = ? AND address = ?", (list_address, address)).rowcount:
        return False
    _record(conn, secret, list_address, address, "member-removed", "A member was removed from {list}.", reason,
            actor, source, at)
    return True


OPTIONS = ("nomail", "metoo", "digest")


def set_options(conn: sqlite3.Connection, secret: bytes, list_address: str, address: str,
                changes: dict[str, bool | None], *, actor: str, source: str = "command line",
                at: float | None = None) -> str:
    """Set a member's delivery options (`nomail`: no copies; `metoo`: a copy of one's own posts, None
    for the list's default; `digest`: a digest every member_digest_every instead of each post); what changed, as "nomail on, metoo off", or "" when nothing did. Raises
    KeyError when the address is not a member."""
    at = time.time() if at is None else at
    row = conn.execute("SELECT nomail, metoo, digest FROM members WHERE list = ? AND address = ?",
                       (list_address, address)).fetchone()
    if row is None:
        raise KeyError(address)
    current = {"nomail": bool(row[0]), "metoo": None if row[1] is None else bool(row[1]), "digest": bool(row[2])}
    changed = {k: v for k, v in changes.items() if k in OPTIONS and current[k] != v}
    if not changed:
        return ""
    for name, value in changed.items():
        conn.execute(f"UPDATE members SET {name} = ? WHERE list = ? AND address = ?",
                     (None if value is None else int(value), list_address, address))
    said = ", ".join(f"{k} {'default' if v is None else 'on' if v else 'off'}" for k, v in changed.items())
    _record(conn, secret, list_address, address, "member-options", f"A member's options on {{list}}: {said}.",
            "", actor, source, at)
    return said
