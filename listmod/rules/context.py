"""Everything decide() needs besides the message, read from the config and the store (the only I/O
before a decision). Intake, `explain` and `replay` all build contexts here."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from typing import Any

from ..config import Config, ListConfig
from ..ladder import level_of, standing_of
from ..message import Post
from ..threads import heat_of, state_of
from .model import Context, RuleSet

HOUR = 3600.0
COUNT_CAP = 1000
_COMMENT = re.compile(r"\([^()]*\)")


def thread_key(post: Post) -> str:
    """The thread a post belongs to: the first message it refers to (RFC 5322 References), else
    the one it replies to, else itself."""
    return (post.references[0] if post.references else post.in_reply_to) or post.message_id


def authentication_results(post: Post, authserv_id: str) -> tuple[tuple[str, str], ...]:
    """(method, result) pairs from Authentication-Results headers (RFC 8601) added by the server we
    trust; any other such header may be forged by the sender and is ignored."""
    if not authserv_id:
        return ()
    found: list[tuple[str, str]] = []
    for header in post.header("authentication-results"):
        text = _COMMENT.sub("", header)
        parts = [p.strip() for p in text.split(";")]
        ident = parts[0].split()[0].lower() if parts[0].split() else ""
        if ident != authserv_id.lower():
            continue
        for resinfo in parts[1:]:
            head = resinfo.split()[0] if resinfo.split() else ""
            if "=" in head:
                method, result = head.split("=", 1)
                found.append((method.strip().lower(), result.strip().lower()))
    return tuple(found)


def dkim_pass_domains(post: Post, authserv_id: str) -> set[str]:
    """Domains (header.d) whose DKIM signature passed, per the trusted Authentication-Results."""
    domains: set[str] = set()
    if not authserv_id:
        return domains
    for header in post.header("authentication-results"):
        parts = [p.strip() for p in _COMMENT.sub("", header).split(";")]
        if not parts[0].split() or parts[0].split()[0].lower() != authserv_id.lower():
            continue
        for resinfo in parts[1:]:
            if resinfo.lower().startswith("dkim=pass"):
                found = re.search(r"header\.(?:d|i)=@?([^\s;]+)", resinfo, re.IGNORECASE)
                if found:
                    domains.add(found.group(1).lower().rsplit("@", 1)[-1])
    return domains


def verified_sender(post: Post, is_member: bool, authserv_id: str) -> bool:
    """Whether a notice to the poster is safe from backscatter: a member, or a From domain that a
    trusted Authentication-Results shows signed it (DKIM) or sent it (SPF, with the envelope sender
    in the same domain)."""
    if is_member:
        return True
    domain = post.from_address.rpartition("@")[2].lower()
    if not domain or not authserv_id:
        return False
    if domain in dkim_pass_domains(post, authserv_id):
        return True
    return ("spf", "pass") in authentication_results(post, authserv_id) and \
        post.envelope_sender.rpartition("@")[2].lower() == domain


def spam_score(post: Post, header: str) -> float | None:
    if not header:
        return None
    for value in post.header(header):
        found = re.search(r"-?\d+(?:\.\d+)?", value)
        if found:
            return float(found.group(0))
    return None


def sender_standing(conn: sqlite3.Connection, mlist: ListConfig, sender: str, at: float) -> tuple[str, str]:
    """(trust level, sanction in force) of the sender on the list."""
    if not sender:
        return "new", ""
    standing = standing_of(conn, mlist.address, sender)
    return level_of(conn, mlist, sender, at, standing), standing.current(at)


def is_member(conn: sqlite3.Connection, list_address: str, sender: str) -> bool:
    if not sender:
        return False
    return conn.execute("SELECT 1 FROM members WHERE list = ? AND address = ?",
                        (list_address, sender)).fetchone() is not None


def build_context(conn: sqlite3.Connection, post: Post, mlist: ListConfig, config: Config,
                  ruleset: RuleSet, at: float, thread: str | None = None) -> Context:
    """The context for judging `post` on `mlist` now; counters only for fields the rules read.
    `thread`: the post's thread as threads.thread_of found it (else its first reference)."""
    needs = ruleset.needs
    sender = post.sender
    level, sanction = sender_standing(conn, mlist, sender, at)
    ctx = Context(
        list_address=mlist.address,
        list_id=mlist.list_id,
        sender_is_member=is_member(conn, mlist.address, sender),
        sender_is_moderator=sender in mlist.moderators,
        default_member_action=mlist.default_member_action,
        default_nonmember_action=mlist.default_nonmember_action,
        sender_trust=level, sender_sanction=sanction,
        auth=authentication_results(post, config.server.authserv_id),
        spam_score=spam_score(post, config.server.spam_score_header),
        newsgroups=mlist.newsgroups,
        allow_control=mlist.allow_control,
    )
    counts: dict[str, Any] = {}
    # counters are counted up to COUNT_CAP: enough for any rule, and bounded in cost
    if "sender.approved_posts" in needs:
        counts["approved_posts"] = conn.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM posts WHERE list = ? AND sender = ? AND state = 'accepted' "
            f"AND created_at < ? LIMIT {COUNT_CAP})", (mlist.address, sender, at)).fetchone()[0]
    if "sender.posts_last_hour" in needs:
        counts["posts_last_hour"] = conn.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM posts WHERE list = ? AND sender = ? AND created_at > ? "
            f"AND created_at < ? LIMIT {COUNT_CAP})", (mlist.address, sender, at - HOUR, at)).fetchone()[0]
    thread = thread_key(post) if thread is None else thread
    cooling = state_of(conn, mlist.address, thread, at)
    if cooling.state:
        counts["thread_state"], counts["thread_until"] = cooling.state, cooling.until
    if "thread.heat" in needs:
        counts["thread_heat"] = heat_of(conn, mlist, thread, at).percent if thread else 0
    if "thread.posts_last_hour" in needs:
        counts["thread_posts_last_hour"] = conn.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM posts WHERE list = ? AND thread = ? AND created_at > ? "
            f"AND created_at < ? LIMIT {COUNT_CAP})", (mlist.address, thread, at - HOUR, at)
        ).fetchone()[0] if thread else 0
    if "thread.participants" in needs:
        counts["thread_participants"] = conn.execute(
            "SELECT COUNT(DISTINCT sender) FROM posts WHERE list = ? AND thread = ? AND sender != ? "
            "AND created_at < ?", (mlist.address, thread, sender, at)).fetchone()[0] + 1 if thread else 1
    return dataclasses.replace(ctx, **counts) if counts else ctx


_CONTEXT_FIELDS = tuple(f.name for f in dataclasses.fields(Context))


def context_json(ctx: Context) -> str:
    """The context as stored with each post, so that `replay` judges history as it was.
    (A plain field read: dataclasses.asdict deep-copies and cost 8% of intake.)"""
    return json.dumps({name: getattr(ctx, name) for name in _CONTEXT_FIELDS}, separators=(",", ":"))


def context_from_json(text: str, mlist: ListConfig) -> Context:
    data = json.loads(text)
    data["auth"] = tuple(tuple(pair) for pair in data.get("auth", ()))
    data["newsgroups"] = tuple(data.get("newsgroups", ()))
    known = {f.name for f in dataclasses.fields(Context)}
    ctx = Context(**{k: v for k, v in data.items() if k in known})
    # the list's defaults are policy, not history: replay uses today's
    return dataclasses.replace(ctx, default_member_action=mlist.default_member_action,
                               default_nonmember_action=mlist.default_nonmember_action)
