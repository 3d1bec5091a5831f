"""The fields a rule can test, and how each is read from a message and its context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .model import Facts

Value = str | int | float | bool | tuple[str, ...] | None

# Evaluation cost classes: within one rule, cheaper conditions are tried first.
CHEAP, SMALL_TEXT, BODY = 0, 1, 2


@dataclass(frozen=True)
class Field:
    name: str
    kind: str                    # "text", "texts" (any of several), "number", "size", "score", "bool"
    read: Callable[[Facts], Value]
    help: str
    cost: int = SMALL_TEXT


def _largest_attachment(f: Facts) -> int:
    return max((a.size for a in f.post.attachments), default=0)


def _auth(method: str) -> Callable[[Facts], tuple[str, ...]]:
    def read(f: Facts) -> tuple[str, ...]:
        results = tuple(result for m, result in f.context.auth if m == method)
        return results or ("none",)
    return read


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("subject", "text", lambda f: f.post.subject, "the decoded Subject"),
    Field("body", "text", lambda f: f.post.body, "the text of the message (HTML reduced to text)", BODY),
    Field("from", "text", lambda f: f.post.from_address, "the address in the From header"),
    Field("sender", "text", lambda f: f.post.envelope_sender, "the envelope sender (MAIL FROM)"),
    Field("size", "size", lambda f: f.post.raw_size, "the whole message in bytes, e.g. gt = \"5MB\"", CHEAP),
    Field("recipients", "number", lambda f: f.post.recipients, "how many addresses are in To and Cc", CHEAP),
    Field("links", "number", lambda f: f.post.links, "how many web links the text contains", CHEAP),
    Field("attachments", "number", lambda f: len(f.post.attachments), "how many attachments", CHEAP),
    Field("attachment_size", "size", _largest_attachment, "the size of the largest attachment", CHEAP),
    Field("attachment_types", "texts", lambda f: tuple(a.content_type for a in f.post.attachments),
          "the MIME types of the attachments, e.g. application/pdf"),
    Field("attachment_names", "texts", lambda f: tuple(a.filename for a in f.post.attachments),
          "the file names of the attachments"),
    Field("sender.member", "bool", lambda f: f.context.sender_is_member,
          "true when the sender is on the list's roster", CHEAP),
    Field("sender.moderator", "bool", lambda f: f.context.sender_is_moderator,
          "true when the sender is one of the list's moderators", CHEAP),
    Field("sender.trust", "text", lambda f: f.context.sender_trust,
          'the sender\'s trust level on the list: "new", "basic", "trusted" or "leader"', CHEAP),
    Field("sender.sanction", "text", lambda f: f.context.sender_sanction or "none",
          'the sender\'s sanction on the list: "none", "note", "warning", "moderated" or "banned"', CHEAP),
    Field("sender.approved_posts", "number", lambda f: f.context.approved_posts,
          "how many of the sender's posts to this list were accepted before", CHEAP),
    Field("sender.posts_last_hour", "number", lambda f: f.context.posts_last_hour,
          "how many posts the sender sent to this list in the last hour (before this one)", CHEAP),
    Field("thread.posts_last_hour", "number", lambda f: f.context.thread_posts_last_hour,
          "posts in this post's thread in the last hour (before this one)", CHEAP),
    Field("thread.participants", "number", lambda f: f.context.thread_participants,
          "how many different people have posted in this post's thread", CHEAP),
    Field("thread.heat", "number", lambda f: f.context.thread_heat,
          "how close this post's thread is to cool-down, in percent of the nearer threshold "
          "(cool_posts_per_hour, cool_conduct_matches): 100 means it runs hot", CHEAP),
    Field("thread.locked", "bool", lambda f: f.context.thread_state == "locked",
          "true when the moderators locked this post's thread", CHEAP),
    Field("thread.cooling", "bool", lambda f: f.context.thread_state == "cooling",
          "true while this post's thread is cooling down", CHEAP),
    Field("auth.dkim", "texts", _auth("dkim"), "DKIM results (pass, fail, none, ...) from the trusted "
          "Authentication-Results header", CHEAP),
    Field("auth.spf", "texts", _auth("spf"), "the SPF result from the trusted Authentication-Results", CHEAP),
    Field("auth.dmarc", "texts", _auth("dmarc"), "the DMARC result from the trusted Authentication-Results",
          CHEAP),
    Field("spam.score", "score", lambda f: f.context.spam_score,
          "the score in the configured spam header (e.g. X-Spam-Score); absent: no test holds", CHEAP),
)}

GROUPS = sorted({name.split(".", 1)[0] for name in FIELDS if "." in name})


def header_field(name: str) -> Field:
    """header."Name": every value of that header (decoded); any of them may match."""
    return Field(f'header."{name}"', "texts", lambda f: f.post.header(name),
                 f"the value(s) of the {name} header")


def text_values(field: Field, facts: Facts) -> tuple[str, ...]:
    value = field.read(facts)
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (str(value),)


def number_value(field: Field, facts: Facts) -> float | None:
    value = field.read(facts)
    return None if value is None else value  # type: ignore[return-value]
