"""Trust that is earned and sanctions that expire (docs/people.md).

Trust levels per list: `new` → `basic` (after `promote_basic_after` approved posts) → `trusted`
(after `promote_trusted_after` approved posts over `promote_trusted_days`, with no conduct
rejection in `conduct_window`); `trusted` and `leader` can also be given by hand (`trust`), and
`leader` only by hand. Nobody is demoted for being quiet: only a conduct rejection (a rule with
`category = "conduct"`) or a sanction lowers a level, and it clears a trust given by hand.

The sanction ladder: `note` (for the moderators only) → `warning` (the member is mailed what they
broke) → `moderated` (every post held) → `banned` (every post rejected). Each step has a reason and
may have an end (`for 30d`); when it ends, the member returns to the step before, without an end.
Every change is an audit record; the member is told of each step but a note, and of promotions."""

from __future__ import annotations

import sqlite3
import textwrap
import time
from dataclasses import dataclass

from . import audit
from .config import Config, ListConfig
from .notices import new_notice
from .posts import enqueue_notice, may_notify

LEVELS = ("new", "basic", "trusted", "leader")
LADDER = ("note", "warning", "moderated", "banned")
_ACTION = {"note": "noted", "warning": "warned", "moderated": "moderated", "banned": "banned"}
_MEANS = {"note": "a note for the moderators",
          "warning": "a warning",
          "moderated": "moderation: every post you send is read by a moderator before it goes out",
          "banned": "a ban: posts you send are not accepted"}


@dataclass(frozen=True)
class Standing:
    trust: str            # "" | trusted | leader: given by hand
    sanction: str         # "" | note | warning | moderated | banned (as stored; see `current`)
    until: float | None   # when the sanction ends
    previous: str         # the step it returns to
    reason: str
    told: str             # the level the member was last told of
    last_conduct: float | None = None   # when a post was last rejected under a conduct rule

    def current(self, at: float) -> str:
        """The sanction in force at `at` (an ended one has given way to the step before it)."""
        if self.sanction and self.until is not None and self.until <= at:
            return self.previous
        return self.sanction


NOBODY = Standing("", "", None, "", "", "new")


def standing_of(conn: sqlite3.Connection, list_address: str, address: str) -> Standing:
    row = conn.execute("SELECT trust, sanction, sanction_until, sanction_prev, sanction_reason, told_level, "
                       "last_conduct FROM standing WHERE list = ? AND address = ?", (list_address, address)).fetchone()
    if row is None:
        return NOBODY
    return Standing(row[0] if row[0] in ("trusted", "leader") else "", row[1] or "", row[2], row[3] or "",
                    row[4] or "", row[5] or "new", row[6])


def conduct_rejected(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, address: str,
                     at: float, actor: str = "rules") -> None:
    """A post was rejected under a conduct rule: a trust given by hand is cleared, and the level
    falls (at most basic while the rejection is within conduct_window)."""
    if not address:
        return
    conn.execute("INSERT INTO standing (list, address, last_conduct, set_at) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (list, address) DO UPDATE SET trust = NULL, last_conduct = excluded.last_conduct",
                 (mlist.address, address, at, at))
    note_level(conn, secret, config, mlist, address, at, why="(a post was rejected under a conduct rule)",
               actor=actor, source="trust levels")


def level_of(conn: sqlite3.Connection, mlist: ListConfig, address: str, at: float,
             standing: Standing | None = None) -> str:
    """The trust level of `address` on `mlist` now."""
    s = standing or standing_of(conn, mlist.address, address)
    sanction = s.current(at)
    if sanction in ("moderated", "banned"):
        return "new"
    if s.trust and sanction != "warning":
        return s.trust
    # bounded reads (this runs for every post): approved posts counted up to the higher threshold, the
    # first one found through the (list, sender, created_at) index, the last conduct rejection kept
    # in the standing row
    need = max(mlist.promote_trusted_after, mlist.promote_basic_after)
    approved = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM posts WHERE list = ? AND sender = ? AND "
                            "state = 'accepted' LIMIT ?)", (mlist.address, address, need)).fetchone()[0]
    if approved >= mlist.promote_trusted_after and sanction != "warning" \
            and not (s.last_conduct is not None and at - s.last_conduct < mlist.conduct_window):
        first = conn.execute("SELECT created_at FROM posts WHERE list = ? AND sender = ? AND state = 'accepted' "
                             "ORDER BY created_at LIMIT 1", (mlist.address, address)).fetchone()
        if first is not None and at - first[0] >= mlist.promote_trusted_days:
            return "trusted"
    if approved >= mlist.promote_basic_after:
        return "basic"
    return "new"


def _mail(conn: sqlite3.Connection, mlist: ListConfig, to: str, subject: str, body: str, hostname: str,
          at: float, per_hour: int, limited: bool = True, message_id: str = "") -> None:
    """`limited`: counted against held_notices_per_hour (promotions, which a member's own posts
    cause); a moderator's act on a person, and its end, is always told."""
    if limited and not may_notify(conn, to, at, per_hour):
        return
    msg = new_notice(mlist, (f"{mlist.address} moderators", mlist.moderation_address if message_id
                             else mlist.owner_alias), to, subject, hostname, auto="auto-generated",
                     message_id=message_id)
    if mlist.owner and not message_id:   # an appealable notice is answered to the moderation address
        msg["Reply-To"] = mlist.owner
    msg.set_content(body)
    enqueue_notice(conn, None, mlist, to, msg.as_bytes(), at)


def _record(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, address: str, action: str,
            template: str, reason: str, actor: str, source: str, at: float, post: int | None = None) -> None:
    audit.append(conn, secret, list=mlist.address, post=post, message_id="", sha256="", sender=address,
                 action=action, reason=reason or template.replace("{list}", mlist.address),
                 template=audit.FREE_TEXT if reason else template, rule="", source=source, actor=actor, at=at)


_TOLD = {"basic": "You are now a basic member of {list}: thank you for your posts.",
         "trusted": "You are now a trusted member of {list}: your posts go out without waiting for a "
                    "moderator. Thank you for your part in the list.",
         "leader": "You are now a leader of {list}."}


def note_level(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, address: str,
               at: float, *, why: str = "", actor: str = "rules", source: str = "trust levels") -> str:
    """Compare the member's level with the one they were last told of: a change is audited
    (`promoted`, `demoted`), a promotion mailed to them. The level now."""
    if not address:
        return "new"
    s = standing_of(conn, mlist.address, address)
    level = level_of(conn, mlist, address, at, s)
    if level == s.told:
        return level
    conn.execute("INSERT INTO standing (list, address, told_level, set_at) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (list, address) DO UPDATE SET told_level = excluded.told_level",
                 (mlist.address, address, level, at))
    up = LEVELS.index(level) > LEVELS.index(s.told)
    template = (f"The member's trust level on {{list}} rose from {s.told} to {level}." if up else
                f"The member's trust level on {{list}} fell from {s.told} to {level}.")
    _record(conn, secret, mlist, address, "promoted" if up else "demoted", template,
            f"{template.replace('{list}', mlist.address)} {why}".strip() if why else "", actor, source, at)
    if up and level in _TOLD:
        _mail(conn, mlist, address, f"Your standing on {mlist.address}: {level}",
              _TOLD[level].replace("{list}", mlist.address) + "\n", config.server.hostname, at,
              config.server.held_notices_per_hour)
    return level


def set_trust(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, address: str,
              level: str, *, actor: str, reason: str, source: str = "command line", at: float | None = None) -> bool:
    """Trust given (or taken back, level "") by hand: trusted or leader. False when nothing changed."""
    at = time.time() if at is None else at
    s = standing_of(conn, mlist.address, address)
    if s.trust == level:
        return False
    conn.execute("INSERT INTO standing (list, address, trust, set_by, set_at) VALUES (?, ?, ?, ?, ?) "
                 "ON CONFLICT (list, address) DO UPDATE SET trust = excluded.trust, set_by = excluded.set_by, "
                 "set_at = excluded.set_at", (mlist.address, address, level or None, actor, at))
    action = {"trusted": "trusted", "leader": "made-leader", "": "trust-cleared"}[level]
    template = {"trusted": "The sender may post to {list} without review.",
                "leader": "The member is a leader of {list}.",
                "": "The trust given by hand on {list} was taken back."}[level]
    _record(conn, secret, mlist, address, action, template, reason, actor, source, at)
    note_level(conn, secret, config, mlist, address, at, actor=actor, source=source)
    return True


def _history(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, address: str) -> list[str]:
    """The earlier steps the member was told of, oldest first, as lines."""
    alias = audit.pseudonym(secret, address)
    lines = []
    for when, action, reason in conn.execute(
            "SELECT time, action, reason FROM audit WHERE list = ? AND sender = ? AND action IN "
            "('warned', 'moderated', 'banned', 'sanction-lifted', 'sanction-ended') ORDER BY seq",
            (mlist.address, alias)):
        lines.append(f"{time.strftime('%Y-%m-%d', time.gmtime(when))}  {action}: {reason or '(erased)'}")
    return lines


def _step_notice(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, address: str,
                 step: str, until: float | None, back_to: str, reason: str, at: float, notice_id: str = "") -> None:
    before = _history(conn, secret, mlist, address)[:-1]   # the newest line is this step itself
    end = (f"Until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(until))}; then "
           f"{_MEANS[back_to] if back_to else 'nothing'} again." if until is not None else
           "It has no end date; the moderators can lift it.")
    guidelines = ""
    if step == "warning" and mlist.guidelines is not None:
        try:
            guidelines = "\nThe list's guidelines:\n\n" + textwrap.indent(
                mlist.guidelines.read_text(encoding="utf-8", errors="replace")[:32 * 1024].rstrip(), "    ") + "\n"
        except OSError:
            guidelines = ""
    body = (f"This is {_MEANS[step]} on {mlist.address}: step {LADDER.index(step) + 1} of 4 "
            f"({', '.join(LADDER)}).\n\nWhy:\n\n{textwrap.indent(textwrap.fill(reason, 72), '    ')}\n\n"
            f"{end}\n\nBefore this: " + ("\n" + "\n".join(f"    {b}" for b in before) if before else "nothing.")
            + f"\n{guidelines}\nIf you think this is wrong, reply to this message with the word\n"
            "`appeal` and your reasons on the same line: a moderator who did not\n"
            "decide it will look at it again.\n"
            f"To write to the list owner, use {mlist.owner_alias}.\n")
    _mail(conn, mlist, address, f"{step.capitalize()} on {mlist.address}", body, config.server.hostname, at,
          config.server.held_notices_per_hour, limited=False, message_id=notice_id)


def set_sanction(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, address: str,
                 step: str, *, reason: str, actor: str, until: float | None = None, source: str = "command line",
                 at: float | None = None, post: int | None = None) -> str:
    """Put a member on a step of the ladder (with an end, `until`, or none); audited, the member
    told (but of a note), and a trust given by hand cleared for a warning or worse."""
    assert step in LADDER
    at = time.time() if at is None else at
    s = standing_of(conn, mlist.address, address)
    current = s.current(at)
    back_to = current if until is not None and current != step else ""
    conn.execute("INSERT INTO standing (list, address, sanction, sanction_until, sanction_prev, sanction_reason, "
                 "set_by, set_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (list, address) DO UPDATE SET "
                 "sanction = excluded.sanction, sanction_until = excluded.sanction_until, sanction_prev = "
                 "excluded.sanction_prev, sanction_reason = excluded.sanction_reason, set_by = excluded.set_by, "
                 "set_at = excluded.set_at", (mlist.address, address, step, until, back_to, reason, actor, at))
    if step != "note" and s.trust:
        conn.execute("UPDATE standing SET trust = NULL WHERE list = ? AND address = ?", (mlist.address, address))
    ends = f" until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(until))}" if until is not None else ""
    template = {"note": "A moderator noted something about the member on {list}.",
                "warning": "The member was warned on {list}.",
                "moderated": "The member's posts to {list} are held for review.",
                "banned": "Posts from this sender to {list} are rejected."}[step]
    _record(conn, secret, mlist, address, _ACTION[step], template, f"{reason}{ends}" if reason else "",
            actor, source, at, post)
    if step != "note":
        from .appeals import appealable  # (appeals builds on this module)
        notice_id = appealable(conn, secret, mlist, post, address, "sanction", actor, f"{step}: {reason}", at,
                               config.server.hostname)
        _step_notice(conn, secret, config, mlist, address, step, until, back_to, reason, at, notice_id)
        note_level(conn, secret, config, mlist, address, at, why=f"({step})", actor=actor, source=source)
    return f"{step}{ends}"


def lift_sanction(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, address: str, *,
                  reason: str, actor: str, source: str = "command line", at: float | None = None,
                  tell: bool = True) -> bool:
    at = time.time() if at is None else at
    s = standing_of(conn, mlist.address, address)
    if not s.current(at):
        return False
    conn.execute("UPDATE standing SET sanction = NULL, sanction_until = NULL, sanction_prev = NULL, "
                 "sanction_reason = NULL WHERE list = ? AND address = ?", (mlist.address, address))
    _record(conn, secret, mlist, address, "sanction-lifted", "The member's sanction on {list} was lifted.",
            reason, actor, source, at)
    if tell:
        _mail(conn, mlist, address, f"Lifted on {mlist.address}",
              f"The {s.current(at)} on {mlist.address} was lifted. Why:\n\n    {reason}\n", config.server.hostname,
              at, config.server.held_notices_per_hour, limited=False)
    note_level(conn, secret, config, mlist, address, at, actor=actor, source=source)
    return True


def end_sanctions(conn: sqlite3.Connection, secret: bytes, config: Config, at: float) -> int:
    """Sanctions whose end has come: back to the step before (without an end), audited, told."""
    ended = 0
    for list_address, address, step, back_to in conn.execute(
            "SELECT list, address, sanction, COALESCE(sanction_prev, '') FROM standing "
            "WHERE sanction_until IS NOT NULL AND sanction_until <= ?", (at,)).fetchall():
        mlist = config.list_for(list_address)
        conn.execute("UPDATE standing SET sanction = ?, sanction_until = NULL, sanction_prev = NULL "
                     "WHERE list = ? AND address = ?", (back_to or None, list_address, address))
        if mlist is None:
            continue
        template = f"The member's {step} on {{list}} ended; back to {back_to or 'no sanction'}."
        _record(conn, secret, mlist, address, "sanction-ended", template, "", "expiry", "sanction ladder", at)
        _mail(conn, mlist, address, f"Ended on {mlist.address}: {step}",
              f"The {step} on {mlist.address} has ended. "
              + (f"You are back to {_MEANS[back_to]}, with no end date.\n" if back_to else
                 "No sanction is in force now.\n"), config.server.hostname, at, config.server.held_notices_per_hour,
              limited=False)
        note_level(conn, secret, config, mlist, address, at, actor="expiry", source="sanction ladder")
        ended += 1
    return ended


def leaders(conn: sqlite3.Connection, mlist: ListConfig, at: float) -> list[str]:
    """The list's leaders in good standing (no sanction beyond a note): with leaders_moderate they
    get the digest and may decide posts by new and basic members."""
    return [address for address, sanction, until, previous in conn.execute(
        "SELECT address, COALESCE(sanction, ''), sanction_until, COALESCE(sanction_prev, '') FROM standing "
        "WHERE list = ? AND trust = 'leader' ORDER BY address", (mlist.address,))
        if Standing("leader", sanction, until, previous, "", "").current(at) in ("", "note")]
