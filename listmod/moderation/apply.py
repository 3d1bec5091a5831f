"""Moderators' replies applied: who the sender is, which posts a command names (by the post's token
or a digest's), the command itself from the registry (commands.py), and a receipt for every reply.
Also the expiry of posts nobody decided."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass, replace

from .. import audit, tokens
from ..config import Config, ListConfig
from ..ladder import leaders
from ..message import Post, parse
from ..notices import new_notice, not_a_moderator_notice
from ..oplog import event, who
from ..posts import (
    PostNotFound,
    decide_held,
    enqueue_notice,
    find_post,
    is_escalated,
    may_notify,
    post_by_id,
)
from ..rules.context import dkim_pass_domains
from .commands import COMMANDS, REGISTRY, Receipt, Result, Step, add_member_note, person, refuse, shown
from .digest import verify_digest_id
from .replies import CommandLine, commands_in

log = logging.getLogger("listmod.moderation")
_MSGID = re.compile(r"<[^<>\s]+>")


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
    for ml in [via_list] if via_list else list(config.lists):   # leaders in training, where the list says so
        if ml is not None and ml.leaders_moderate:
            staff.update(leaders(conn, ml, at))
        if ml is not None and ml.escalation_contact:   # trusted like a moderator, for escalated posts
            staff.add(ml.escalation_contact)
    if moderator not in staff and any(c.verb not in POSTER_VERBS for c in commands):
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
    receipt.poster_only = bool(commands) and all(c.verb in POSTER_VERBS for c in commands)
    if reply.message_id:
        seen = conn.execute("SELECT received_at FROM replies WHERE message_id = ?",
                            (reply.message_id,)).fetchone()
        if seen:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen[0]))
            for cmd in commands or [CommandLine("(the whole reply)", "", "", "", False)]:
                refuse(Step(conn, secret, config, receipt, cmd, via_list, at), f"this reply ({reply.message_id}) "
                       f"was already processed at {when}; a reply is applied once", None)
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
        command = COMMANDS.get(cmd.verb) if cmd.known else None
        step = Step(conn, secret, config, receipt, cmd, via_list, at, frozenset(references))
        if command is None:
            receipt.results.append(Result(cmd.line, False, f"'{cmd.verb}' is not a command; commands "
                                          f"are: {', '.join(c.name for c in REGISTRY if c.for_moderators)}"))
            continue
        if not command.for_moderators or command.own_target:
            command.apply(step, None)
            continue
        if cmd.verb == "note" and "@" in cmd.target:
            note_member(step, references)
            continue
        if cmd.target == "all" and command.apply is person:
            refuse(step, f"{cmd.verb} acts on one person: name one of their posts ('{cmd.verb} K7Q2-TOKEN ...')",
                   None)
            continue
        if cmd.target == "all" and not command.action:
            refuse(step, f"{cmd.verb} acts on one post at a time: name it ('{cmd.verb} K7Q2-TOKEN')", None)
            continue
        if cmd.target == "all":
            found = _digest_for_token(conn, secret, cmd.digest_token, config) if cmd.digest_token else None
            if found is None:
                refuse(step, "'all' needs the token of a digest younger than expire_after, written on the line "
                       "as the digest prints it ('approve all TOKEN'); being a reply to a digest is not enough",
                       None)
                continue
            for pid in sorted(found[1]):
                post = post_by_id(conn, pid)
                if post.state == "held" and is_escalated(conn, post.id):
                    receipt.results.append(Result(cmd.line, False, f"{post.short_id} is escalated (a legal "
                                                  "hold): decide it on a line of its own that names it", post.list))
                    continue
                command.apply(replace(step, quiet_if_decided=True), post)
            continue
        if not cmd.target:
            receipt.results.append(Result(cmd.line, False, f"{cmd.verb} needs the id of a held post, "
                                          "e.g. 'approve K7Q2-TOKEN' as the digest prints it"))
            continue
        short_id, token = tokens.split_id(cmd.target)
        try:
            post = find_post(conn, short_id)
        except PostNotFound:
            refuse(step, f"there is no post {short_id}", None)
            continue
        if not token:
            refuse(step, "the id carries no token: copy the line from the digest as it is "
                   f"('{cmd.verb} {post.short_id}-TOKEN'), or use 'approve all TOKEN'", post)
            continue
        if not tokens.check(tokens.post_token(secret, post.list, post.id, post.short_id or ""), token):
            refuse(step, "the token does not match this post (copy the line from the digest as it is)", post)
            continue
        command.apply(step, post)
    return receipt


POSTER_VERBS = frozenset(c.name for c in REGISTRY if not c.for_moderators)


def note_member(step: Step, references: set[str]) -> None:
    """`note ADDR text`: a moderator's note on a member, shown beside their posts in the next
    digests. It names no post, so its authority is the digest it answers: the reply must refer to
    one of our digests (whose Message-ID carries a MAC) of a list the sender moderates."""
    cmd, receipt = step.cmd, step.receipt
    address = cmd.target.strip("<>").lower()
    lists = [m for m in ([step.via_list] if step.via_list else step.config.lists)
             if m is not None and receipt.moderator in m.moderators
             and any(verify_digest_id(step.secret, m.address, ref) for ref in references)]
    if not lists:
        refuse(step, "note ADDR works in a reply to a digest, from a moderator of its list "
               "(or name one of the member's posts: 'note K7Q2-TOKEN text')", None)
        return
    if not cmd.reason.strip():
        refuse(step, "note needs the text after the address", None)
        return
    for mlist in lists:
        receipt.lists.add(mlist.address)
        add_member_note(step.conn, mlist, address, cmd.reason.strip(), receipt.moderator, step.at)
        audit.append(step.conn, step.secret, list=mlist.address, post=None, message_id="", sha256="", sender=address,
                     action="noted", reason=cmd.reason.strip()[:500], template=audit.FREE_TEXT, rule="",
                     source="mail command: note", actor=f"moderator:{receipt.moderator}", at=step.at)
        receipt.results.append(Result(cmd.line, True, f"noted on {address}; the next digests show it beside "
                                      "their posts", mlist.address))


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
        lines.append(f"  {shown(r.line)}")
        lines.append(f"      {'done' if r.applied else 'NOT applied'}: {r.outcome}")
    lines.append("")
    msg.set_content("\n".join(lines))
    # unfolded, so that the Audit-Head value reads (and copies) as one line
    return msg.as_bytes(policy=msg.policy.clone(max_line_length=998))


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
        # the moderators, and a leader who sent the reply
        leader = [receipt.moderator] if mlist.leaders_moderate and receipt.moderator not in mlist.moderators \
            and receipt.moderator in leaders(conn, mlist, at) else []
        if receipt.moderator == mlist.escalation_contact and receipt.moderator not in mlist.moderators:
            leader = [receipt.moderator]   # the escalation contact hears what became of their reply
        for rcpt in [*mlist.moderators, *leader]:
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
    if not receipt.ignored:
        event(log, logging.INFO, "reply", list=",".join(sorted(receipt.lists)) or "-", sender=who(receipt.moderator),
              verified=not receipt.unverified, applied=sum(r.applied for r in receipt.results),
              refused=sum(not r.applied for r in receipt.results) if not receipt.unverified else len(prepared.commands))
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
            post = post_by_id(conn, pid)
            action = mlist.expire_action if mlist.expire_action != "hold" else "reject"
            template = {"reject": f"No moderator of {{list}} reviewed the post within "
                                  f"{int(mlist.expire_after // 3600) or 1} hour(s), so it was not distributed.",
                        "accept": "No moderator objected in time; the post was accepted.",
                        "discard": "No moderator reviewed the post in time; it was discarded."}[action]
            decide_held(conn, secret, config, post, action, template.replace("{list}", mlist.address), "expiry",
                        at, source="expire_after", template=template)
            expired += 1
    return expired

