"""Messages listmod writes itself: notices to posters about what happened to their posts."""

from __future__ import annotations

import email.utils
import textwrap
from email.message import EmailMessage
from email.policy import SMTP
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import ListConfig
    from .posts import PostRecord


def rejection_notice(mlist: "ListConfig", post: "PostRecord", reason: str, hostname: str) -> bytes:
    """Tell a poster their held post was rejected, and why, in words they can act on."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = email.utils.formataddr((f"{mlist.address} moderators", mlist.owner_alias))
    msg["To"] = post.sender
    msg["Subject"] = f"Your post to {mlist.address} was not accepted: {post.subject or '(no subject)'}"
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid("notice", domain=hostname)
    if post.message_id:
        msg["In-Reply-To"] = post.message_id
        msg["References"] = post.message_id
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: nobody should auto-answer this
    msg["Precedence"] = "list"
    msg["X-Loop"] = mlist.address
    if mlist.owner:
        msg["Reply-To"] = mlist.owner
    wrapped = "\n".join(textwrap.fill(line, 72) if line else "" for line in reason.splitlines())
    msg.set_content(
        f"Your post to {mlist.address} was reviewed and not accepted.\n\n"
        f"Subject: {post.subject or '(no subject)'}\n\n"
        f"Reason given:\n\n{textwrap.indent(wrapped, '    ')}\n\n"
        f"Nothing was sent to the list. If you think this was a mistake, reply to this\n"
        f"message to reach the list owner{f' ({mlist.owner})' if mlist.owner else ''}.\n")
    return msg.as_bytes()
