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
from ..posts import AlreadyDecided, PostNotFound, PostRecord, decide_held, is_escalated, post_by_id
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
    elif moderator not in mlist.moderators and moderator == mlist.escalation_contact:
        if not is_escalated(step.conn, post.id) or step.cmd.verb not in CONTACT_VERBS:
            refuse(step, f"the escalation contact of {mlist.address} decides escalated posts, with "
                         f"{', '.join(CONTACT_VERBS)}; the moderators decide the rest", post)
            return None
        return mlist
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
    if step.receipt.moderator in mlist.moderators:
        return "moderator"
    return "contact" if step.receipt.moderator == mlist.escalation_contact else "leader"


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
    if mlist is None or not _still_held(step, post, mlist) or _claimed_by_another(step, post, mlist):
        return
    command, cmd = COMMANDS[step.cmd.verb], step.cmd
    given, until = cmd.reason, None
    if command.standing in ("banned", "warning"):   # "ban K7Q2 for 30d reason": a step with an end
        found = re.match(r"\s*for\s+([0-9]{1,6}\s*[smhd])\b\s*(.*)$", given, re.S | re.I)
        if found:
            try:
                until = step.at + parse_duration(found.group(1).replace(" ", "").lower())
                given = found.group(2).strip()
            except ValueError:
                pass
    canned = canned_reason(step, mlist, given, post)
    if canned == "":
        return
    template = canned or (audit.FREE_TEXT if given else _DEFAULT_REASON[command.action])
    reason = (canned or given or template).replace("{list}", mlist.address)
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
                                reason=reason, actor=actor, until=until, source=source, at=step.at, post=post.id)
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
    found = re.match(r"for\s+([0-9]{1,6}\s*[smhd])\b\s*(.*)$", given, re.S | re.I)
    if found and command.standing == "moderated":
        until = step.at + parse_duration(found.group(1).replace(" ", "").lower())
        given = found.group(2).strip()
    if not given:
        refuse(step, f"{cmd.verb} needs a reason after the id (the sender is told it, but of a note)", post)
        return
    canned = canned_reason(step, mlist, given, post)
    if canned == "":
        return
    given = canned.replace("{list}", mlist.address) if canned else given
    actor, source = f"moderator:{step.receipt.moderator}", f"mail command: {cmd.verb} {post.short_id}"
    if command.standing == "note":
        add_member_note(step.conn, mlist, post.sender, given, step.receipt.moderator, step.at)
    if command.standing == "lift":
        done = lift_sanction(step.conn, step.secret, step.config, mlist, post.sender, reason=given, actor=actor,
                             source=source, at=step.at)
        what = "sanction lifted" if done else "no sanction was in force"
    else:
        what = set_sanction(step.conn, step.secret, step.config, mlist, post.sender, command.standing,
                            reason=given, actor=actor, until=until, source=source, at=step.at, post=post.id)
    step.receipt.results.append(Result(cmd.line, True, f"{post.sender}: {what}", mlist.address))


def defer(step: Step, post: PostRecord | None) -> None:
    """Leave a held post held (and say so in the receipt)."""
    assert post is not None
    mlist = _moderator_may(step, post)
    if mlist is not None and _still_held(step, post, mlist):
        step.receipt.results.append(Result(step.cmd.line, True, f"{post.short_id} stays held", mlist.address))


def canned_reason(step: Step, mlist: ListConfig, given: str, post: PostRecord | None) -> str | None:
    """`#offtopic` -> the list's canned reason of that name (its text, {list} unfilled); None when
    the reason is the moderator's own words; "" (refused, with the names it has) for a name the
    list does not define."""
    found = re.match(r"#([A-Za-z0-9_-]+)\s*$", given.strip())
    if not found:
        return None
    text = dict(mlist.reasons).get(found.group(1).lower())
    if text is None:
        names = ", ".join(f"#{n}" for n, _ in mlist.reasons) or "none yet (add [list.reasons] to listmod.toml)"
        refuse(step, f"{mlist.address} has no canned reason #{found.group(1)}; it has: {names}", post)
        return ""
    return text


def _claimed_by_another(step: Step, post: PostRecord, mlist: ListConfig) -> bool:
    """A post another moderator claimed (and whose claim has not lapsed) is theirs to decide."""
    row = step.conn.execute("SELECT claimed_by, claimed_at FROM posts WHERE id = ?", (post.id,)).fetchone()
    if not row or not row[0] or row[0] == step.receipt.moderator or step.at - (row[1] or 0) > mlist.claim_for:
        return False
    until = time.strftime("%H:%M UTC", time.gmtime((row[1] or 0) + mlist.claim_for))
    refuse(step, f"{post.short_id} was claimed by {row[0]} (theirs to decide until {until}); "
                 f"nothing changed", post)
    return True


def claim(step: Step, post: PostRecord | None) -> None:
    """A moderator takes a held post to decide it: the others' commands on it are refused until
    they decide or claim_for passes."""
    assert post is not None
    mlist = _moderator_may(step, post)
    if mlist is None or not _still_held(step, post, mlist) or _claimed_by_another(step, post, mlist):
        return
    step.conn.execute("UPDATE posts SET claimed_by = ?, claimed_at = ? WHERE id = ?",
                      (step.receipt.moderator, step.at, post.id))
    audit.append(step.conn, step.secret, list=mlist.address, post=post.id, message_id=post.message_id, sha256="",
                 sender=post.sender, action="claimed", reason="", template="A moderator took the post to decide it.",
                 rule="", source=f"mail command: claim {post.short_id}",
                 actor=f"{role_of(step, mlist)}:{step.receipt.moderator}", at=step.at)
    until = time.strftime("%H:%M UTC", time.gmtime(step.at + mlist.claim_for))
    step.receipt.results.append(Result(step.cmd.line, True, f"{post.short_id} is yours to decide until {until}; "
                                       "the other moderators' commands on it are refused until then", mlist.address))


def add_member_note(conn: sqlite3.Connection, mlist: ListConfig, address: str, text: str, author: str,
                    at: float) -> None:
    """A moderator's note on a member, shown beside their posts in the next digests (personal data:
    `listmod privacy forget` removes it)."""
    conn.execute("INSERT INTO member_notes (list, address, note, author, at) VALUES (?, ?, ?, ?, ?)",
                 (mlist.address, address.lower(), text[:500], author, at))


def escalate(step: Step, post: PostRecord | None) -> None:
    """A moderator sends a post to the list's escalation contact with the evidence and a note; a
    held post stays held under a legal hold (it never expires) until someone decides."""
    assert post is not None
    mlist = _moderator_may(step, post)
    if mlist is None:
        return
    step.receipt.lists.add(mlist.address)
    if not mlist.escalation_contact:
        refuse(step, f"{mlist.address} has no escalation_contact; set it in listmod.toml", post)
        return
    from ..evidence import send_evidence  # (evidence builds on posts, as this module does)
    note = step.cmd.reason.strip()
    step.conn.execute("UPDATE posts SET escalated = 1 WHERE id = ?", (post.id,))
    sha = step.conn.execute("SELECT sha256 FROM messages WHERE id = ?", (post.message,)).fetchone()[0]
    audit.append(step.conn, step.secret, list=mlist.address, post=post.id, message_id=post.message_id, sha256=sha,
                 sender=post.sender, action="escalate", reason=note or "Escalated by a moderator.",
                 template=audit.FREE_TEXT if note else "Escalated by a moderator.", rule="",
                 source=f"mail command: escalate {post.short_id}",
                 actor=f"{role_of(step, mlist)}:{step.receipt.moderator}", at=step.at)
    send_evidence(step.conn, step.secret, mlist, post.id, note, step.config.server.hostname, step.at)
    held = " and stays held under a legal hold" if post.state == "held" else ""
    step.receipt.results.append(Result(step.cmd.line, True, f"{post.short_id} sent with its evidence to "
                                       f"{mlist.escalation_contact}{held}", mlist.address))


def keep(step: Step, post: PostRecord | None) -> None:
    """The escalation contact (or a moderator) leaves an escalated post held under the legal hold."""
    assert post is not None
    mlist = _moderator_may(step, post)
    if mlist is None or not _still_held(step, post, mlist):
        return
    if not is_escalated(step.conn, post.id):
        refuse(step, f"{post.short_id} is not escalated; keep applies to posts under a legal hold "
                     "(use defer to leave a post held)", post)
        return
    note = step.cmd.reason.strip()
    audit.append(step.conn, step.secret, list=mlist.address, post=post.id, message_id=post.message_id, sha256="",
                 sender=post.sender, action="kept", reason=note or "Kept under the legal hold.",
                 template=audit.FREE_TEXT if note else "Kept under the legal hold.", rule="",
                 source=f"mail command: keep {post.short_id}",
                 actor=f"{role_of(step, mlist)}:{step.receipt.moderator}", at=step.at)
    step.receipt.results.append(Result(step.cmd.line, True, f"{post.short_id} stays held under the legal hold",
                                       mlist.address))


def thread_control(step: Step, post: PostRecord | None) -> None:
    """cool, lock, unlock: the thread of a post the digest showed."""
    assert post is not None
    mlist = _moderator_may(step, post)
    if mlist is None:
        return
    step.receipt.lists.add(mlist.address)
    from ..threads import set_state, state_of
    key = step.conn.execute("SELECT COALESCE(thread, '') FROM posts WHERE id = ?", (post.id,)).fetchone()[0] \
        or post.message_id
    verb, given = step.cmd.verb, step.cmd.reason.strip()
    until = None
    if verb == "cool":
        found = re.match(r"for\s+([0-9]{1,6}\s*[smhd])\b\s*(.*)$", given, re.S | re.I)
        span = mlist.cooldown
        if found:
            span, given = parse_duration(found.group(1).replace(" ", "").lower()), found.group(2).strip()
        until = step.at + span
    now = state_of(step.conn, mlist.address, key, step.at)
    if verb == "unlock" and not now.state:
        step.receipt.results.append(Result(step.cmd.line, False, f"the thread of {post.short_id} is neither "
                                           "cooling down nor locked; nothing changed", mlist.address))
        return
    state = {"cool": "cooling", "lock": "locked", "unlock": ""}[verb]
    set_state(step.conn, step.secret, step.config, mlist, key, state, until=until,
              actor=f"{role_of(step, mlist)}:{step.receipt.moderator}", reason=given,
              source=f"mail command: {verb} {post.short_id}", post_id=post.id, at=step.at)
    said = {"cool": f"cools down until {time.strftime('%H:%M UTC', time.gmtime(until or 0))}",
            "lock": "is locked: new posts in it are held until you unlock it",
            "unlock": "is open again: posts in it are judged as usual"}[verb]
    step.receipt.results.append(Result(step.cmd.line, True, f"the thread of {post.short_id} {said}", mlist.address))


def withdraw(step: Step, post: PostRecord | None) -> None:
    """A poster takes back a held post by replying 'withdraw' to the notice that it is held: the
    notice's Message-ID (in the reply's references) carries the poster's token."""
    receipt, cmd = step.receipt, step.cmd
    for ref in step.references:
        found = tokens.parse_held_notice_id(ref)
        if found is None:
            continue
        try:
            post = post_by_id(step.conn, found[0])
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


def _appeal_verdict(step: Step, post: PostRecord | None) -> None:
    from .appealing import verdict_command  # (it builds on this module)
    verdict_command(step)


def _appeal_filed(step: Step, post: PostRecord | None) -> None:
    from .appealing import appeal_command
    appeal_command(step)


@dataclass(frozen=True)
class Command:
    name: str
    args: str                                   # as the help shows them
    help: str
    apply: Callable[[Step, PostRecord | None], None]
    action: str = ""                            # the decision it makes on the post ("" for none)
    standing: str = ""                          # what it makes of the sender: trusted, warning, banned
    under_each_post: bool = False               # printed, with the post's id, under each held post
    for_moderators: bool = True                 # withdraw and appeal are the poster's own
    own_target: bool = False                    # names no post: an appeal (AP12-TOKEN)


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
    Command("claim", "ID", "it is yours to decide: the others' commands on it wait (claim_for)", claim),
    Command("escalate", "ID note", "send it with the evidence to the escalation contact (a legal hold)",
            escalate),
    Command("keep", "ID note", "(escalated posts) leave it held under the legal hold", keep),
    Command("cool", "ID [for 2h]", "cool down the post's thread: new posts in it are held", thread_control),
    Command("lock", "ID", "lock the post's thread until unlocked", thread_control),
    Command("unlock", "ID", "end the thread's cool-down or lock", thread_control),
    Command("grant", "APPEAL", "grant an appeal: the post goes out, or the sanction is lifted", _appeal_verdict,
            own_target=True),
    Command("deny", "APPEAL reason", "deny an appeal; the poster is told the reason", _appeal_verdict,
            own_target=True),
    Command("withdraw", "", "(a poster, replying to the notice that the post is held) take it back",
            withdraw, for_moderators=False),
    Command("appeal", "", "(a poster, replying to a rejection or sanction notice) ask for another look",
            _appeal_filed, for_moderators=False),
)
CONTACT_VERBS = ("approve", "reject", "discard", "keep")
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
