"""Bounces: delivery reports sent to LIST-bounces@ read (RFC 3464 DSNs, the common non-standard
formats, RFC 5965 ARF feedback reports), and the members they name scored. A permanent failure
scores a point (at most one per `bounce_score_every`, a day, per member); a delay scores nothing. Past the list's
`bounce_threshold` the member is disabled (kept, but sent nothing), told, and re-enabled by
confirming; a complaint (ARF) is recorded and the owner told. Every change is audited."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from . import audit
from .config import Config, ListConfig
from .notices import new_notice
from .posts import enqueue_notice

MAX_READ = 256 * 1024

_ADDR = r"[A-Za-z0-9._%+\-=/!#$&'*?^`{|}~]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"
# Non-standard bounces: the wording of the MTAs that do not send DSNs (or send them as plain text)
_NONSTANDARD = (
    re.compile(r"following recipient[s]? failed permanently:\s*\n\s*<?(" + _ADDR + r")>?", re.I),
    re.compile(r"Delivery failed \d+ attempts?:\s*<?(" + _ADDR + r")>?", re.I),
    re.compile(r"could not be delivered to (?:one or more of )?(?:the following|its) recipients?[^\n]*\n\s*\n?\s*<?(" + _ADDR + r")>?", re.I),
    re.compile(r"^\s*<(" + _ADDR + r")>:\s*\n", re.M),                              # qmail
    re.compile(r"failed:\s*\n\s*\n?\s*<?(" + _ADDR + r")>?", re.I),                    # exim
    re.compile(r"550[ -]5\.1\.\d[^\n]*?<(" + _ADDR + r")>", re.I),
)


@dataclass(frozen=True)
class Failure:
    recipient: str
    permanent: bool       # failed (scores); a delay does not
    status: str = ""      # the enhanced status code, e.g. 5.1.1
    diagnostic: str = ""


@dataclass(frozen=True)
class Report:
    kind: str                       # "dsn" | "nonstandard" | "arf" | "unknown"
    failures: tuple[Failure, ...] = ()
    feedback_type: str = ""         # for ARF: abuse, fraud, ...
    complainant: str = ""           # for ARF: whose mailbox complained (the original recipient)


def _address(value: str) -> str:
    value = value.split(";", 1)[-1] if ";" in value else value
    found = re.search(_ADDR, value)
    return found.group(0).lower() if found else ""


def _field_groups(text: str) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status body (blank-line separated)."""
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                groups.append(current)
                current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            last = name.strip().lower()
            current.setdefault(last, value.strip())
    if current:
        groups.append(current)
    return groups


def _failures_from_groups(groups: list[dict[str, str]]) -> list[Failure]:
    out = []
    for g in groups:
        recipient = _address(g.get("final-recipient", "") or g.get("original-recipient", ""))
        if not recipient:
            continue
        action = g.get("action", "").lower()
        status = (re.search(r"\b([245])\.\d{1,3}\.\d{1,3}\b", g.get("status", "")) or [None, ""])[0] or ""
        if action in ("delivered", "relayed", "expanded"):
            continue
        permanent = action == "failed" if action else status.startswith("5")
        out.append(Failure(recipient, permanent, status, g.get("diagnostic-code", "")[:300]))
    return out


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload[:MAX_READ].decode(part.get_content_charset() or "utf-8", "replace") \
            if _charset_ok(part) else payload[:MAX_READ].decode("utf-8", "replace")
    if isinstance(payload, list):   # message/delivery-status parsed into field groups
        return "\n\n".join(str(m) for m in payload if isinstance(m, Message))
    return str(payload or "")


def _charset_ok(part: Message) -> bool:
    try:
        b"".decode(part.get_content_charset() or "utf-8")
        return True
    except LookupError:
        return False


def parse_report(raw: bytes) -> Report:
    """What a delivery report says, as far as it can be read; never raises."""
    try:
        return _parse(raw[:MAX_READ])
    except Exception:   # a report that breaks the parser is "unknown", never a crash
        return Report("unknown")


def _parse(raw: bytes) -> Report:
    msg = message_from_bytes(raw, policy=compat32)
    parts = list(msg.walk())
    types = [p.get_content_type() for p in parts]
    if "message/feedback-report" in types:
        report = parts[types.index("message/feedback-report")]
        fields = _field_groups(_text(report))
        merged = {k: v for g in fields for k, v in g.items()}
        complainant = _address(merged.get("original-rcpt-to", ""))
        if not complainant:
            enclosed = next((p for p in parts if p.get_content_type() in ("message/rfc822", "text/rfc822-headers")), None)
            if enclosed is not None:
                inner = enclosed.get_payload()
                inner_msg: Message = inner[0] if isinstance(inner, list) and inner and \
                    isinstance(inner[0], Message) else message_from_bytes(_text(enclosed).encode(), policy=compat32)
                complainant = _address(str(inner_msg.get("To", "")))
        return Report("arf", feedback_type=merged.get("feedback-type", "abuse").lower(), complainant=complainant)
    failures: list[Failure] = []
    for part in parts:
        if part.get_content_type() == "message/delivery-status":
            failures += _failures_from_groups(_field_groups(_text(part)))
    if not failures:   # a report whose MIME is broken: the fields may still be in the text
        text = raw.decode("utf-8", "replace")
        if re.search(r"(?im)^final-recipient:", text):
            start = re.search(r"(?im)^(reporting-mta|final-recipient|original-recipient):", text)
            failures = _failures_from_groups(_field_groups(text[start.start():] if start else text))
    if failures:
        return Report("dsn", _unique(failures))
    failed = [_address(v) for v in msg.get_all("X-Failed-Recipients", []) for v in str(v).split(",")]
    found = [a for a in failed if a]
    body = "\n".join(_text(p) for p in parts if p.get_content_type() == "text/plain")[:MAX_READ]
    if not found:
        for pattern in _NONSTANDARD:
            match = pattern.search(body)
            if match:
                found = [match.group(1).lower()]
                break
    if found:
        return Report("nonstandard", _unique([Failure(a, True) for a in found]))
    return Report("unknown")


def _unique(failures: list[Failure]) -> tuple[Failure, ...]:
    seen: dict[str, Failure] = {}
    for f in failures:
        if f.recipient not in seen or (f.permanent and not seen[f.recipient].permanent):
            seen[f.recipient] = f
    return tuple(seen.values())


def verp_recipient(rcpt: str) -> str:
    """LIST-bounces+alice=example.org@host -> alice@example.org ("" when there is no extension)."""
    local = rcpt.strip("<>").rpartition("@")[0]
    if "+" not in local:
        return ""
    ext = local.split("+", 1)[1]
    user, eq, domain = ext.rpartition("=")
    return f"{user}@{domain}".lower() if eq and user and "." in domain else ""


def apply_report(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, report: Report,
                 verp: str, at: float) -> list[str]:
    """Score the list's members a report names (inside the caller's transaction); what was done,
    as lines for the log."""
    done: list[str] = []
    hostname = config.server.hostname
    if report.kind == "arf":
        who = report.complainant or verp
        if who and _is_member(conn, mlist, who):
            audit.append(conn, secret, list=mlist.address, post=None, message_id="", sha256="", sender=who,
                         action="complaint", reason=f"A feedback report ({report.feedback_type}) says this member "
                         "marked the list's mail as unwanted.", template=f"feedback report: {report.feedback_type}",
                         rule="", source="bounces", actor="bounces", at=at)
            for staff in ([mlist.owner] if mlist.owner else list(mlist.moderators)):
                _mail(conn, mlist, staff, f"A member of {mlist.address} complained about its mail",
                      f"A feedback report ({report.feedback_type}, RFC 5965) from the member's mail provider says\n"
                      f"that {who} marked mail from {mlist.address} as unwanted.\n\nThey are still a member. "
                      f"To remove them: listmod members remove {mlist.address} {who}\n", hostname, at)
            done.append(f"complaint ({report.feedback_type})")
        return done
    failures = list(report.failures)
    if not failures and verp:
        failures = [Failure(verp, True)]
    for f in failures:
        if not f.permanent or not _is_member(conn, mlist, f.recipient):
            continue
        score, last, disabled = conn.execute(
            "SELECT COALESCE(bounce_score, 0), last_bounce, disabled_at FROM members WHERE list = ? AND address = ?",
            (mlist.address, f.recipient)).fetchone()
        if last is not None and at - last < mlist.bounce_score_every:
            continue   # one point a day (by default) at most: a burst of reports is one bad day
        if last is not None and at - last > mlist.bounce_reset_after:
            score = 0
        score += 1
        conn.execute("UPDATE members SET bounce_score = ?, last_bounce = ? WHERE list = ? AND address = ?",
                     (score, at, mlist.address, f.recipient))
        why = f" ({f.status})" if f.status else ""
        audit.append(conn, secret, list=mlist.address, post=None, message_id="", sha256="", sender=f.recipient,
                     action="bounce", reason=f"Mail to this member failed{why}; bounce score {score} of "
                     f"{mlist.bounce_threshold}.", template="a delivery to the member failed permanently",
                     rule="", source="bounces", actor="bounces", at=at)
        done.append(f"bounce score {score}")
        if score >= mlist.bounce_threshold and disabled is None:
            disable(conn, secret, config, mlist, f.recipient, at, f"{score} days with failed deliveries{why}")
            done.append("disabled")
    return done


def disable(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, address: str,
            at: float, why: str) -> None:
    """Stop sending to a member whose mail keeps failing; they stay a member, and a confirmation
    (mailed to them, in case it gets through) turns delivery on again."""
    from .subscriptions import new_confirmation
    conn.execute("UPDATE members SET disabled_at = ? WHERE list = ? AND address = ?", (at, mlist.address, address))
    audit.append(conn, secret, list=mlist.address, post=None, message_id="", sha256="", sender=address,
                 action="member-disabled", reason=f"Delivery to the member was stopped: {why}.",
                 template="delivery stopped after repeated failures", rule="", source="bounces",
                 actor="bounces", at=at)
    token = new_confirmation(conn, mlist, address, "enable", at)
    _mail(conn, mlist, address, f"confirm {token}",
          f"Mail from {mlist.address} to {address} has been failing ({why}),\nso the list has stopped "
          f"sending to this address. You are still a member.\n\nTo start again, reply to this message keeping "
          f"the subject (\"confirm {token}\").\n", config.server.hostname, at)


def enable(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, address: str, actor: str, at: float) -> bool:
    changed = conn.execute("UPDATE members SET disabled_at = NULL, bounce_score = 0, last_bounce = NULL "
                           "WHERE list = ? AND address = ? AND disabled_at IS NOT NULL",
                           (mlist.address, address)).rowcount
    if changed:
        audit.append(conn, secret, list=mlist.address, post=None, message_id="", sha256="", sender=address,
                     action="member-enabled", reason="Delivery to the member was turned on again.",
                     template="delivery turned on again", rule="", source="mail (confirmed)", actor=actor, at=at)
    return bool(changed)


def _is_member(conn: sqlite3.Connection, mlist: ListConfig, address: str) -> bool:
    return conn.execute("SELECT 1 FROM members WHERE list = ? AND address = ?",
                        (mlist.address, address)).fetchone() is not None


def _mail(conn: sqlite3.Connection, mlist: ListConfig, to: str, subject: str, body: str, hostname: str,
          at: float) -> None:
    msg = new_notice(mlist, (f"{mlist.address} list", mlist.request_address), to, subject, hostname,
                     auto="auto-generated")
    msg["Reply-To"] = mlist.request_address
    msg.set_content(body)
    enqueue_notice(conn, None, mlist, to, msg.as_bytes(), at)
