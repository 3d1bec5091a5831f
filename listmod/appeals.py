"""Appeals: a way back from a decision. A rejection or sanction notice carries a Message-ID that
names the decision (tokens.appealable_notice_id); the poster replies `appeal <reasons>`; the appeal
appears in the next digest beside the decision and its reason; a moderator other than the one who
decided (when the list has more than one) grants or denies it; the poster hears the outcome, and
every step is audited."""

from __future__ import annotations

import sqlite3
import textwrap
from dataclasses import dataclass

from . import audit, tokens
from .config import ListConfig
from .notices import new_notice
from .posts import enqueue_copies, enqueue_notice, post_by_id


def appealable(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, post: int | None, address: str,
               kind: str, actor: str, reason: str, at: float, hostname: str) -> str:
    """Record a decision the poster may appeal; the Message-ID its notice must carry."""
    cursor = conn.execute("INSERT INTO appealable (list, post, address, kind, actor, reason, at) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)", (mlist.address, post, address.lower(), kind, actor,
                                                           reason[:2000], at))
    return tokens.appealable_notice_id(secret, int(cursor.lastrowid or 0), hostname)


@dataclass(frozen=True)
class Appeal:
    id: int
    list: str
    kind: str            # "rejection" | "sanction"
    post: int | None
    address: str
    text: str
    decided_by: str      # who made the decision appealed ("moderator:ADDR", "rules", ...)
    reason: str          # the decision's reason
    received_at: float


def open_appeals(conn: sqlite3.Connection, list_address: str) -> list[Appeal]:
    return [Appeal(*row) for row in conn.execute(
        "SELECT a.id, a.list, d.kind, a.post, a.address, a.text, d.actor, d.reason, a.received_at FROM appeals a "
        "JOIN appealable d ON d.id = a.appealable WHERE a.list = ? AND a.state = 'open' ORDER BY a.id",
        (list_address,))]


def decide_appeal(conn: sqlite3.Connection, secret: bytes, config, mlist: ListConfig, appeal_id: int,
                  granted: bool, reason: str, actor: str, at: float) -> None:
    """Grant (the rejected post is delivered, or the sanction lifted) or deny; audited, and the
    poster told."""
    post_id, address, kind, text = conn.execute(
        "SELECT a.post, a.address, d.kind, a.text FROM appeals a JOIN appealable d ON d.id = a.appealable "
        "WHERE a.id = ?", (appeal_id,)).fetchone()
    conn.execute("UPDATE appeals SET state = ?, decided_by = ?, decided_at = ?, outcome = ? WHERE id = ?",
                 ("granted" if granted else "denied", actor, at, reason, appeal_id))
    record = post_by_id(conn, post_id) if post_id else None
    template = f"The appeal AP{appeal_id} was {'granted' if granted else 'denied'}."
    audit.append(conn, secret, list=mlist.address, post=post_id, message_id=record.message_id if record else "",
                 sha256="", sender=address, action="appeal-granted" if granted else "appeal-denied",
                 reason=reason or template, template=audit.FREE_TEXT if reason else template, rule="",
                 source=f"appeal AP{appeal_id}", actor=actor, at=at)
    what = ""
    if granted and kind == "rejection" and record is not None and record.state == "rejected":
        conn.execute("UPDATE posts SET state = 'accepted', action = 'accept', actor = ?, reason = ?, decided_at = ? "
                     "WHERE id = ?", (actor, f"Appeal AP{appeal_id} granted. {reason}".strip(), at, record.id))
        sha = conn.execute("SELECT sha256 FROM messages WHERE id = ?", (record.message,)).fetchone()[0]
        audit.append(conn, secret, list=mlist.address, post=record.id, message_id=record.message_id, sha256=sha,
                     sender=record.sender, action="accept", reason=f"Accepted on appeal AP{appeal_id}.",
                     template=f"Accepted on appeal AP{appeal_id}.", rule="", source=f"appeal AP{appeal_id}",
                     actor=actor, at=at)
        enqueue_copies(conn, record.id, mlist, at, record.sender)
        what = "The post is on its way to the list now."
    elif granted and kind == "sanction":
        from .ladder import lift_sanction
        lift_sanction(conn, secret, config, mlist, address, reason=f"Appeal AP{appeal_id} granted. {reason}".strip(),
                      actor=actor, source=f"appeal AP{appeal_id}", at=at, tell=False)
        what = "The sanction is lifted."
    subject = record.subject if record else ""
    body = (textwrap.fill(f"Your appeal to the moderators of {mlist.address} "
                          f"({f'about: {subject}' if subject else kind}) was {'granted' if granted else 'denied'} "
                          "by a moderator who did not make the first decision.", 72) + "\n\n"
            + (f"{what}\n\n" if what else "")
            + (f"Their words:\n\n{textwrap.indent(textwrap.fill(reason, 72), '    ')}\n\n" if reason else "")
            + f"Your appeal said:\n\n{textwrap.indent(textwrap.fill(text or '(nothing more)', 72), '    ')}\n")
    msg = new_notice(mlist, (f"{mlist.address} moderators", mlist.owner_alias), address,
                     f"Your appeal on {mlist.address} was {'granted' if granted else 'denied'}",
                     config.server.hostname, auto="auto-generated")
    if mlist.owner:
        msg["Reply-To"] = mlist.owner
    msg.set_content(body)
    enqueue_notice(conn, post_id, mlist, address, msg.as_bytes(), at)


def digest_lines(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, at: float) -> list[str]:
    """The appeals section of a digest: each open appeal beside the decision and its reason."""
    items = open_appeals(conn, mlist.address)
    if not items:
        return []
    lines = [f"Appeals ({len(items)}): decided by a moderator other than the one who decided first"]
    for a in items:
        cid = tokens.command_id(f"AP{a.id}", tokens.appeal_token(secret, mlist.address, a.id))
        label = ""
        if a.post:
            post = post_by_id(conn, a.post)
            label = f" of {post.label} ({textwrap.shorten(post.subject or '(no subject)', 40, placeholder='...')})"
        who = a.decided_by.partition(":")[2] or a.decided_by
        lines += [f"  AP{a.id}  {a.address} appeals the {a.kind}{label}",
                  f"      decided by {who}: {textwrap.shorten(a.reason or '(no reason)', 120, placeholder='...')}",
                  f"      appeal: {textwrap.shorten(a.text or '(no words)', 200, placeholder='...')}",
                  f"      grant {cid}", f"      deny {cid} <reason for the poster>"]
    return lines + [""]
