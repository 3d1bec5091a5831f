"""Turning a submission into the article a moderator posts (RFC 5537 3.5.1): the submitter's
headers and body as they came, minus what the mail and news transports added, plus Approved:."""

from __future__ import annotations

import re

from ..config import ListConfig
from ..message import newsgroups_of
from ..rawmail import crlf_lines, split_message

# Headers added in transit that an approved article must not carry: the news server's own trace
# (Path, Xref, NNTP-Posting-*, Injection-*, X-Trace, X-Complaints-To) is written again when we
# post, and mail's (Received, Delivered-To, Return-Path, ...) never belonged to the article.
TRANSPORT_HEADERS = frozenset({
    b"path", b"xref", b"received", b"delivered-to", b"return-path", b"x-original-to", b"envelope-to",
    b"x-envelope-to", b"x-trace", b"x-complaints-to", b"complaints-to", b"nntp-posting-host",
    b"nntp-posting-date", b"injection-info", b"injection-date", b"approved", b"lines",
})
TRANSPORT_PREFIXES = (b"nntp-posting-", b"injection-")
# Headers by which an article acts on other articles; posted only where the list allows them.
CONTROL_HEADERS = frozenset({b"control", b"also-control", b"supersedes"})

def article_message_id(message_id: str, post_id: int, sha256: str, hostname: str) -> str:
    """The submission's Message-ID; one made from the post when it has none. Either way every
    retry posts the same id, so the news server can say "already have it" instead of a duplicate."""
    return message_id or f"<listmod.{post_id}.{sha256[:16]}@{hostname}>"


def approved_article(raw: bytes, mlist: ListConfig, message_id: str) -> bytes:
    """The article to POST: transport headers dropped, a To: naming only this submission address
    dropped (news servers add it when they mail the submission to us), Approved: set to the list's
    approved_by, Message-ID added when the submission had none, Newsgroups kept as submitted when it
    names one of the list's groups (a cross-post keeps all its groups: one POST approves it for
    all, RFC 5537 3.5.1) and the list's groups otherwise; the body unchanged."""
    fields, _sep, body = split_message(raw)
    kept: list[bytes] = []
    has_groups = has_id = False
    for f in fields:
        if not f or b":" not in f:
            continue
        name = f.split(b":", 1)[0].strip().lower()
        if name in TRANSPORT_HEADERS or name.startswith(TRANSPORT_PREFIXES):
            continue
        if name in CONTROL_HEADERS and not mlist.allow_control:
            continue  # a moderator approved the text, not a cancel of someone else's article
        if name == b"to" and _only_submission_address(f, mlist.address):
            continue
        if name == b"newsgroups":
            named = newsgroups_of(f.split(b":", 1)[1].decode("utf-8", "replace"))
            if not set(named) & set(mlist.newsgroups):
                continue  # our Approved: must not approve it for groups we do not moderate
            has_groups = True
        has_id = has_id or name == b"message-id"
        kept.append(f)
    if not has_groups:
        kept.append(b"Newsgroups: " + ",".join(mlist.newsgroups).encode())
    if not has_id:
        kept.append(b"Message-ID: " + message_id.encode())
    kept.append(b"Approved: " + mlist.approved.encode("utf-8"))
    return b"\r\n".join(kept) + b"\r\n\r\n" + crlf_lines(body)


def _only_submission_address(field: bytes, address: str) -> bool:
    value = field.split(b":", 1)[1].decode("utf-8", "replace")
    found = re.findall(r"[^\s<>,\"]+@[^\s<>,\"]+", value)
    return bool(found) and all(a.lower() == address for a in found)
