"""The values the rule engine works with: rules, rule sets, the decision context and decisions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..kinds import Action
from ..message import Post

if TYPE_CHECKING:
    from .scan import Scan, Scanner

ACTIONS = tuple(a.value for a in Action)
TERMINAL_ACTIONS = frozenset(ACTIONS) - {Action.TAG.value}
# who a rule may leave alone: the moderators, the members, or members of a trust level (named
# explicitly: "trusted" does not include "leader")
LEVELS = ("new", "basic", "trusted", "leader")
EXEMPTIONS = ("moderators", "members", *LEVELS)
ALL_LISTS = ("*",)  # the one tuple every rule for all lists shares, so the check is `is`


class RuleTimeout(Exception):
    """A rule's regex ran past its time limit for this message."""


class BudgetExhausted(RuleTimeout):
    """The message's time budget (the deadline given to decide()) ran out, not one regex's limit."""


class OutOfSlice(Exception):
    """decide(..., slice_only=True) could not finish by its deadline: judge again with more time."""


@dataclass(frozen=True)
class Context:
    """What decide() knows besides the message: the list, the sender's standing and the counters
    taken from the store. A counter is None when no rule of the set asks for it."""

    list_address: str
    list_id: str
    sender_is_member: bool
    sender_is_moderator: bool = False
    default_member_action: str = "accept"
    default_nonmember_action: str = "hold"
    sender_trust: str = "new"                  # new | basic | trusted | leader (docs/people.md)
    sender_sanction: str = ""                  # "" | note | warning | moderated | banned
    approved_posts: int | None = None
    posts_last_hour: int | None = None
    thread_posts_last_hour: int | None = None
    thread_participants: int | None = None
    thread_heat: int | None = None             # percent of the way to cool-down (threads.py)
    thread_state: str = ""                     # "" | "cooling" | "locked"
    thread_until: float | None = None          # when a cool-down ends
    auth: tuple[tuple[str, str], ...] = ()     # (method, result) from trusted Authentication-Results
    spam_score: float | None = None
    newsgroups: tuple[str, ...] = ()           # the groups the list moderates (a newsgroup's list)
    allow_control: bool = False                # its approved articles may keep Control/Supersedes


@dataclass(frozen=True)
class Facts:
    """A message seen through one rule set: the post, its context, and each field's scan (made once)."""

    post: Post
    context: Context
    scanners: dict[str, Scanner] = field(default_factory=dict)
    deadline: float | None = None   # time.monotonic() by which judging must end (None: no budget)
    release_gil: bool = False       # regexes let other threads run (in a judge thread, not on the loop)
    _scans: dict[str, Scan] = field(default_factory=dict, compare=False, repr=False)

    def scan(self, name: str, text: Callable[[], str]) -> Scan:
        """The scan of a field, made the first time a condition asks (`text` is read only then)."""
        found = self._scans.get(name)
        if found is None:
            found = self._scans[name] = self.scanners[name].scan(text())
        return found


# A compiled condition returns the evidence (what matched, in words) or None when it does not hold.
Condition = Callable[[Facts], str | None]


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    reason: str
    source: str                  # "rules/10-security.toml:12"
    condition: Condition
    lists: tuple[str, ...] = ALL_LISTS
    exempt: tuple[str, ...] = ()
    always: bool = False         # no conditions: matches every post it applies to
    category: str = ""           # e.g. "conduct": a rejection under a conduct rule demotes the sender

    def applies_to(self, list_address: str) -> bool:
        return "*" in self.lists or list_address in self.lists


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    digest: str                  # sha256 over the files' names and bytes: which set judged a message
    scanners: dict[str, Scanner] = field(default_factory=dict, compare=False)
    needs: frozenset[str] = frozenset()  # fields some rule reads (counters are fetched only if needed)


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
    action: str                  # accept | hold | reject | discard | escalate
    reason: str
    rule_id: str                 # the deciding rule, "default-member", "default-nonmember" or a built-in
    source: str                  # rules file:line, "default" or "builtin"
    actor: str                   # "rules", "default" (later also "admin", "moderator:ADDR")
    evidence: str = ""
    ruleset: str = ""
    tags: tuple[str, ...] = ()   # ids of the `tag` rules that matched on the way
    considered: tuple[Rule, ...] = ()          # every rule tried, in order
    notes: tuple[RuleOutcome, ...] = ()        # outcomes of the rules that matched, were exempt or failed
    template: str = ""           # the reason before {sender}, {subject}, {matched} were filled in (audited)
    category: str = ""           # the deciding rule's category ("conduct", ...)

    @property
    def trace(self) -> tuple[RuleOutcome, ...]:
        """Every rule considered, matched or not, with its evidence (built when asked for: a
        decision over 1,000 rules should not pay for 1,000 objects nobody reads)."""
        noted = {n.rule_id: n for n in self.notes}
        return tuple(noted.get(r.id) or RuleOutcome(r.id, r.source, r.action, False)
                     for r in self.considered) or self.notes
