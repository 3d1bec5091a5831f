"""The fixed vocabularies of the store, as enums: what a rule or a person decides (Action), where a
post stands (PostState), and what an outbox row carries and where it is (OutboxKind, OutboxState).
They are StrEnums, so they are stored and compared as the plain words the schema has always held."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    ACCEPT = "accept"
    HOLD = "hold"
    REJECT = "reject"
    DISCARD = "discard"
    ESCALATE = "escalate"   # held as a legal hold, the escalation contact told
    TAG = "tag"             # a rule's mark on the way; never a decision


class PostState(StrEnum):
    ACCEPTED = "accepted"
    HELD = "held"
    REJECTED = "rejected"
    DISCARDED = "discarded"


STATE_FOR_ACTION = {Action.ACCEPT: PostState.ACCEPTED, Action.HOLD: PostState.HELD,
                    Action.REJECT: PostState.REJECTED, Action.DISCARD: PostState.DISCARDED,
                    Action.ESCALATE: PostState.HELD}


class OutboxKind(StrEnum):
    POST = "post"           # a list copy for one or more members
    NOTICE = "notice"       # a message listmod wrote (held, rejected, receipts, ...)
    ARTICLE = "article"     # an approved article for a news server
    DIGEST = "digest"       # held posts for the moderators (IMAP folder or Maildir)


class OutboxState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
