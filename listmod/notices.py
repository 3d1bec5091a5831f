"""Messages listmod writes itself: notices to posters about what happened to their posts."""

from __future__ import annotations

import email.utils
import re
import textwrap
from email.message import EmailMessage
from email.policy import SMTP
from typing import TYPE_CHECKING

from .message import printable
from .templates import render

if TYPE_CHECKING:
    from .config import ListConfig
    from .message import Post
    from .posts import PostRecord


def new_notice(mlist: ListConfig, sender: tuple[str, str], to: str, subject: str, hostname: str, *,
               message_id: str = "", in_reply_to: str = "", auto: str = "auto-replied") -> EmailMessage:
    """The headers every message listmod writes carries: ours, dated, marked as automatic (RFC 3834)
    and with X-Loop, so that no list and no vacation responder answers it."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = email.utils.formataddr(sender)
    msg["To"] = to
    msg["Subject"] = printable(subject)  # a poster's subject may carry terminal escapes
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = message_id or email.utils.make_msgid("listmod", domain=hostname)
    in_reply_to = printable(in_reply_to)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg["Auto-Submitted"] = auto
    msg["X-Loop"] = mlist.address
    return msg


def rejection_notice(mlist: ListConfig, post: PostRecord, reason: str, hostname: str, message_id: str = "") -> bytes:
    """Tell a poster their held post was rejected, and why, in words they can act on."""
    venue = ", ".join(mlist.newsgroups) or mlist.address
    wrapped = "\n".join(textwrap.fill(line, 72) if line else "" for line in to_poster(reason).splitlines())
    subject, body = render(
        mlist, "rejected", f"Your post to {venue} was not accepted: {post.subject or '(no subject)'}",
        f"Your post to {venue} was reviewed and not accepted.\n\n"
        f"Subject: {post.subject or '(no subject)'}\n\n"
        f"Reason given:\n\n{textwrap.indent(wrapped, '    ')}\n\n"
        f"Nothing was {'posted to the newsgroup' if mlist.newsgroups else 'sent to the list'}.\n\n"
        + ("If you think this was a mistake, reply to this message with the word\n"
           "`appeal` and your reasons on the same line: a moderator who did not\n"
           "decide it will look at it again.\n"
           if message_id else "")
        + f"To write to the list owner, use {mlist.owner_alias}.\n",
        subject=post.subject or "(no subject)", reason=reason, address=post.sender)
    msg = new_notice(mlist, (f"{mlist.address} moderators", mlist.moderation_address if message_id
                             else mlist.owner_alias), post.sender, subject, hostname, in_reply_to=post.message_id,
                     message_id=message_id)
    msg["Precedence"] = "list"
    if mlist.owner and not message_id:
        msg["Reply-To"] = mlist.owner
    msg.set_content(body)
    return msg.as_bytes()


def rules_refused_notice(mlist: ListConfig, problems: tuple[str, ...], in_force: str,
                         hostname: str) -> bytes:
    """Tell a list's owner that edited rules were refused, and what to fix."""
    msg = new_notice(mlist, ("listmod", mlist.owner_alias), mlist.owner,
                     f"listmod: the changed rules were refused ({len(problems)} problem(s))", hostname,
                     auto="auto-generated")
    msg.set_content(
        "The rule files were changed, but the new set has errors, so it was not put in force.\n"
        f"The last good rule set ({in_force[:12]}) still judges every post to {mlist.address}.\n\n"
        "Fix these, and listmod picks the files up by itself:\n\n"
        + "\n".join(f"  {p}" for p in problems) + "\n\n`listmod check` prints the same list.\n")
    return msg.as_bytes()


_TO_POSTER = ((re.compile(r"\bThe sender is\b"), "You are"), (re.compile(r"\bthe sender is\b"), "you are"),
              (re.compile(r"\bThe sender's\b"), "Your"), (re.compile(r"\bthe sender's\b"), "your"),
              (re.compile(r"\b[Tt]his sender\b"), "you"), (re.compile(r"\bThe sender\b"), "You"),
              (re.compile(r"\bthe sender\b"), "you"))


def to_poster(reason: str) -> str:
    """A reason written for moderators ("The sender is not a member ...") as said to the poster
    ("You are not a member ..."); a rule's own words addressed to the poster pass unchanged."""
    for pattern, replacement in _TO_POSTER:
        reason = pattern.sub(replacement, reason)
    return reason


def held_notice(mlist: ListConfig, post: Post, short_id: str, reason: str, message_id: str,
                hostname: str) -> bytes:
    """Tell a poster, once, that the post awaits review, why, and how to withdraw it."""
    subject, body = render(
        mlist, "held", f"Your post to {mlist.address} awaits review: {post.subject or '(no subject)'}",
        f"Your post to {mlist.address} is waiting for a moderator (it is held as {short_id}) because:\n\n"
        f"{textwrap.indent(textwrap.fill(to_poster(reason), 72), '    ')}\n\n"
        "You will hear from us again when it has been decided. To take the post back, reply to this\n"
        "message with the single word:\n\n    withdraw\n",
        id=short_id, reason=reason, subject=post.subject or "(no subject)", address=post.sender)
    msg = new_notice(mlist, (f"{mlist.address} moderators", mlist.moderation_address), post.sender,
                     subject, hostname, message_id=message_id, in_reply_to=post.message_id)
    msg.set_content(body)
    return msg.as_bytes()


def approved_notice(mlist: ListConfig, post: PostRecord, hostname: str) -> bytes:
    """Tell a poster who was told their post is held that a moderator let it through."""
    venue = ", ".join(mlist.newsgroups) or mlist.address
    subject, body = render(
        mlist, "approved", f"Your post to {venue} was approved: {post.subject or '(no subject)'}",
        f"Your post to {venue} was read by a moderator and approved; it is on its way "
        f"to {'the newsgroup' if mlist.newsgroups else 'the list'} now.\n\nSubject: {post.subject or '(no subject)'}\n",
        subject=post.subject or "(no subject)", address=post.sender)
    msg = new_notice(mlist, (f"{mlist.address} moderators", mlist.moderation_address), post.sender,
                     subject, hostname, in_reply_to=post.message_id)
    msg.set_content(body)
    return msg.as_bytes()


def article_failed_notice(mlist: ListConfig, post: PostRecord, detail: str, hostname: str, *,
                          to: str) -> bytes:
    """Tell the poster (and the owner) that an approved article could not be posted, and why."""
    groups = ", ".join(mlist.newsgroups)
    msg = new_notice(mlist, (f"{mlist.address} moderators", mlist.owner_alias), to,
                     f"Not posted to {groups}: {post.subject or '(no subject)'}", hostname,
                     in_reply_to=post.message_id, auto="auto-generated")
    if mlist.owner:
        msg["Reply-To"] = mlist.owner
    msg.set_content(
        f"The article below was approved for {groups}, but the news server did not take it,\n"
        "so it does not appear in the group.\n\n"
        f"Subject:    {post.subject or '(no subject)'}\n"
        f"Message-ID: {post.message_id or '(none)'}\n"
        f"Post:       {post.label} on {mlist.address}\n\n"
        f"What the news server said:\n\n{textwrap.indent(textwrap.fill(detail, 72), '    ')}\n\n"
        f"The list owner{f' ({mlist.owner})' if mlist.owner else ''} has been told as well.\n")
    return msg.as_bytes()


def not_a_moderator_notice(mlist: ListConfig, to: str, in_reply_to: str, hostname: str) -> bytes:
    """The one short answer an hour to a sender of commands who is not a moderator: it repeats
    nothing from their message and names nobody."""
    msg = new_notice(mlist, (f"{mlist.address} moderation", mlist.moderation_address), to,
                     f"Not applied: {mlist.moderation_address} takes commands from moderators only",
                     hostname, in_reply_to=in_reply_to, auto="auto-replied")
    msg.set_content(
        f"Your message to {mlist.moderation_address} was not applied: this address takes\n"
        f"moderation commands only from the moderators of {mlist.address}.\n\n"
        "If you posted to the list and want to take a held post back, reply 'withdraw' to the\n"
        "notice that told you it is held. You get this answer at most once an hour.\n")
    return msg.as_bytes()


def undelivered_notice(mlist: ListConfig, subject: str, post_label: str, failed: int, detail: str,
                       hostname: str, *, to: str) -> bytes:
    """Tell the owner that copies of a post could not be delivered, with the server's words."""
    msg = new_notice(mlist, ("listmod", mlist.owner_alias), to,
                     f"[{mlist.address}] {failed} cop{'y' if failed == 1 else 'ies'} of a post not "
                     f"delivered: {subject or '(no subject)'}", hostname, auto="auto-generated")
    msg.set_content(
        f"{failed} cop{'y' if failed == 1 else 'ies'} of post {post_label} to {mlist.address} could not be "
        "delivered; the outgoing mail server refused them.\n\n"
        f"What it said:\n\n{textwrap.indent(textwrap.fill(detail, 72), '    ')}\n\n"
        "`listmod outbox --failed` lists them; once the cause is fixed, `listmod outbox retry "
        "--failed`\nsends them again.\n")
    return msg.as_bytes()
