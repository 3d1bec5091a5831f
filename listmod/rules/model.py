"""The values the rule engine works with: rules, rule sets, the decision context and decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..message import Post

ACTIONS = ("accept", "hold", "reject", "discard")
TERMINAL_ACTIONS = frozenset(ACTIONS)


class RuleTimeout(Exception):
    """A rule's regex ran past its time limit for this message."""


@dataclass(frozen=True)
class Context:
    """What decide() knows besides the message: the list and the sender's standing on it."""

    list_address: str
    list_id: str
    sender_is_member: bool
    sender_is_moderator: bool = False
    default_member_action: str = "accept"
    default_nonmember_action: str = "hold"


@dataclass(frozen=True)
class Facts:
    """A message seen through the rules: the post plus its context."""

    post: Post
    context: Context


# A compiled condition returns the evidence (what matched, in words) or None when it does not hold.
Condition = Callable[[Facts], Optional[str]]


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    reason: str
    source: str                  # "rules/10-security.toml:12"
    condition: Condition
    lists: tuple[str, ...] = ("*",)

    def applies_to(self, list_address: str) -> bool:
        return "*" in self.lists or list_address in self.lists


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    digest: str                  # sha256 over the files' names and bytes: which set judged a message


@dataclass(frozen=True)
class RuleOutcome:
    """One line of a decision's trace: a rule considered, whether it matched, and why."""

    rule_id: str
    source: str
    action: str
    matched: bool
    evidence: str = ""
    error: str = ""


@dataclass(frozen=True)
class Decision:
    action: str                  # accept | hold | reject | discard
    reason: str
    rule_id: str                 # the deciding rule, "default-member", "default-nonmember" or a built-in
    source: str                  # rules file:line, "default" or "builtin"
    actor: str                   # "rules", "default" (later also "admin", "moderator:ADDR")
    evidence: str = ""
    trace: tuple[RuleOutcome, ...] = ()
    ruleset: str = ""
