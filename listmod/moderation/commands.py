"""Reply commands in one registry: each command's name, arguments, help and what it does to a held
post. The reply parser's verbs, the digest's help text and the lines under each held post all come
from here, so a new command is one entry and one function."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import audit, tokens
from ..config import Config, ListConfig
from ..ladder import leaders, level_of, lift_sanction, set_sanction, set_trust
from ..posts import AlreadyDecided, PostNotFound, PostRecord, decide_held, find_post, is_escalated
from ..tomlfile import parse_duration

if TYPE_CHECKING:
    from .replies import CommandLine


@dataclass(frozen=True)
class Result:
    line: str
    applied: bool
    outcome: str
    list: str = ""


@dataclass
class Receipt:
    moderator: str
    reply_id: str
    subject: str
    results: list[Result] = field(default_factory=list)
    lists: set[str] = field(default_factory=set)
    dkim_domains: set[str] = field(default_factory=set)
    unverified: bool = False     # the sender is no moderator: no receipt, at most a short answer
    ignored: bool = False        # an automatic message (Auto-Submitted): never applied, never answered
    poster_only: bool = False    # only a poster's withdraw: the receipt goes to the poster alone


@dataclass(frozen=True)
class Step:
    """One command line being applied, with everything its function may use."""

    conn: sqlite3.Connection
    secret: bytes
    config: Config
    receipt: Receipt
    cmd: CommandLine
    via_list: ListConfig | None
    at: float
    references: frozenset[str] = frozenset()   # Message-IDs the reply answers (withdraw only)
    quiet_if_decided: bool = False              # for 'all': a post decided already is passed over


def shown(line: str) -> str:
    """The command line without its token, as receipts and the audit show it (bounded)."""
    text = re.sub(r"\b([2-9A-Za-z]{4,6})-[0-9A-Za-z]{6,}\b", r"\1", line)
    return text if len(text) <= 160 else text[:157] + "..."


def refuse(step: Step, why: str, post: PostRecord | None) -> None:
    """A command line that is not applied: answered in the receipt and audited."""
    receipt, cmd = step.receipt, step.cmd
    receipt.results.append(Result(cmd.line, False, why, post.list if post else ""))
    if post is not None:
        receipt.lists.add(post.list)
    list_address = post.list if post else (step.via_list.address if step.via_list else "")
    audit.append(step.conn, step.secret, list=list_address, post=post.id if post else None,
                 message_id=post.message_id if post else "", sha256="", sender=receipt.moderator,
                 action="refused", reason=f"{shown(cmd.line)}: {why}",
                 template=f"a {cmd.verb or 'command'} line was refused: {{the line and why}}", rule="",
                 source="mail command", actor=f"moderator:{receipt.moderator}", at=step.at)


def _moderator_may(step: Step, post: PostRecord) -> ListConfig | None:
    """The post's list when this reply's sender may act on it; otherwise refused (and None)."""
    mlist = step.config.list_for(post.list)
    moderator = step.receipt.moderator
    if mlist is None:
        refuse(step, f"post {post.short_id} belongs to {post.list}, which is no longer configured", post)
    elif step.via_list is not None and step.via_list.address != mlist.address:
        refuse(step, f"post {post.short_id} belongs to {mlist.address}, not to {step.via_list.address}", post)
    elif moderator not in mlist.moderators and not _leader_may(step, mlist, post):
        pass   # refused, with the reason, by _leader_may
    elif mlist.require_dkim and moderator.rsplit("@", 1)[-1] not in step.receipt.dkim_domains:
        refuse(step, f"{mlist.address} requires a DKIM signature of {moderator.rsplit('@', 1)[-1]} that "
                     "passed, and the reply has none", post)
    else:
        return mlist
    return None


def _leader_may(step: Step, mlist: ListConfig, post: PostRecord) -> bool:
    """A leader (leaders_moderate) may decide a post by a new or basic member that is not escalated."""
    moderator = step.receipt.moderator
    if not (mlist.leaders_moderate and moderator in leaders(step.conn, mlist, step.at)):
        refuse(step, f"{moderator or 'the sender'} is not a moderator of {mlist.address}", post)
        return False
    level = level_of(step.conn, mlist, post.sender, step.at) if post.sender else "new"
    if level not in ("new", "basic") or is_escalated(step.conn, post.id) or COMMANDS[step.cmd.verb].standing:
        refuse(step, f"leaders of {mlist.address} decide posts by new and basic members (not {level} ones, "
                     "escalated posts, or a sender's standing); a moderator will decide this one", post)
        return False
    return True


def role_of(step: Step, mlist: ListConfig) -> str:
    """How the reply's sender acts on this list, as the audit trail names them."""
    return "moderator" if step.receipt.moderator in mlist.moderators else "leader"


def _still_held(step: Step, post: PostRecord, mlist: ListConfig) -> bool:
    step.receipt.lists.add(mlist.address)
    if post.state == "held":
        return True
    if not step.quiet_if_decided:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(post.decided_at or 0))
        who = post.actor.split(":", 1)[1] if ":" in post.actor else post.actor
        step.receipt.results.append(Result(step.cmd.line, False, f"already {post.state} by {who} at {when}; "
                                           "nothing changed", mlist.address))
    return False


_DEFAULT_REASON = {"accept": "Approved by a moderator of {list}.",
                   "reject": "A moderator of {list} did not accept the post.",
                   "discard": "Discarded by a moderator of {list}."}
_DONE = {"accepted": "approved; it is being delivered", "rejected": "rejected; the poster is told why",
         "discarded": "discarded"}


def decide(step: Step, post: PostRecord | None) -> None:
    """approve, reject, discard, trust, ban: a moderator's decision on one held post (and, for trust
    and ban, on the sender's standing)."""
    assert post is not None
    mlist = _moderator_may(step, post)
    if mlist is None or not _still_held(step, post, mlist):
        return
    command, cmd = COMMANDS[step.cmd.verb], step.cmd
    given, until = cmd.reason, None
    if command.standing in ("banned", "warning"):   # "ban K7Q2 for 30d reason": a step with an end
        found = re.match(r"\s*for\s+(\d+\s*[smhd])\b\s*(.*)$", given, re.S | re.I)
        if found:
            try:
                until = step.at + parse_duration(found.group(1).replace(" ", "").lower())
                given = found.group(2).strip()
            except ValueError:
                pass
    template = audit.FREE_TEXT if given else _DEFAULT_REASON[command.action]
    reason = given or template.replace("{list}", mlist.address)
    actor = f"{role_of(step, mlist)}:{step.receipt.moderator}"
    source = f"mail command: {cmd.verb} {post.short_id}"
    try:
        done = decide_held(step.conn, step.secret, step.config, post, command.action, reason, actor, step.at,
                           source=source, template=template)
    except AlreadyDecided as err:
        step.receipt.results.append(Result(cmd.line, False, str(err), mlist.address))
        return
    what = _DONE[done.state]
    if command.standing and post.sender:
        why = f"{cmd.verb} {post.short_id}: {reason}"
        if command.standing == "trusted":
            set_trust(step.conn, step.secret, step.config, mlist, post.sender, "trusted", actor=actor, reason=why,
                      source=source, at=step.at)
            what += f"; {post.sender} now posts without review"
        else:
            said = set_sanction(step.conn, step.secret, step.config, mlist, post.sender, command.standing,
                                reason=reason, actor=actor, until=until, source=source, at=step.at)
            what += f"; {post.sender}: {said}"
    step.receipt.results.append(Result(cmd.line, True, f"{post.short_id} {what}", mlist.address))


def person(step: Step, post: PostRecord | None) -> None:
    """moderate, note, lift: a moderator's act on the sender of a post a digest showed (held or
    decided); the post's token is the authority, as for any other command. The post is not decided."""
    assert post is not None
    mlist = _moderator_may(step, post)
    if mlist is None:
        return
    step.receipt.lists.add(mlist.address)
    command, cmd = COMMANDS[step.cmd.verb], step.cmd
    if not post.sender:
        refuse(step, f"post {post.short_id} has no sender address to act on", post)
        return
    given, until = cmd.reason.strip(), None
    found = re.match(r"for\s+(\d+\s*[smhd])\b\s*(.*)$", given, re.S | re.I)
    if found and command.standing == "moderated":
        until = step.at + parse_duration(found.group(1).replace(" ", "").lower())
        given = found.group(2).strip()
    if not given:
        refuse(step, f"{cmd.verb} needs a reason after the id (the sender is told it, but of a note)", post)
        return
    actor, source = f"moderator:{step.receipt.moderator}", f"mail command: {cmd.verb} {post.short_id}"
    if command.standing == "lift":
        done = lift_sanction(step.conn, step.secret, step.config, mlist, post.sender, reason=given, actor=actor,
                             source=source, at=step.at)
        what = "sanction lifted" if done else "no sanction was in force"
    else:
        what = set_sanction(step.conn, step.secret, step.config, mlist, post.sender, command.standing,
                            reason=given, actor=actor, until=until, source=source, at=step.at)
    step.receipt.results.append(Result(cmd.line, True, f"{post.sender}: {what}", mlist.address))


def defer(step: Step, post: PostRecord | None) -> None:
    """Leave a held post held (and say so in the receipt)."""
    assert post is not None
    mlist = _moderator_may(step, post)
    if mlist is not None and _still_held(step, post, mlist):
        step.receipt.results.append(Result(step.cmd.line, True, f"{post.short_id} stays held", mlist.address))


def withdraw(step: Step, post: PostRecord | None) -> None:
    """A poster takes back a held post by replying 'withdraw' to the notice that it is held: the
    notice's Message-ID (in the reply's references) carries the poster's token."""
    receipt, cmd = step.receipt, step.cmd
    for ref in step.references:
        found = tokens.parse_held_notice_id(ref)
        if found is None:
            continue
        try:
            post = find_post(step.conn, str(found[0]))
        except PostNotFound:
            continue
        if not tokens.check(tokens.poster_token(step.secret, post.list, post.id), found[1]):
            continue
        receipt.lists.add(post.list)
        if post.sender != receipt.moderator:
            refuse(step, "only the poster can withdraw a post", post)
            return
        if post.state != "held":  # the poster is not told which moderator decided
            receipt.results.append(Result(cmd.line, False, f"the post was already {post.state}; "
                                          "it can no longer be withdrawn", post.list))
            return
        decide_held(step.conn, step.secret, step.config, post, "discard", "Withdrawn by the poster.",
                    f"poster:{receipt.moderator}", step.at, source="mail command: withdraw",
                    template="Withdrawn by the poster.")
        receipt.results.append(Result(cmd.line, True, f"{post.short_id} withdrawn; it will not be "
                                      "distributed", post.list))
        return
    refuse(step, "withdraw works only as a reply to the notice that your post is held", None)


@dataclass(frozen=True)
class Command:
    name: str
    args: str                                   # as the help shows them
    help: str
    apply: Callable[[Step, PostRecord | None], None]
    action: str = ""                            # the decision it makes on the post ("" for none)
    standing: str = ""                          # what it makes of the sender: trusted, warning, banned
    under_each_post: bool = False               # printed, with the post's id, under each held post
    for_moderators: bool = True                 # withdraw is the poster's own


REGISTRY: tuple[Command, ...] = (
    Command("approve", "ID", "deliver it to the list", decide, action="accept", under_each_post=True),
    Command("reject", "ID reason", "the poster is told the reason", decide, action="reject", under_each_post=True),
    Command("discard", "ID", "drop it; nobody is told", decide, action="discard", under_each_post=True),
    Command("trust", "ID", "approve; this sender posts without review from now on", decide, action="accept",
            standing="trusted"),
    Command("warn", "ID [for 30d] reason", "reject, and warn the sender (told the reason and the guidelines)",
            decide, action="reject", standing="warning"),
    Command("ban", "ID [for 30d] reason", "reject; later posts from this sender are rejected (until the end)",
            decide, action="reject", standing="banned"),
    Command("moderate", "ID [for 14d] reason", "hold every post from this sender (until the end)", person,
            standing="moderated"),
    Command("note", "ID text", "a note about this sender, for the moderators only", person, standing="note"),
    Command("lift", "ID reason", "lift this sender's sanction", person, standing="lift"),
    Command("defer", "ID", "leave it held", defer),
    Command("withdraw", "", "(a poster, replying to the notice that the post is held) take it back",
            withdraw, for_moderators=False),
)
COMMANDS = {c.name: c for c in REGISTRY}
NAMES = tuple(COMMANDS)


def lines_under_post(command_id: str) -> list[str]:
    """The command lines printed under one held post in a digest, ready to copy."""
    return [f"    {c.name} {command_id}" + (" <reason for the poster>" if "reason" in c.args else "")
            for c in REGISTRY if c.under_each_post]


def digest_help(all_token: str) -> list[str]:
    """The help at the end of a digest, written from the registry."""
    width = max(len(f"{c.name} {c.args}") for c in REGISTRY)
    return (["Reply to this message with one command per line, above the quoted text:"]
            + [f"  {f'{c.name} {c.args}':<{width}}  {c.help}" for c in REGISTRY if c.for_moderators]
            + [f"  approve all {all_token}   reject all {all_token} reason   (every post in this digest but the "
               "escalated ones; the token is this digest's)", ""])
