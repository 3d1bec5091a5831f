"""The appeal commands: `appeal` from a poster (a reply to a rejection or sanction notice), and a
moderator's `grant` or `deny` of it (listmod/appeals.py keeps the appeals themselves)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import audit, tokens
from ..appeals import decide_appeal

if TYPE_CHECKING:
    from .commands import Step


def appeal_command(step: Step) -> None:
    """`appeal <reasons>` from the poster, in a reply to a rejection or sanction notice."""
    from .commands import Result, refuse
    receipt, cmd = step.receipt, step.cmd
    for ref in step.references:
        found = tokens.parse_appealable_id(step.secret, ref)
        if found is None:
            continue
        row = step.conn.execute("SELECT id, list, post, address, kind FROM appealable WHERE id = ?", (found,)).fetchone()
        if row is None:
            continue
        appealable_id, list_address, post_id, address, kind = row
        receipt.lists.add(list_address)
        if address != receipt.moderator:
            refuse(step, "only the person the decision was about can appeal it", None)
            return
        if step.conn.execute("SELECT 1 FROM appeals WHERE appealable = ?", (appealable_id,)).fetchone():
            receipt.results.append(Result(cmd.line, False, "this decision was appealed already; the moderators "
                                          "answer each appeal once", list_address))
            return
        text = " ".join(x for x in (cmd.target, cmd.reason) if x).strip()[:2000]
        cursor = step.conn.execute(
            "INSERT INTO appeals (list, appealable, post, address, text, state, received_at) "
            "VALUES (?, ?, ?, ?, ?, 'open', ?)", (list_address, appealable_id, post_id, address, text, step.at))
        audit.append(step.conn, step.secret, list=list_address, post=post_id, message_id="", sha256="",
                     sender=address, action="appealed", reason=text, template=audit.FREE_TEXT, rule="",
                     source=f"appeal AP{cursor.lastrowid}", actor=f"poster:{address}", at=step.at)
        receipt.results.append(Result(cmd.line, True, f"your appeal (AP{cursor.lastrowid}) was received; a "
                                      "moderator will look at the decision again and you will hear the "
                                      "outcome", list_address))
        return
    refuse(step, "appeal works only as a reply to the notice of a rejection or a sanction", None)


def verdict_command(step: Step) -> None:
    """`grant AP12-TOKEN [reason]` or `deny AP12-TOKEN reason` from a moderator."""
    from .commands import Result, refuse
    cmd, receipt = step.cmd, step.receipt
    short, token = tokens.split_id(cmd.target)
    if not short.startswith("AP") or not short[2:].isascii() or not short[2:].isdigit():
        refuse(step, f"{cmd.verb} names an appeal as the digest prints it, e.g. '{cmd.verb} AP3-TOKEN'", None)
        return
    appeal_id = int(short[2:])
    row = step.conn.execute("SELECT a.list, a.state, a.post, a.address, d.kind, d.actor, d.reason FROM appeals a "
                            "JOIN appealable d ON d.id = a.appealable WHERE a.id = ?", (appeal_id,)).fetchone()
    if row is None or not tokens.check(tokens.appeal_token(step.secret, row[0], appeal_id), token):
        refuse(step, f"there is no appeal {short} with that token (copy the line from the digest as it is)", None)
        return
    list_address, state, post_id, address, kind, decided_by, decided_reason = row
    mlist = step.config.list_for(list_address)
    receipt.lists.add(list_address)
    if mlist is None or receipt.moderator not in mlist.moderators:
        refuse(step, f"only a moderator of {list_address} decides its appeals", None)
        return
    if state != "open":
        receipt.results.append(Result(cmd.line, False, f"{short} was already {state}; nothing changed", list_address))
        return
    decider = decided_by.partition(":")[2]
    if len(mlist.moderators) > 1 and decider == receipt.moderator:
        refuse(step, f"you made the decision {short} appeals; another moderator of {list_address} decides it", None)
        return
    reason = cmd.reason.strip()
    if cmd.verb == "deny" and not reason:
        refuse(step, f"deny needs a reason after the id ('deny {short}-TOKEN <reason for the poster>')", None)
        return
    from .commands import canned_reason
    canned = canned_reason(step, mlist, reason, None) if reason else None
    if canned == "":
        return
    reason = (canned or reason).replace("{list}", mlist.address)
    granted = cmd.verb == "grant"
    decide_appeal(step.conn, step.secret, step.config, mlist, appeal_id, granted, reason,
                  f"moderator:{receipt.moderator}", step.at)
    what = ("granted: " + ("the post goes out to the list" if kind == "rejection" else "the sanction is lifted")
            if granted else "denied; the poster is told why")
    receipt.results.append(Result(cmd.line, True, f"{short} {what}", list_address))
