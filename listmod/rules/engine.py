"""decide(): the pure function that judges one post for one list and says why."""

from __future__ import annotations

import re
import time
from dataclasses import replace

from ..message import Post
from .model import ALL_LISTS as _ALL_LISTS
from .model import (
    TERMINAL_ACTIONS,
    BudgetExhausted,
    Context,
    Decision,
    Facts,
    OutOfSlice,
    Rule,
    RuleOutcome,
    RuleSet,
    RuleTimeout,
)

_AUTO_REPORTS = ("multipart/report",)
# Headers by which an article acts on others (RFC 5537 5.3, 5.4); with Approved: a server obeys them.
CONTROL_HEADERS = ("control", "also-control", "supersedes")


def _builtin(post: Post, ctx: Context) -> Decision | None:
    """Checks that hold for every list whatever its rules: loops, bounces, auto-replies, bad MIME.
    Each reason is a template: what came from the message is filled in at {matched} (the evidence)."""
    def _built(rule_id: str, action: str, template: str, evidence: str) -> Decision:
        outcome = RuleOutcome(rule_id, "builtin", action, True, evidence)
        return Decision(action=action, reason=render_reason(template, post, ctx, evidence), rule_id=rule_id,
                        source="builtin", actor="rules", evidence=evidence, notes=(outcome,), template=template)

    list_ids = " ".join(post.header("list-id")).lower()
    x_loop = [v.strip().lower() for v in post.header("x-loop")]
    if f"<{ctx.list_id}>" in list_ids or ctx.list_address in x_loop:
        return _built("loop", "discard",
                      "The message already went through {list} (its List-Id or "
                      "X-Loop header names this list), so it is a mail loop and is not sent again.",
                      "List-Id/X-Loop names this list")
    if not post.envelope_sender:
        return _built("bounce", "discard",
                      "The message has a null envelope sender (a bounce or delivery report); "
                      "such messages are recorded, never distributed to the list.",
                      "MAIL FROM:<>")
    if post.from_address.split("@", 1)[0] in ("mailer-daemon", "postmaster"):
        return _built("bounce", "discard",
                      "The message comes from a mail system (MAILER-DAEMON or postmaster), so it is "
                      "a delivery report; it is recorded, never distributed to the list.",
                      f"From: {post.from_address}")
    if post.content_type in _AUTO_REPORTS:
        return _built("bounce", "discard",
                      "The message is a delivery or read report (multipart/report); such messages "
                      "are recorded, never distributed to the list.",
                      f"Content-Type: {post.content_type}")
    auto = [v.strip().lower() for v in post.header("auto-submitted")]
    if any(v and not v.startswith("no") for v in auto):
        return _built("auto-reply", "discard",
                      "The message was sent automatically ({matched}, RFC 3834), so it is not "
                      "distributed to the list.",
                      f"Auto-Submitted: {auto[0]}")
    precedence = " ".join(post.header("precedence")).lower()
    if "auto_reply" in precedence:
        return _built("auto-reply", "discard",
                      "The message is an automatic reply (Precedence: auto_reply), so it is not "
                      "distributed to the list.", "Precedence: auto_reply")
    if ctx.sender_sanction == "banned":
        return _built("banned", "reject",
                      "The moderators of {list} have banned this sender; posts from "
                      "this address are not accepted.", f"sender.sanction is banned ({post.sender})")
    if ctx.sender_sanction == "moderated":
        return _built("moderated", "hold",
                      "The moderators of {list} read every post from this sender before it goes out "
                      "(the sender is moderated for now); a moderator will look at it.",
                      f"sender.sanction is moderated ({post.sender})")
    if ctx.newsgroups and not ctx.allow_control:
        control = [(name, value) for name in CONTROL_HEADERS for value in post.header(name)]
        if control:
            shown = "; ".join(f"{name.title()}: {value[:200]}" for name, value in control)
            return _built("control", "hold",
                          "The submission carries {matched}: a control message or a replacement acts on "
                          "other articles (a cancel deletes one) once it is approved. A moderator will "
                          "look at it; if approved, the article is posted without that header.", shown)
    if ctx.newsgroups:
        named = post.newsgroups
        if named and not set(named) & set(ctx.newsgroups):
            return _built("newsgroups", "hold",
                          "The submission is addressed to {matched}, none of which {list} moderates "
                          f"({', '.join(ctx.newsgroups)}); a moderator will look at it.", ', '.join(named))
    if post.problems:
        return _built("unparseable", "hold",
                      "The message could not be parsed: {matched}. A moderator will look at it.",
                      "; ".join(post.problems))
    return None


_TEMPLATE = re.compile(r"\{(list|request|sender|subject|matched)\}")


def render_reason(reason: str, post: Post, ctx: Context, evidence: str) -> str:
    """Fill {list}, {request} (its LIST-request@ address), {sender}, {subject} and {matched}; any
    other braces stay as written."""
    local, _, domain = ctx.list_address.rpartition("@")
    values = {"list": ctx.list_address, "request": f"{local}-request@{domain}", "sender": post.sender,
              "subject": post.subject, "matched": evidence}
    return _TEMPLATE.sub(lambda m: values[m.group(1)], reason)


def _exempt(rule_exempt: tuple[str, ...], ctx: Context) -> str:
    if "moderators" in rule_exempt and ctx.sender_is_moderator:
        return "the sender is a moderator"
    if ctx.sender_trust in rule_exempt:
        return f"the sender's trust level is {ctx.sender_trust}"
    if "members" in rule_exempt and ctx.sender_is_member:
        return "the sender is a member"
    return ""


def decide(post: Post, ctx: Context, ruleset: RuleSet, deadline: float | None = None,
           slice_only: bool = False) -> Decision:
    """Judge a post (see _decide); a post the rules would let through into a thread that is cooling
    down or locked is held instead, with a reason that says so (the moderators are not held)."""
    decision = _decide(post, ctx, ruleset, deadline, slice_only)
    if decision.action != "accept" or not ctx.thread_state or ctx.sender_is_moderator:
        return decision
    if ctx.thread_state == "locked":
        rule_id, template = "thread-locked", ("The moderators of {list} have locked this thread; new posts in it "
                                              "are read by a moderator before they go out.")
    else:
        until = time.strftime("%H:%M UTC", time.gmtime(ctx.thread_until or 0))
        rule_id, template = "thread-cooling", ("This thread on {list} is cooling down until " + until + ": it ran "
                                               "hot, so new posts in it are read by a moderator before they go out. "
                                               "Thank you for your patience.")
    evidence = f"thread.{'locked' if ctx.thread_state == 'locked' else 'cooling'} is true"
    outcome = RuleOutcome(rule_id, "builtin", "hold", True, evidence)
    return replace(decision, action="hold", reason=render_reason(template, post, ctx, evidence), rule_id=rule_id,
                   source="builtin", actor="rules", evidence=evidence, notes=(*decision.notes, outcome),
                   template=template, category="")


def _decide(post: Post, ctx: Context, ruleset: RuleSet, deadline: float | None = None,
            slice_only: bool = False) -> Decision:
    """Judge a post: built-in checks, then the rules in order (first terminal match decides; `tag`
    rules are recorded and evaluation goes on), then the list's default for members or non-members.
    No I/O; the trace shows every rule considered. With a `deadline` (time.monotonic()), a post
    whose rules cannot all run by then is held: it took too long to judge; with `slice_only`, the
    deadline is only a first slice, and OutOfSlice is raised instead, to judge again with more time."""
    built = _builtin(post, ctx)
    if built is not None:
        return replace(built, ruleset=ruleset.digest)
    facts = Facts(post, ctx, ruleset.scanners, deadline, release_gil=deadline is not None and not slice_only)
    considered: list[Rule] = []
    notes: list[RuleOutcome] = []
    tags: list[str] = []
    address = ctx.list_address
    for rule in ruleset.rules:
        if rule.lists is not _ALL_LISTS and not rule.applies_to(address):
            continue
        considered.append(rule)
        if rule.action == "hold" and ctx.sender_trust in ("trusted", "leader"):
            notes.append(RuleOutcome(rule.id, rule.source, rule.action, False,
                                     "exempt: the moderators trust this sender to post without review"))
            continue
        if rule.exempt:
            exempt = _exempt(rule.exempt, ctx)
            if exempt:
                notes.append(RuleOutcome(rule.id, rule.source, rule.action, False, f"exempt: {exempt}"))
                continue
        try:
            if deadline is not None and time.monotonic() > deadline:
                raise BudgetExhausted("the message's time budget ran out before this rule")
            evidence = rule.condition(facts)
        except RuleTimeout as err:
            if slice_only and isinstance(err, BudgetExhausted):
                raise OutOfSlice(str(err)) from None
            template = (f"The post took too long to judge: rule {rule.id} could not be evaluated in time "
                        "({matched}); the post is held for a moderator.")
            notes.append(RuleOutcome(rule.id, rule.source, rule.action, False, "", str(err)))
            return Decision("hold", render_reason(template, post, ctx, str(err)), rule.id, rule.source, "rules",
                            str(err), ruleset.digest, tuple(tags), tuple(considered), tuple(notes), template)
        if evidence is None:
            continue
        notes.append(RuleOutcome(rule.id, rule.source, rule.action, True, evidence))
        if rule.action in TERMINAL_ACTIONS:
            return Decision(rule.action, render_reason(rule.reason, post, ctx, evidence), rule.id,
                            rule.source, "rules", evidence, ruleset.digest, tuple(tags),
                            tuple(considered), tuple(notes), rule.reason, rule.category)
        tags.append(rule.id)
    done = (ruleset.digest, tuple(tags), tuple(considered), tuple(notes))

    def _default(action: str, template: str, rule_id: str, evidence: str) -> Decision:
        return Decision(action, render_reason(template, post, ctx, evidence), rule_id, "default", "default",
                        evidence, *done, template)

    if ctx.sender_trust in ("trusted", "leader"):
        return _default("accept", "The moderators of {list} trust this sender to post without review, and "
                        "no rule objected.", "trusted-sender", "sender.trust is trusted")
    member = ctx.sender_is_member
    action = ctx.default_member_action if member else ctx.default_nonmember_action
    return _default(action, _DEFAULT_REASONS[member][action], "default-member" if member else "default-nonmember",
                    f"sender.member is {'true' if member else 'false'}")


# The reasons of the lists' defaults, for members (True) and non-members (False), by action.
_DEFAULT_REASONS = {
    True: {"accept": "The sender is a member of {list} and no rule objected.",
           "hold": "Posts from members of {list} are reviewed by a moderator.",
           "reject": "{list} does not accept posts from its members by mail.",
           "discard": "{list} discards posts from members."},
    False: {"accept": "{list} accepts posts from non-members and no rule objected.",
            "hold": "The sender is not a member of {list}; a moderator will review the post.",
            "reject": "Only members may post to {list}; to join, send \"subscribe\" to {request}.",
            "discard": "{list} discards posts from non-members."},
}
