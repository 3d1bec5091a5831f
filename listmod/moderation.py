"""Moderators' replies applied: who may do what to which held post, and a receipt for every reply.
Also the expiry of posts nobody decided."""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field

from . import audit, tokens
from .config import Config, ListConfig
from .context import dkim_pass_domains
from .message import Post, parse
from .notices import new_notice, not_a_moderator_notice
from .posts import (
    AlreadyDecided,
    PostNotFound,
    PostRecord,
    decide_held,
    enqueue_notice,
    find_post,
    is_escalated,
    may_notify,
)
from .replies import COMMANDS, CommandLine, commands_in
from .standing import Level, set_standing

_MSGID = re.compile(r"<[^<>\s]+>")
VERB_ACTION = {"approve": "accept", "trust": "accept", "reject": "reject", "ban": "reject",
               "discard": "discard"}


@dataclass(frozen=True)
class Result:
    line: str
    applied: bool
    outcome: str
    list: str = ""


@dataclass
class Receipt:
    moderator: str
    reply_id: str
    subject: str
    results: list[Result] = field(default_factory=list)
    lists: set[str] = field(default_factory=set)
    dkim_domains: set[str] = field(default_factory=set)
    unverified: bool = False     # the sender is no moderator: no receipt, at most a short answer
    ignored: bool = False        # an automatic message (Auto-Submitted): never applied, never answered
    poster_only: bool = False    # only a poster's withdraw: the receipt goes to the poster alone


def _shown(line: str) -> str:
    """The command line without its token, as receipts and the audit show it (bounded)."""
    shown = re.sub(r"\b([2-9A-Za-z]{4,6})-[0-9A-Za-z]{6,}\b", r"\1", line)
    return shown if len(shown) <= 160 else shown[:157] + "..."


def _refuse(conn: sqlite3.Connection, secret: bytes, receipt: Receipt, cmd: CommandLine, why: str,
            post: PostRecord | None, at: float) -> None:
    receipt.results.append(Result(cmd.line, False, why, post.list if post else ""))
    if post is not None:
        receipt.lists.add(post.list)
    audit.append(conn, secret, list=post.list if post else "", post=post.id if post else None,
                 message_id=post.message_id if post else "", sha256="", sender=receipt.moderator,
                 action="refused", reason=f"{_shown(cmd.line)}: {why}",
                 template=f"a {cmd.verb or 'command'} line was refused: {{the line and why}}", rule="",
                 source="mail command", actor=f"moderator:{receipt.moderator}", at=at)


@dataclass(frozen=True)
class PreparedReply:
    """A reply read and its commands found: done outside the store's writer (it can be slow)."""

    post: Post
    commands: tuple[CommandLine, ...]


def prepare_reply(raw: bytes) -> PreparedReply:
    return PreparedReply(parse(raw, ""), tuple(commands_in(raw)))


def apply_reply(conn: sqlite3.Connection, secret: bytes, config: Config, raw: bytes,
                via_list: ListConfig | None = None, at: float | None = None,
                prepared: PreparedReply | None = None) -> Receipt:
    """Apply the commands in one reply (inside the caller's transaction) and say what happened.
    `via_list` is the list whose -moderation address the reply was sent to, if any."""
    at = time.time() if at is None else at
    prepared = prepared or prepare_reply(raw)
    reply = prepared.post
    moderator = reply.from_address
    receipt = Receipt(moderator, reply.message_id, reply.subject,
                      dkim_domains=dkim_pass_domains(reply, config.server.authserv_id))
    if via_list is not None:
        receipt.lists.add(via_list.address)
    if any(not v.lower().startswith("no") for v in reply.header("auto-submitted")):
        receipt.ignored = True  # a vacation or bounce message: answering it could start a mail loop
        return receipt
    commands = list(prepared.commands)
    limit = config.server.max_commands_per_reply
    skipped = max(0, len(commands) - limit)
    commands = commands[:limit]
    staff = set(via_list.moderators) if via_list else {m for ml in config.lists for m in ml.moderators}
    if moderator not in staff and any(c.verb != "withdraw" for c in commands):
        # one record for the whole reply, nothing echoed back: the moderation address must not
        # reflect a stranger's (or a forger's) text to anyone
        receipt.unverified = True
        audit.append(conn, secret, list=via_list.address if via_list else "", post=None,
                     message_id=reply.message_id, sha256="", sender=moderator, action="refused",
                     reason=f"a reply with {len(commands) + skipped} command line(s) from an address that "
                            "is not a moderator; nothing was applied",
                     template="a reply from an address that is not a moderator; nothing was applied",
                     rule="", source="mail command", actor=f"unverified:{moderator}", at=at)
        return receipt
    receipt.poster_only = bool(commands) and all(c.verb == "withdraw" for c in commands)
    if reply.message_id:
        seen = conn.execute("SELECT received_at FROM replies WHERE message_id = ?",
                            (reply.message_id,)).fetchone()
        if seen:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen[0]))
            for cmd in commands or [CommandLine("(the whole reply)", "", "", "", False)]:
                _refuse(conn, secret, receipt, cmd, f"this reply ({reply.message_id}) was already "
                        f"processed at {when}; a reply is applied once", None, at)
            return receipt
        dkim_pass = moderator.rsplit("@", 1)[-1] in receipt.dkim_domains
        conn.execute("INSERT INTO replies (message_id, sender, received_at, summary, dkim_pass) VALUES (?, ?, ?, ?, ?)",
                     (reply.message_id, moderator, at, f"{len(commands)} command(s)", int(dkim_pass)))
    if not commands:
        receipt.results.append(Result("(no command found)", False,
                                      "no command was found above the quoted text; write e.g. "
                                      "'approve K7Q2-TOKEN' on a line of its own"))
        return receipt
    if skipped:
        receipt.results.append(Result(f"({skipped} more command line(s))", False,
                                      f"not read: a reply may carry at most {limit} commands "
                                      "(max_commands_per_reply); send the rest in another reply"))
    references = set(_MSGID.findall(" ".join(reply.header("in-reply-to") + reply.header("references"))))
    for cmd in commands:
        if not cmd.known:
            receipt.results.append(Result(cmd.line, False, f"'{cmd.verb}' is not a command; commands "
                                          f"are: {', '.join(c for c in COMMANDS if c != 'withdraw')}"))
            continue
        if cmd.verb == "withdraw":
            _withdraw(conn, secret, config, receipt, cmd, references, at)
            continue
        if cmd.target == "all":
            found = _digest_for_token(conn, secret, cmd.digest_token, config) if cmd.digest_token else None
            if found is None:
                _refuse(conn, secret, receipt, cmd, "'all' needs the token of a digest younger than "
                        "expire_after, written on the line as the digest prints it ('approve all TOKEN'); "
                        "being a reply to a digest is not enough", None, at)
                continue
            for post_ids in (found[1],):
                for pid in sorted(post_ids):
                    post = find_post(conn, str(pid))
                    if post.state == "held" and is_escalated(conn, post.id):
                        receipt.results.append(Result(cmd.line, False, f"{post.short_id} is escalated (a legal "
                                                      "hold): decide it on a line of its own that names it",
                                                      post.list))
                        continue
                    _apply_one(conn, secret, config, receipt, cmd, post, via_list, at, token_ok=True,
                               quiet_if_decided=True)
            continue
        if not cmd.target:
            receipt.results.append(Result(cmd.line, False, f"{cmd.verb} needs the id of a held post, "
                                          "e.g. 'approve K7Q2-TOKEN' as the digest prints it"))
            continue
        short_id, token = tokens.split_id(cmd.target)
        try:
            post = find_post(conn, short_id)
        except PostNotFound:
            _refuse(conn, secret, receipt, cmd, f"there is no post {short_id}", None, at)
            continue
        if token:
            token_ok = tokens.check(tokens.post_token(secret, post.list, post.id, post.short_id or ""), token)
            if not token_ok:
                _refuse(conn, secret, receipt, cmd, "the token does not match this post (copy the "
                        "line from the digest as it is)", post, at)
                continue
        else:
            _refuse(conn, secret, receipt, cmd, "the id carries no token: copy the line from the digest as "
                    f"it is ('{cmd.verb} {post.short_id}-TOKEN'), or use 'approve all TOKEN'", post, at)
            continue
        _apply_one(conn, secret, config, receipt, cmd, post, via_list, at, token_ok=True)
    return receipt


def _withdraw(conn: sqlite3.Connection, secret: bytes, config: Config, receipt: Receipt,
              cmd: CommandLine, references: set[str], at: float) -> None:
    """A poster takes back a held post by replying 'withdraw' to the notice that it is held."""
    for ref in references:
        found = tokens.parse_held_notice_id(ref)
        if found is None:
            continue
        try:
            post = find_post(conn, str(found[0]))
        except PostNotFound:
            continue
        if not tokens.check(tokens.poster_token(secret, post.list, post.id), found[1]):
            continue
        receipt.lists.add(post.list)
        if post.sender != receipt.moderator:
            _refuse(conn, secret, receipt, cmd, "only the poster can withdraw a post", post, at)
            return
        if post.state != "held":  # the poster is not told which moderator decided
            receipt.results.append(Result(cmd.line, False, f"the post was already {post.state}; "
                                          "it can no longer be withdrawn", post.list))
            return
        decide_held(conn, secret, config, post, "discard", "Withdrawn by the poster.",
                    f"poster:{receipt.moderator}", at, source="mail command: withdraw",
                    template="Withdrawn by the poster.")
        receipt.results.append(Result(cmd.line, True, f"{post.short_id} withdrawn; it will not be "
                                      "distributed", post.list))
        return
    _refuse(conn, secret, receipt, cmd, "withdraw works only as a reply to the notice that your "
            "post is held", None, at)


def _digest_for_token(conn: sqlite3.Connection, secret: bytes, token: str, config: Config) -> tuple[str, set[int]] | None:
    """(list, the posts it lists) of the digest whose token this is, when it is younger than its
    list's expire_after; None otherwise (an expired digest authorises nothing)."""
    now = time.time()
    oldest = now - max((m.expire_after for m in config.lists), default=0.0)
    for digest_id, list_address, message_id, sent_at in conn.execute(
            "SELECT id, list, message_id, sent_at FROM digests WHERE sent_at >= ? ORDER BY id DESC", (oldest,)):
        if not tokens.check(tokens.digest_token(secret, list_address, message_id), token):
            continue
        mlist = config.list_for(list_address)
        if mlist is None or now - sent_at > mlist.expire_after:
            return None
        return list_address, {pid for (pid,) in conn.execute("SELECT post FROM digest_items WHERE digest = ?",
                                                             (digest_id,))}
    return None


def _apply_one(conn: sqlite3.Connection, secret: bytes, config: Config, receipt: Receipt,
               cmd: CommandLine, post: PostRecord, via_list: ListConfig | None, at: float,
               token_ok: bool, quiet_if_decided: bool = False) -> None:
    mlist = config.list_for(post.list)
    if mlist is None:
        _refuse(conn, secret, receipt, cmd, f"post {post.short_id} belongs to {post.list}, which is "
                "no longer configured", post, at)
        return
    if via_list is not None and via_list.address != mlist.address:
        _refuse(conn, secret, receipt, cmd, f"post {post.short_id} belongs to {mlist.address}, not "
                f"to {via_list.address}", post, at)
        return
    if receipt.moderator not in mlist.moderators:
        _refuse(conn, secret, receipt, cmd, f"{receipt.moderator or 'the sender'} is not a moderator "
                f"of {mlist.address}", post, at)
        return
    if mlist.require_dkim and receipt.moderator.rsplit("@", 1)[-1] not in receipt.dkim_domains:
        _refuse(conn, secret, receipt, cmd, f"{mlist.address} requires a DKIM signature of "
                f"{receipt.moderator.rsplit('@', 1)[-1]} that passed, and the reply has none", post, at)
        return
    receipt.lists.add(mlist.address)
    if post.state != "held":
        if quiet_if_decided:
            return
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(post.decided_at or 0))
        who = post.actor.split(":", 1)[1] if ":" in post.actor else post.actor
        receipt.results.append(Result(cmd.line, False, f"already {post.state} by {who} at {when}; "
                                      "nothing changed", mlist.address))
        return
    if cmd.verb == "defer":
        receipt.results.append(Result(cmd.line, True, f"{post.short_id} stays held", mlist.address))
        return
    action = VERB_ACTION[cmd.verb]
    template = audit.FREE_TEXT if cmd.reason else {
        "accept": "Approved by a moderator of {list}.",
        "reject": "A moderator of {list} did not accept the post.",
        "discard": "Discarded by a moderator of {list}."}[action]
    reason = cmd.reason or template.replace("{list}", mlist.address)
    actor = f"moderator:{receipt.moderator}"
    try:
        done = decide_held(conn, secret, config, post, action, reason, actor, at,
                           source=f"mail command: {cmd.verb} {post.short_id}", template=template)
    except AlreadyDecided as err:
        receipt.results.append(Result(cmd.line, False, str(err), mlist.address))
        return
    if cmd.verb in ("trust", "ban") and post.sender:
        set_standing(conn, secret, mlist.address, post.sender, Level.TRUSTED if cmd.verb == "trust" else Level.BANNED,
                     actor=actor, reason=f"{cmd.verb} {post.short_id}: {reason}",
                     source=f"mail command: {cmd.verb} {post.short_id}", at=at)
    what = {"accepted": "approved; it is being delivered", "rejected": "rejected; the poster is told why",
            "discarded": "discarded"}[done.state]
    if cmd.verb == "trust":
        what += f"; {post.sender} now posts without review"
    if cmd.verb == "ban":
        what += f"; later posts from {post.sender} are rejected"
    receipt.results.append(Result(cmd.line, True, f"{post.short_id} {what}", mlist.address))


def receipt_message(receipt: Receipt, mlist: ListConfig, hostname: str, references: str = "",
                    to: str = "", audit_head: str = "") -> bytes:
    subject = receipt.subject if receipt.subject.lower().startswith("re:") else \
        (f"Re: {receipt.subject}" if receipt.subject else f"[{mlist.address}] moderation receipt")
    if len(subject) > 200:
        subject = subject[:197] + "..."
    msg = new_notice(mlist, (f"{mlist.address} moderation", mlist.moderation_address),
                     to or receipt.moderator, subject, hostname, in_reply_to=receipt.reply_id)
    if receipt.reply_id and references:  # threaded under the digest as well as the reply
        del msg["References"]
        msg["References"] = f"{references} {receipt.reply_id}"
    if audit_head:  # a witness of the audit chain, kept in the moderators' mailboxes
        msg["Audit-Head"] = audit_head
    lines = [f"{receipt.moderator or 'Someone'} sent these commands for {mlist.address}:", ""]
    for r in receipt.results:
        if r.list and r.list != mlist.address:
            continue
        lines.append(f"  {_shown(r.line)}")
        lines.append(f"      {'done' if r.applied else 'NOT applied'}: {r.outcome}")
    lines.append("")
    msg.set_content("\n".join(lines))
    return msg.as_bytes()


def send_receipts(conn: sqlite3.Connection, receipt: Receipt, config: Config, raw: bytes,
                  at: float, reply: Post | None = None) -> int:
    """Queue the receipt to each moderator of each list involved, one message each (no shared To:),
    threaded under the reply; a poster's withdraw is answered to the poster alone; a sender who is
    no moderator gets at most one short answer an hour that names nobody."""
    reply = parse(raw, "")
    references = " ".join(reply.header("references") or reply.header("in-reply-to"))
    lists = [m for m in (config.list_for(a) for a in sorted(receipt.lists)) if m is not None]
    hostname = config.server.hostname
    if receipt.unverified:
        mlist = lists[0] if lists else (config.lists[0] if config.lists else None)
        if mlist is None or not receipt.moderator or not may_notify(conn, receipt.moderator, at, 1):
            return 0
        enqueue_notice(conn, None, mlist, receipt.moderator, not_a_moderator_notice(
            mlist, receipt.moderator, receipt.reply_id, hostname), at)
        return 1
    sent = 0
    if receipt.poster_only or not lists:
        mlist = lists[0] if lists else (config.lists[0] if config.lists else None)
        if mlist is not None and receipt.moderator:
            enqueue_notice(conn, None, mlist, receipt.moderator,
                           receipt_message(receipt, mlist, hostname, references), at)
            sent += 1
        return sent
    head = audit.head_header(conn)
    for mlist in lists:
        for rcpt in mlist.moderators:
            body = receipt_message(receipt, mlist, hostname, references, to=rcpt, audit_head=head)
            enqueue_notice(conn, None, mlist, rcpt, body, at)
            sent += 1
    return sent


def process_reply(conn: sqlite3.Connection, secret: bytes, config: Config, raw: bytes,
                  via_list: ListConfig | None, at: float, prepared: PreparedReply | None = None) -> Receipt:
    """Apply one reply and queue its receipts, in the caller's transaction (give `prepared`, made
    by prepare_reply() in another thread, to keep the reading out of the transaction)."""
    prepared = prepared or prepare_reply(raw)
    receipt = apply_reply(conn, secret, config, raw, via_list=via_list, at=at, prepared=prepared)
    send_receipts(conn, receipt, config, raw, at, reply=prepared.post)
    return receipt


def reply_failed(conn: sqlite3.Connection, secret: bytes, raw: bytes, list_address: str, why: str,
                 at: float) -> None:
    """A reply that could not be applied is set aside; the record says which and why."""
    reply = parse(raw, "")
    audit.append(conn, secret, list=list_address, post=None, message_id=reply.message_id, sha256="",
                 sender=reply.from_address, action="reply-failed",
                 reason=f"the reply could not be applied and was set aside: {why}",
                 template="the reply could not be applied and was set aside: {the error}", rule="",
                 source="moderation worker", actor="moderation worker", at=at)


def expire_held(conn: sqlite3.Connection, secret: bytes, config: Config, at: float) -> int:
    """Posts held longer than their list's expire_after get its expire_action. An escalated post
    is a legal hold: it never expires (into delivery or anywhere else); the digests keep showing it."""
    expired = 0
    for mlist in config.lists:
        rows = conn.execute("SELECT id FROM posts WHERE list = ? AND state = 'held' AND created_at < ? "
                            "AND COALESCE(escalated, 0) = 0", (mlist.address, at - mlist.expire_after)).fetchall()
        for (pid,) in rows:
            post = find_post(conn, str(pid))
            action = mlist.expire_action if mlist.expire_action != "hold" else "reject"
            template = {"reject": f"No moderator of {{list}} reviewed the post within "
                                  f"{int(mlist.expire_after // 3600) or 1} hour(s), so it was not distributed.",
                        "accept": "No moderator objected in time; the post was accepted.",
                        "discard": "No moderator reviewed the post in time; it was discarded."}[action]
            decide_held(conn, secret, config, post, action, template.replace("{list}", mlist.address), "expiry",
                        at, source="expire_after", template=template)
            expired += 1
    return expired

