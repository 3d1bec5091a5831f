"""Posts and their states: recording what intake decided, held posts, and decisions made later."""

from __future__ import annotations

import json
import secrets as _secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import audit
from .config import Config, ListConfig
from .kinds import STATE_FOR_ACTION, Action, OutboxKind, OutboxState, PostState
from .message import Post
from .notices import approved_notice, article_failed_notice, held_notice, rejection_notice
from .rules import Decision
from .store import insert
from .tokens import held_notice_id

if TYPE_CHECKING:
    from .bounces import Report

# Short ids moderators type: no 0/O, 1/I/L lookalikes.
SHORT_ID_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"



@dataclass(frozen=True)
class Judged:
    """One list's decision on an incoming message, and the context it was made in."""

    mlist: ListConfig
    decision: Decision
    context: str = ""   # JSON of the rules' Context, kept so that `replay` sees history as it was
    thread: str = ""
    verified: bool = False   # a member, or a From that trusted authentication vouches for: may be told
    report: Report | None = None   # a delivery report sent to the list's bounce address, as read
    verp: str = ""                 # the member a VERP bounce address (LIST-bounces+a=b.example@) names


@dataclass(frozen=True)
class PostRecord:
    id: int
    list: str
    short_id: str | None
    state: str
    action: str
    rule: str
    source: str
    actor: str
    reason: str
    sender: str
    subject: str
    message_id: str
    created_at: float
    decided_at: float | None
    message: int

    @property
    def label(self) -> str:
        return self.short_id or str(self.id)


POST_COLUMNS = ("id, list, short_id, state, action, rule, source, actor, reason, sender, subject, "
                 "message_id, created_at, decided_at, message")


def new_short_id(conn: sqlite3.Connection) -> str:
    length = 4
    for attempt in range(40):
        if attempt and attempt % 8 == 0:
            length += 1  # the 4-letter space is crowded: take a longer id rather than loop
        candidate = "".join(_secrets.choice(SHORT_ID_ALPHABET) for _ in range(length))
        if conn.execute("SELECT 1 FROM posts WHERE short_id = ?", (candidate,)).fetchone() is None:
            return candidate
    raise RuntimeError("could not find a free short id")


def record_intake(conn: sqlite3.Connection, secret: bytes, *, raw: bytes, envelope_from: str,
                  rcpt_tos: list[str], peer: str, post: Post, judged: list[Judged],
                  at: float | None = None, hostname: str = "localhost",
                  notices_per_hour: int = 3, reject_by_notice: bool = False,
                  config: Config | None = None) -> list[PostRecord]:
    """Store the message, each list's decision and its audit record; queue accepted copies.
    `reject_by_notice`: a rejection is answered 250 and the poster is mailed a notice (LMTP behind
    an MTA's queue, which would otherwise bounce the 550); newsgroup lists always reject so.

    Runs inside the caller's transaction: all of it is committed together, or none of it.
    """
    at = time.time() if at is None else at
    message = insert(
        conn, "INSERT INTO messages (received_at, envelope_from, rcpt_tos, sha256, size, peer, raw) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (at, envelope_from, json.dumps(rcpt_tos), post.sha256, len(raw), peer, raw))
    records = []
    for item in judged:
        d = item.decision
        state = STATE_FOR_ACTION[Action(d.action)]
        short_id = new_short_id(conn) if state == PostState.HELD else None
        escalated = d.action == Action.ESCALATE
        post_id = insert(
            conn, "INSERT INTO posts (message, list, short_id, state, action, rule, source, actor, reason, "
            "evidence, ruleset, sender, subject, message_id, created_at, decided_at, thread, "
            "escalated, tags, context, excerpt, parsed, verified, category) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message, item.mlist.address, short_id, state, d.action, d.rule_id, d.source, d.actor,
             d.reason, d.evidence, d.ruleset, post.sender, post.subject, post.message_id, at,
             None if state == PostState.HELD else at, item.thread, int(escalated), " ".join(d.tags),
             item.context, post.excerpt if state == PostState.HELD else "", int(not post.problems),
             int(item.verified), d.category))
        audit.append(conn, secret, list=item.mlist.address, post=post_id,
                     message_id=post.message_id, sha256=post.sha256, sender=post.sender,
                     action=d.action, reason=d.reason, template=d.template, rule=d.rule_id, source=d.source,
                     actor=d.actor, ruleset=d.ruleset, evidence=d.evidence, at=at)
        if state == PostState.ACCEPTED:
            enqueue_copies(conn, post_id, item.mlist, at, post.sender)
        if state == PostState.HELD and post.sender and may_tell(item.mlist, item.verified) and \
                may_notify(conn, post.sender, at, notices_per_hour):
            enqueue_notice(conn, post_id, item.mlist, post.sender, held_notice(
                item.mlist, post, short_id or "", d.reason,
                held_notice_id(secret, item.mlist.address, post_id, hostname), hostname), at)
        if escalated and item.mlist.escalation_contact:
            from .evidence import send_evidence  # (evidence builds on this module)
            send_evidence(conn, secret, item.mlist, post_id, note="", hostname=hostname, at=at)
        if config is not None and item.thread and item.report is None:
            from .threads import after_post  # (threads builds on this module)
            after_post(conn, secret, config, item.mlist, item.thread, post, post_id, at)
        record = PostRecord(post_id, item.mlist.address, short_id, state, d.action, d.rule_id,
                            d.source, d.actor, d.reason, post.sender, post.subject, post.message_id,
                            at, None if state == PostState.HELD else at, message)
        if state == PostState.REJECTED and post.sender and (
                item.mlist.news_server is not None
                or (reject_by_notice and may_notify(conn, post.sender, at, notices_per_hour))):
            # a submission comes through the news server's mailer, which would bounce a 550 to
            # itself, and an MTA's queue (LMTP) likewise: the poster hears the reason by mail instead
            from .appeals import appealable  # (appeals builds on this module)
            notice_id = appealable(conn, secret, item.mlist, post_id, post.sender, "rejection", d.actor, d.reason,
                                   at, hostname)
            enqueue_notice(conn, post_id, item.mlist, post.sender,
                           rejection_notice(item.mlist, record, d.reason, hostname, notice_id), at)
        if config is not None and item.report is not None:
            from .bounces import apply_report  # (bounces builds on this module)
            apply_report(conn, secret, config, item.mlist, item.report, item.verp, at)
        if config is not None and post.sender and item.mlist.news_server is None:
            from .ladder import conduct_rejected, note_level  # (ladder builds on this module)
            if state == PostState.ACCEPTED:   # a promotion, perhaps
                note_level(conn, secret, config, item.mlist, post.sender, at)
            elif state == PostState.REJECTED and d.category == "conduct":
                conduct_rejected(conn, secret, config, item.mlist, post.sender, at)
        records.append(record)
    return records


def enqueue_copies(conn: sqlite3.Connection, post_id: int, mlist: ListConfig, at: float, sender: str = "") -> int:
    """One outbox row per recipient copy: the roster at this moment, or the relay address, and the
    list's archives (an address, or maildir:/path); for a
    list that moderates newsgroups, one row for the one POST of the article to its news server."""
    if mlist.news_server is not None:
        conn.execute(
            "INSERT INTO outbox (post, kind, list, recipient, envelope_from, state, attempts, "
            "next_attempt, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (post_id, OutboxKind.ARTICLE, mlist.address, str(mlist.news_server), mlist.bounce_address,
             OutboxState.PENDING, at, at))
        return 1
    members = ("FROM members WHERE list = ? AND nomail = 0 AND digest = 0 AND disabled_at IS NULL AND "
               "NOT (address = ? AND COALESCE(metoo, ?) = 0)")
    member_args = (mlist.address, (sender or "").lower(), int(mlist.metoo))
    if not mlist.relay_to and not mlist.personalize and not mlist.archive:
        # the common case in one statement: every copy has the list's bounce address as its sender
        return conn.execute(
            "INSERT INTO outbox (post, kind, list, recipient, envelope_from, state, attempts, next_attempt, "
            f"created_at) SELECT ?, ?, ?, address, ?, ?, 0, ?, ? {members} ORDER BY address",
            (post_id, OutboxKind.POST, mlist.address, mlist.bounce_address, OutboxState.PENDING, at, at,
             *member_args)).rowcount
    if mlist.relay_to:
        recipients = [mlist.relay_to]
    else:
        # members with nomail get nothing; the poster no copy of their own post unless metoo (theirs,
        # else the list's)
        recipients = [r[0] for r in conn.execute(f"SELECT address {members} ORDER BY address", member_args)]
    recipients += [a for a in mlist.archive if a not in recipients]  # the archives get the same copy
    conn.executemany(
        "INSERT INTO outbox (post, kind, list, recipient, envelope_from, state, attempts, "
        "next_attempt, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
        [(post_id, OutboxKind.POST, mlist.address, r,
          verp_address(mlist, r) if mlist.personalize and "@" in r else mlist.bounce_address,
          OutboxState.PENDING, at, at) for r in recipients])
    return len(recipients)


def verp_address(mlist: ListConfig, recipient: str) -> str:
    """LIST-bounces+alice=example.org@host: a bounce to it names the member (bounces.verp_recipient)."""
    user, _, domain = recipient.rpartition("@")
    return f"{mlist.local_part}-bounces+{user}={domain}@{mlist.domain}"


def enqueue_notice(conn: sqlite3.Connection, post_id: int | None, mlist: ListConfig,
                   recipient: str, body: bytes, at: float) -> None:
    conn.execute(
        "INSERT INTO outbox (post, kind, list, recipient, envelope_from, body, state, attempts, "
        "next_attempt, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (post_id, OutboxKind.NOTICE, mlist.address, recipient, mlist.bounce_address, body, OutboxState.PENDING,
         at, at))


def may_tell(mlist: ListConfig, verified: bool) -> bool:
    """Whether a poster hears that their post is held, and later what became of it: notify_held
    "verified" (members, and senders whose domain trusted authentication vouches for: never
    backscatter to a forged sender), "all", or "none"."""
    return mlist.notify_held == "all" or (mlist.notify_held == "verified" and verified)


def may_notify(conn: sqlite3.Connection, recipient: str, at: float, per_hour: int) -> bool:
    """Whether one more notice may go to this address this hour (and count it if so): no address
    can be mail-bombed through the list, whatever is sent to it."""
    recent = conn.execute("SELECT COUNT(*) FROM notice_log WHERE recipient = ? AND at > ?",
                          (recipient, at - 3600)).fetchone()[0]
    if recent >= per_hour:
        return False
    conn.execute("INSERT INTO notice_log (recipient, at) VALUES (?, ?)", (recipient, at))
    return True


def prune_notice_log(conn: sqlite3.Connection, at: float) -> None:
    """Forget notices older than the hour the limits look at."""
    conn.execute("DELETE FROM notice_log WHERE at < ?", (at - 3600,))


class PostNotFound(Exception):
    pass


class AlreadyDecided(Exception):
    def __init__(self, record: PostRecord):
        self.record = record
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.decided_at or 0))
        super().__init__(f"post {record.label} was already {record.state} by {record.actor} at {when}; "
                         "nothing changed")


def post_by_id(conn: sqlite3.Connection, post_id: int) -> PostRecord:
    """A post by its number. Code that holds a number uses this, never find_post: a short id may be
    all digits ("8498"), so another post's short id can look like this post's number."""
    row = conn.execute(f"SELECT {POST_COLUMNS} FROM posts WHERE id = ?", (post_id,)).fetchone()
    if row is None:
        raise PostNotFound(f"no post number {post_id}")
    return PostRecord(*row)


def find_post(conn: sqlite3.Connection, ident: str) -> PostRecord:
    """A post as a person names it: by its short id (case-insensitive), else by its number."""
    ident = ident.strip()
    row = conn.execute(f"SELECT {POST_COLUMNS} FROM posts WHERE short_id = ?",
                       (ident.upper(),)).fetchone()
    if row is None and ident.isascii() and ident.isdigit():  # "²".isdigit() is True too
        row = conn.execute(f"SELECT {POST_COLUMNS} FROM posts WHERE id = ?", (int(ident),)).fetchone()
    if row is None:
        raise PostNotFound(f"no post with id {ident!r}; `listmod queue` lists the held posts")
    return PostRecord(*row)


def is_escalated(conn: sqlite3.Connection, post_id: int) -> bool:
    """Escalated (a legal hold): it never expires and is never decided by `approve all`."""
    row = conn.execute("SELECT COALESCE(escalated, 0) FROM posts WHERE id = ?", (post_id,)).fetchone()
    return bool(row and row[0])


def held_posts(conn: sqlite3.Connection, list_address: str | None = None) -> list[PostRecord]:
    sql = f"SELECT {POST_COLUMNS} FROM posts WHERE state = 'held'"
    args: tuple = ()
    if list_address:
        sql += " AND list = ?"
        args = (list_address,)
    return [PostRecord(*row) for row in conn.execute(sql + " ORDER BY created_at, id", args)]


def decide_held(conn: sqlite3.Connection, secret: bytes, config: Config, record: PostRecord,
                action: str, reason: str, actor: str, at: float | None = None,
                source: str = "command line", template: str = audit.FREE_TEXT) -> PostRecord:
    """A person's decision on a held post: update it, audit it, deliver or notify as it requires.
    `template`: the reason before people's data was filled in (FREE_TEXT: the person's own words)."""
    at = time.time() if at is None else at
    current = post_by_id(conn, record.id)
    if current.state != PostState.HELD:
        raise AlreadyDecided(current)
    mlist = config.list_for(current.list)
    if mlist is None:
        raise PostNotFound(f"post {current.label} belongs to {current.list}, which is no longer configured")
    state = STATE_FOR_ACTION[Action(action)]
    conn.execute("UPDATE posts SET state = ?, action = ?, rule = ?, source = ?, actor = ?, reason = ?, "
                 "evidence = '', decided_at = ? WHERE id = ?",
                 (state, action, "", source, actor, reason, at, current.id))
    sha = conn.execute("SELECT sha256 FROM messages WHERE id = ?", (current.message,)).fetchone()[0]
    audit.append(conn, secret, list=mlist.address, post=current.id, message_id=current.message_id,
                 sha256=sha, sender=current.sender, action=action, reason=reason, template=template,
                 rule="", source=source, actor=actor, at=at)
    from .ladder import conduct_rejected, note_level  # (ladder builds on this module)
    category = conn.execute("SELECT COALESCE(category, '') FROM posts WHERE id = ?", (current.id,)).fetchone()[0]
    if category == "subscription":   # a request to join a moderated list, not a post to deliver
        from .subscriptions import decided_request
        decided_request(conn, secret, config, mlist, current, state, reason, actor, at)
        return post_by_id(conn, current.id)
    if state == PostState.ACCEPTED and current.sender:
        note_level(conn, secret, config, mlist, current.sender, at)
    elif state == PostState.REJECTED and category == "conduct":
        conduct_rejected(conn, secret, config, mlist, current.sender, at, actor=actor)
    verified = bool(conn.execute("SELECT COALESCE(verified, 0) FROM posts WHERE id = ?", (current.id,)).fetchone()[0])
    if state == PostState.ACCEPTED:
        enqueue_copies(conn, current.id, mlist, at, current.sender)
        if current.sender and may_tell(mlist, verified) and \
                may_notify(conn, current.sender, at, config.server.held_notices_per_hour):
            enqueue_notice(conn, current.id, mlist, current.sender,
                           approved_notice(mlist, current, config.server.hostname), at)
    elif state == PostState.REJECTED and current.sender and (mlist.news_server is not None or may_tell(mlist, verified)):
        # the reason goes to the poster when notify_held covers them: never to a forged sender
        # (a newsgroup's submitter is always told: the news server's mailer cannot take a 550)
        from .appeals import appealable  # (appeals builds on this module)
        notice_id = appealable(conn, secret, mlist, current.id, current.sender, "rejection", actor, reason, at,
                               config.server.hostname)
        enqueue_notice(conn, current.id, mlist, current.sender,
                       rejection_notice(mlist, current, reason, config.server.hostname, notice_id), at)
    return post_by_id(conn, current.id)


def article_failed(conn: sqlite3.Connection, secret: bytes, config: Config, post_id: int, detail: str,
                   at: float) -> None:
    """An approved article the news server refused for good (or never took): audited, and the
    poster and the owner (the moderators when there is no owner) told why."""
    record = post_by_id(conn, post_id)
    mlist = config.list_for(record.list)
    if mlist is None:
        return
    sha = conn.execute("SELECT sha256 FROM messages WHERE id = ?", (record.message,)).fetchone()[0]
    reason = f"The approved article was not posted: {detail}"
    audit.append(conn, secret, list=mlist.address, post=record.id, message_id=record.message_id,
                 sha256=sha, sender=record.sender, action="undelivered", reason=reason,
                 template="The approved article was not posted: {the news server's answer}", rule="",
                 source="news server", actor="delivery", at=at)
    staff = [mlist.owner] if mlist.owner else list(mlist.moderators)
    for recipient in dict.fromkeys([record.sender, *staff]):
        if recipient:
            enqueue_notice(conn, record.id, mlist, recipient, article_failed_notice(
                mlist, record, detail, config.server.hostname, to=recipient), at)
