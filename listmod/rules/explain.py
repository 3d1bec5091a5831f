"""`explain` (why would this message be decided so?) and `replay` (what would another rule set have
decided on the stored history?). Both read; neither changes anything."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass

from ..config import Config, ListConfig
from ..message import Post, parse
from .context import build_context, context_from_json
from .engine import decide
from .model import Context, Decision, RuleSet


@dataclass(frozen=True)
class Explanation:
    post: Post
    context: Context
    decision: Decision

    def as_dict(self) -> dict:
        d = self.decision
        return {
            "list": self.context.list_address,
            "sender": self.post.sender,
            "subject": self.post.subject,
            "message_id": self.post.message_id,
            "ruleset": d.ruleset,
            "decision": {"action": d.action, "reason": d.reason, "rule": d.rule_id, "source": d.source,
                         "actor": d.actor, "evidence": d.evidence, "tags": list(d.tags)},
            "trace": [dataclasses.asdict(t) for t in d.trace],
            "context": dataclasses.asdict(self.context),
        }


def explain(conn: sqlite3.Connection, raw: bytes, mlist: ListConfig, config: Config, ruleset: RuleSet,
            envelope_sender: str | None = None) -> Explanation:
    first = parse(raw, envelope_sender or "")
    post = first if envelope_sender else parse(raw, first.from_address)
    ctx = build_context(conn, post, mlist, config, ruleset, time.time())
    return Explanation(post, ctx, decide(post, ctx, ruleset))


def explanation_text(e: Explanation) -> str:
    d = e.decision
    lines = [f"list:     {e.context.list_address}",
             f"sender:   {e.post.sender or '<>'} (member: {'yes' if e.context.sender_is_member else 'no'}, "
             f"moderator: {'yes' if e.context.sender_is_moderator else 'no'}, trust: {e.context.sender_trust})",
             f"subject:  {e.post.subject or '(no subject)'}",
             f"rule set: {d.ruleset[:12]}", "", "rules considered:"]
    if not d.trace:
        lines.append("  (none: a built-in check decided first)")
    for t in d.trace:
        mark = "MATCH" if t.matched else ("error" if t.error else "  -  ")
        detail = t.error or t.evidence or "no match"
        lines.append(f"  [{mark}] {t.rule_id:<28} {t.action:<8} {t.source}")
        lines.append(f"           {detail}")
    lines.append("")
    lines.append(f"decision: {d.action} by {d.rule_id} ({d.source})")
    if d.tags:
        lines.append(f"tags:     {', '.join(d.tags)}")
    if d.evidence:
        lines.append(f"evidence: {d.evidence}")
    answer = {"reject": "550 5.7.1", "accept": "250 (delivered)", "hold": "250 (held for moderation)",
              "escalate": "250 (held, escalated)", "discard": "250 (silently discarded)"}[d.action]
    lines.append(f"the poster would see: {answer}: {d.reason}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Change:
    post: int
    list: str
    sender: str
    subject: str
    at: float
    old_action: str
    old_rule: str
    old_reason: str
    new: Decision

    @property
    def transition(self) -> str:
        return f"{self.old_action} -> {self.new.action}"


@dataclass(frozen=True)
class ReplayResult:
    changes: tuple[Change, ...]
    judged: int
    transitions: dict[str, int]


def replay(conn: sqlite3.Connection, config: Config, ruleset: RuleSet, since: float | None = None,
           list_address: str | None = None) -> ReplayResult:
    """Judge every stored post (of the lists configured now) again with `ruleset`, in the context
    recorded when it arrived; report the posts whose automatic decision would change."""
    sql = ("SELECT p.id, p.list, p.sender, p.subject, p.created_at, p.context, m.raw, m.envelope_from, "
           "a.action, a.rule, a.reason FROM posts p JOIN messages m ON m.id = p.message "
           "JOIN audit a ON a.seq = (SELECT MIN(seq) FROM audit WHERE post = p.id "
           "AND actor IN ('rules', 'default')) WHERE a.rule != 'bounce' OR a.source != 'builtin'")
    args: list = []
    if since is not None:
        sql += " AND p.created_at >= ?"
        args.append(since)
    if list_address:
        sql += " AND p.list = ?"
        args.append(list_address)
    changes: list[Change] = []
    judged = 0
    for (post_id, address, sender, subject, at, context, raw, envelope_from, old_action, old_rule,
         old_reason) in conn.execute(sql + " ORDER BY p.id", args):
        mlist = config.list_for(address)
        if mlist is None:
            continue
        post = parse(raw, envelope_from or "")
        rebuilt = build_context(conn, post, mlist, config, ruleset, at)
        if context:
            recorded = context_from_json(context, mlist)
            # what was true then, except counters the old rules never asked for
            ctx = dataclasses.replace(recorded, **{
                f.name: getattr(rebuilt, f.name) for f in dataclasses.fields(Context)
                if getattr(recorded, f.name) is None})
        else:
            ctx = rebuilt
        new = decide(post, ctx, ruleset)
        judged += 1
        if new.action != old_action:
            changes.append(Change(post_id, address, sender, subject, at, old_action, old_rule,
                                  old_reason, new))
    transitions = Counter(c.transition for c in changes)
    return ReplayResult(tuple(changes), judged, dict(sorted(transitions.items())))
