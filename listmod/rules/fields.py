"""The fields a rule can test, and how each is read from a message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from .model import Facts

Value = Union[str, int, bool, tuple[str, ...]]


@dataclass(frozen=True)
class Field:
    name: str
    kind: str                    # "text", "texts" (any of several), "number", "size", "bool"
    read: Callable[[Facts], Value]
    help: str


def _largest_attachment(f: Facts) -> int:
    return max((a.size for a in f.post.attachments), default=0)


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("subject", "text", lambda f: f.post.subject, "the decoded Subject"),
    Field("body", "text", lambda f: f.post.body, "the text of the message (HTML reduced to text)"),
    Field("from", "text", lambda f: f.post.from_address, "the address in the From header"),
    Field("sender", "text", lambda f: f.post.envelope_sender, "the envelope sender (MAIL FROM)"),
    Field("size", "size", lambda f: f.post.raw_size, "the whole message in bytes, e.g. gt = \"5MB\""),
    Field("recipients", "number", lambda f: f.post.recipients, "how many addresses are in To and Cc"),
    Field("links", "number", lambda f: f.post.links, "how many web links the text contains"),
    Field("attachments", "number", lambda f: len(f.post.attachments), "how many attachments"),
    Field("attachment_size", "size", _largest_attachment, "the size of the largest attachment"),
    Field("attachment_types", "texts", lambda f: tuple(a.content_type for a in f.post.attachments),
          "the MIME types of the attachments, e.g. application/pdf"),
    Field("attachment_names", "texts", lambda f: tuple(a.filename for a in f.post.attachments),
          "the file names of the attachments"),
    Field("sender.member", "bool", lambda f: f.context.sender_is_member,
          "true when the sender is on the list's roster"),
    Field("sender.moderator", "bool", lambda f: f.context.sender_is_moderator,
          "true when the sender is one of the list's moderators"),
)}


def header_field(name: str) -> Field:
    """header."Name": every value of that header (decoded); any of them may match."""
    return Field(f'header."{name}"', "texts", lambda f: f.post.header(name),
                 f"the value(s) of the {name} header")
