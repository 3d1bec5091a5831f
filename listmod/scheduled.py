"""Posts listmod makes on a schedule (`[[list.scheduled]]`): a guidelines reminder, a welcome
thread. Each goes through the normal path: stored, decided (accepted, by "schedule"), audited and
delivered like any post. The first one goes out `every` after the entry is first seen."""

from __future__ import annotations

import email.utils
import sqlite3
from email.message import EmailMessage
from email.policy import SMTP

from .config import Config, ListConfig, Scheduled
from .message import parse
from .posts import Judged, PostRecord, record_intake
from .rules import Decision
from .tomlfile import format_duration

MAX_TEXT = 256 * 1024


def scheduled_message(mlist: ListConfig, entry: Scheduled, hostname: str, at: float) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = email.utils.formataddr((f"{mlist.address} moderators", mlist.owner_alias))
    msg["To"] = mlist.address
    msg["Subject"] = entry.subject
    msg["Date"] = email.utils.formatdate(at, localtime=True)
    msg["Message-ID"] = email.utils.make_msgid("scheduled", domain=hostname)
    text = entry.file.read_text(encoding="utf-8", errors="replace")[:MAX_TEXT]
    msg.set_content(text.replace("{list}", mlist.address))
    return msg.as_bytes()


def post_due(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig,
             at: float) -> list[PostRecord]:
    """The list's scheduled posts whose time has come, made and recorded (in the caller's transaction)."""
    made: list[PostRecord] = []
    for entry in mlist.scheduled:
        row = conn.execute("SELECT last_at FROM scheduled_runs WHERE list = ? AND name = ?",
                           (mlist.address, entry.name)).fetchone()
        if row is None:
            conn.execute("INSERT INTO scheduled_runs (list, name, last_at) VALUES (?, ?, ?)",
                         (mlist.address, entry.name, at))
            continue
        if at - row[0] < entry.every:
            continue
        conn.execute("UPDATE scheduled_runs SET last_at = ? WHERE list = ? AND name = ?", (at, mlist.address, entry.name))
        try:
            raw = scheduled_message(mlist, entry, config.server.hostname, at)
        except OSError as err:   # the file went away: said in the audit trail, tried again next time
            raw, problem = b"", f"{entry.file}: {err.strerror}"
        else:
            problem = ""
        if problem:
            from . import audit
            audit.append(conn, secret, list=mlist.address, post=None, message_id="", sha256="", sender="",
                         action="undelivered", reason=f"The scheduled post could not be made: {problem}",
                         template="The scheduled post could not be made: {the file's error}", rule="scheduled",
                         source="listmod.toml: scheduled", actor="schedule", at=at)
            continue
        post = parse(raw, mlist.bounce_address)
        template = f"A scheduled post of {{list}} (every {format_duration(entry.every)}: {entry.file.name})."
        decision = Decision("accept", template.replace("{list}", mlist.address), "scheduled",
                            "listmod.toml: scheduled", "schedule", entry.file.name, template=template)
        made += record_intake(conn, secret, raw=raw, envelope_from=mlist.bounce_address, rcpt_tos=[mlist.address],
                              peer="schedule", post=post, judged=[Judged(mlist, decision, thread=post.message_id)],
                              at=at, hostname=config.server.hostname, config=config)
    return made
