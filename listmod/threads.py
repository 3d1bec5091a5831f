"""Threads and their mediation: which thread a post belongs to (References, In-Reply-To, then the
normalised subject), how hot a thread runs, and its cool-down and lock (docs/community.md).

A thread runs hot when, within an hour, it reaches the list's cool_posts_per_hour posts or
cool_conduct_matches posts flagged under a conduct rule. It then cools down for `cooldown`: new
posts in it are held with a reason that says so (rules/engine.py), its participants get one
mediation notice, and the moderators see it flagged in the digest. A moderator may cool, lock or
unlock a thread; a lock has no end."""

from __future__ import annotations

import re
import sqlite3
import textwrap
import time
from dataclasses import dataclass

from . import audit
from .config import Config, ListConfig
from .message import Post
from .notices import new_notice
from .posts import enqueue_notice
from .tomlfile import format_duration

HOUR = 3600.0
JOIN_BY_SUBJECT_WITHIN = 7 * 86400.0   # a post without references joins a thread this recent
MAX_NOTIFIED = 200                      # participants told of one cool-down, at most
_REPLY = re.compile(r"^\s*(?:\[[^\]]{1,40}\]\s*)*(?:re|fwd?|aw|sv|vs|antw|r|wg|tr|res|odp)\s*(?:\[\d+\])?\s*[:：]",
                    re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|sv|vs|antw|r|wg|tr|res|odp)\s*(?:\[\d+\])?\s*[:：]|\[[^\]]{1,40}\])\s*",
                     re.IGNORECASE)


def normalise_subject(subject: str) -> str:
    """"Re: [dev] AW: Build broken " -> "build broken": reply and forward prefixes and list tags
    taken off, spaces collapsed, lower case."""
    text = subject or ""
    for _ in range(20):
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return " ".join(text.split()).lower()[:200]


def thread_of(conn: sqlite3.Connection, post: Post, list_address: str, at: float) -> str:
    """The thread key of a post: its first reference's thread (References, else In-Reply-To);
    without either, a reply by its subject ("Re: ...", from a client that dropped the references)
    joins a recent thread on the list with the same normalised subject; else its own Message-ID
    (it starts a thread: a new post that merely shares a subject such as "Question" is not a reply)."""
    root = (post.references[0] if post.references else post.in_reply_to)
    if root:
        row = conn.execute("SELECT thread FROM thread_alias WHERE list = ? AND message_id = ?",
                           (list_address, root)).fetchone()
        return row[0] if row else root
    subject = normalise_subject(post.subject) if _REPLY.match(post.subject or "") else ""
    if subject:
        row = conn.execute("SELECT key FROM threads WHERE list = ? AND subject = ? AND last_at > ? "
                           "ORDER BY last_at DESC LIMIT 1", (list_address, subject, at - JOIN_BY_SUBJECT_WITHIN)
                           ).fetchone()
        if row:
            return row[0]
    return post.message_id


@dataclass(frozen=True)
class ThreadState:
    state: str = ""            # "" | "cooling" | "locked"
    until: float | None = None
    reason: str = ""
    subject: str = ""


def state_of(conn: sqlite3.Connection, list_address: str, key: str, at: float) -> ThreadState:
    """A thread's state now: a cool-down whose end has passed is over, even before it is recorded."""
    if not key:
        return ThreadState()
    row = conn.execute("SELECT COALESCE(state, ''), until, COALESCE(reason, ''), COALESCE(subject, '') FROM threads "
                       "WHERE list = ? AND key = ?", (list_address, key)).fetchone()
    if row is None:
        return ThreadState()
    state, until, reason, subject = row
    if state == "cooling" and (until is None or until <= at):
        state = ""
    return ThreadState(state, until, reason, subject)


@dataclass(frozen=True)
class Heat:
    posts: int          # posts in the thread in the last hour
    conduct: int        # of them, flagged under a conduct rule
    percent: int        # of the way to cool-down (100: hot), by the nearer threshold

    def why(self) -> str:
        parts = [f"{self.posts} post(s) in the last hour"]
        if self.conduct:
            parts.append(f"{self.conduct} of them flagged under the code of conduct")
        return ", ".join(parts)


def heat_of(conn: sqlite3.Connection, mlist: ListConfig, key: str, at: float, before: bool = True) -> Heat:
    """How hot a thread runs: its posts and conduct flags in the hour up to `at` (before it, or
    including posts made at `at`), bounded reads on the (list, thread, created_at) index."""
    cap = max(mlist.cool_posts_per_hour, mlist.cool_conduct_matches, 1) * 4
    op = "<" if before else "<="
    # after a cool-down or a lock ends, the thread starts cool: only posts since then count
    ended = conn.execute("SELECT until FROM threads WHERE list = ? AND key = ? AND (COALESCE(state, '') = '' "
                         "OR (state = 'cooling' AND until <= ?))", (mlist.address, key, at)).fetchone()
    start = max(at - HOUR, ended[0] if ended and ended[0] and ended[0] <= at else 0.0)
    posts, conduct = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(category = 'conduct'), 0) FROM (SELECT category FROM posts "
        f"WHERE list = ? AND thread = ? AND created_at > ? AND created_at {op} ? AND COALESCE(category, '') "
        f"!= 'subscription' LIMIT {cap})", (mlist.address, key, start, at)).fetchone()
    ratios = [posts / mlist.cool_posts_per_hour if mlist.cool_posts_per_hour else 0.0,
              conduct / mlist.cool_conduct_matches if mlist.cool_conduct_matches else 0.0]
    return Heat(posts, conduct, int(max(ratios) * 100))


def after_post(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, key: str, post: Post,
               post_id: int, at: float) -> None:
    """In intake's transaction, after a post is recorded: the thread's row kept up to date, and a
    thread that now runs hot put into cool-down (once: a thread cooling or locked stays so)."""
    if not key:
        return
    subject = normalise_subject(post.subject)
    started, state, until = conn.execute(
        "INSERT INTO threads (list, key, subject, started_at, last_at, state) VALUES (?, ?, ?, ?, ?, '') "
        "ON CONFLICT (list, key) DO UPDATE SET last_at = excluded.last_at, "
        "subject = CASE WHEN threads.subject = '' THEN excluded.subject ELSE threads.subject END "
        "RETURNING started_at, COALESCE(state, ''), until", (mlist.address, key, subject, at, at)).fetchone()
    if post.message_id and key != post.message_id and not post.references and not post.in_reply_to:
        # joined by its subject: replies to it name it, not the thread's first message
        conn.execute("INSERT OR IGNORE INTO thread_alias (list, message_id, thread) VALUES (?, ?, ?)",
                     (mlist.address, post.message_id, key))
    if not (mlist.cool_posts_per_hour or mlist.cool_conduct_matches) or mlist.news_server is not None:
        return
    if state == "locked" or (state == "cooling" and until is not None and until > at):
        return   # cooling or locked already
    if started == at and min(t for t in (mlist.cool_posts_per_hour, mlist.cool_conduct_matches) if t) > 1:
        return   # the thread's first post: one post cannot make it hot (the usual case, kept cheap)
    heat = heat_of(conn, mlist, key, at, before=False)
    if heat.percent < 100:
        return
    set_state(conn, secret, config, mlist, key, "cooling", until=at + mlist.cooldown, actor="rules",
              reason=f"The thread ran hot: {heat.why()}.", source="mediation", post_id=post_id, at=at)


_ACTION = {"cooling": "thread-cooled", "locked": "thread-locked", "": "thread-unlocked"}


def set_state(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, key: str, state: str, *,
              until: float | None, actor: str, reason: str, source: str, post_id: int | None,
              at: float) -> ThreadState:
    """Cool (until a time), lock (no end) or unlock a thread; audited. Entering a cool-down or a
    lock tells the thread's participants, once."""
    before = state_of(conn, mlist.address, key, at)
    conn.execute("INSERT INTO threads (list, key, subject, started_at, last_at, state, until, reason, changed_by) "
                 "VALUES (?, ?, '', ?, ?, ?, ?, ?, ?) ON CONFLICT (list, key) DO UPDATE SET state = excluded.state, "
                 "until = excluded.until, reason = excluded.reason, changed_by = excluded.changed_by",
                 (mlist.address, key, at, at, state, until if state else at, reason, actor))
    now = state_of(conn, mlist.address, key, at)
    ends = f" until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(until))}" if until else ""
    template = {"cooling": "The thread was put into cool-down{ends}: new posts in it are held for a moderator.",
                "locked": "The thread was locked: new posts in it are held for a moderator.",
                "": "The thread was unlocked: posts in it are judged as usual again."}[state].replace("{ends}", ends)
    audit.append(conn, secret, list=mlist.address, post=post_id, message_id=key, sha256="", sender="",
                 action=_ACTION[state], reason=f"{template} {reason}".strip(), template=template, rule="",
                 source=source, actor=actor, at=at)
    if state and not before.state:
        _tell_participants(conn, config, mlist, key, now, reason, at)
    return now


def end_cooldowns(conn: sqlite3.Connection, secret: bytes, at: float, config: Config) -> int:
    """Cool-downs whose time is up: recorded as over (posts were already judged as usual)."""
    ended = 0
    for list_address, key in conn.execute("SELECT list, key FROM threads WHERE state = 'cooling' AND until <= ?",
                                          (at,)).fetchall():
        conn.execute("UPDATE threads SET state = '' WHERE list = ? AND key = ?", (list_address, key))
        audit.append(conn, secret, list=list_address, post=None, message_id=key, sha256="", sender="",
                     action="thread-warmed", reason="", template="The thread's cool-down ended.", rule="",
                     source="mediation", actor="expiry", at=at)
        ended += 1
    return ended


_DEFAULT_NOTICE = """\
The thread "{subject}" on {list} has become heated ({why}).

For a while ({until}) new posts in it are read by a moderator before they go out. Nobody is in
trouble: this is a pause, so that the discussion can go on at its best.

Before you reply, please take a moment: criticise ideas, not people; assume good faith; a point
that has been made need not be made again. If you would rather talk to a moderator, reply to this
message.
"""


def _fill(paragraph: str) -> str:
    """A paragraph as written when its lines fit 76 columns, else filled to 76."""
    lines = paragraph.splitlines()
    return paragraph if all(len(x) <= 76 for x in lines) else textwrap.fill(" ".join(x.strip() for x in lines), 76)


def _tell_participants(conn: sqlite3.Connection, config: Config, mlist: ListConfig, key: str, state: ThreadState,
                       reason: str, at: float) -> int:
    """One mediation notice to each participant the list may write to (members and senders whose
    domain authentication vouched for: never a forged address)."""
    people = [r[0] for r in conn.execute(
        "SELECT DISTINCT sender FROM posts WHERE list = ? AND thread = ? AND sender != '' AND COALESCE(verified, 0) = 1 "
        f"ORDER BY sender LIMIT {MAX_NOTIFIED}", (mlist.address, key))]
    if not people:
        return 0
    subject = conn.execute("SELECT subject FROM posts WHERE list = ? AND thread = ? ORDER BY created_at LIMIT 1",
                           (mlist.address, key)).fetchone()
    subject_text = (subject[0] if subject else "") or state.subject or "(no subject)"
    until = (f"until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(state.until))}, "
             f"{format_duration(state.until - at)} from now" if state.state == "cooling" and state.until
             else "until a moderator reopens it")
    template = _DEFAULT_NOTICE
    if mlist.mediation_notice is not None:
        try:
            template = mlist.mediation_notice.read_text(encoding="utf-8", errors="replace")[:32 * 1024]
        except OSError:
            pass   # the built-in text rather than no notice
    why = reason.removeprefix("The thread ran hot: ").rstrip(".") or "the moderators asked for a pause"
    body = (template.replace("{subject}", subject_text).replace("{list}", mlist.address)
            .replace("{until}", until).replace("{why}", why))
    body = "\n\n".join(_fill(p) for p in body.strip("\n").split("\n\n")) + "\n"
    for person in people:
        msg = new_notice(mlist, (f"{mlist.address} moderators", mlist.owner_alias), person,
                         f"[{mlist.address}] A pause in the thread: {subject_text}", config.server.hostname,
                         in_reply_to=key, auto="auto-generated")
        if mlist.owner:
            msg["Reply-To"] = mlist.owner
        msg.set_content(body)
        enqueue_notice(conn, None, mlist, person, msg.as_bytes(), at)
    return len(people)
