"""Joining and leaving by mail: LIST-request@ (subscribe, unsubscribe, help, confirm TOKEN in the
subject or the first line), LIST-join@ and LIST-leave@. Nothing changes until the address itself
confirms: the confirmation goes to the address to be (un)subscribed, carries a token that expires,
and at most `held_notices_per_hour` automatic messages go to one address an hour, so that nobody can
use the list to mail-bomb a third party. A confirmed change is an audit record; the new member gets
the list's welcome (with its guidelines), a leaving one a goodbye."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import textwrap
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

from .config import Config, ListConfig
from .message import decode_words, printable
from .notices import new_notice
from .posts import enqueue_notice, may_notify
from .standing import add_member, remove_member, set_options
from .templates import render
from .web import confirm_url

TOKEN_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
COMMANDS = ("subscribe", "unsubscribe", "help", "confirm")
_WORDS = {"subscribe": "subscribe", "join": "subscribe", "unsubscribe": "unsubscribe", "leave": "unsubscribe",
          "remove": "unsubscribe", "signoff": "unsubscribe", "help": "help", "confirm": "confirm"}
_COMMAND = re.compile(r"^\s*(?:(?:re|aw|sv|fw|fwd)\s*:\s*)*([a-z]+)(?:\s+([a-z0-9]{6,32}))?\b", re.I)
MAX_READ = 64 * 1024   # a request is a line; no more than this of it is read


@dataclass(frozen=True)
class Request:
    command: str      # subscribe | unsubscribe | options | help | confirm | automatic | "" (not understood)
    address: str      # who asks: the From address, else the envelope sender
    token: str = ""   # for confirm
    options: str = "" # for options: "nomail=on,metoo=off" ("" asks what they are)


_OPTIONS = re.compile(r"^\s*(?:(?:re|aw|sv)\s*:\s*)*options\b(.*)$", re.I)
_SETTING = re.compile(r"\b(nomail|metoo|not_metoo|digest)\s*(?:=\s*)?(on|off|yes|no|true|false)\b", re.I)


def read_options(text: str) -> str | None:
    """"options nomail on not_metoo off" -> "nomail=on,metoo=on"; None when the text is no options line."""
    found = _OPTIONS.match(text)
    if found is None:
        return None
    settings: dict[str, str] = {}
    for name, value in _SETTING.findall(found.group(1)):
        on = value.lower() in ("on", "yes", "true")
        if name.lower() == "not_metoo":
            name, on = "metoo", not on
        settings[name.lower()] = "on" if on else "off"
    return ",".join(f"{k}={v}" for k, v in sorted(settings.items()))


def _first_text_line(msg: Message) -> str:
    parts = [p for p in msg.walk() if p.get_content_type() == "text/plain"] if msg.is_multipart() else [msg]
    if not parts:
        return ""
    part = parts[0]
    try:
        payload = part.get_payload(decode=True)
        text = payload[:4096].decode(part.get_content_charset() or "utf-8", "replace") \
            if isinstance(payload, bytes) else ""
    except (LookupError, ValueError):
        text = payload[:4096].decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return next((line for line in text.splitlines() if line.strip()), "")


def read_request(raw: bytes, envelope_from: str, role: str) -> Request:
    """What a mail to LIST-request@ (or -join@, -leave@) asks. Pure: the store is not touched."""
    msg = message_from_bytes(raw[:MAX_READ], policy=compat32)
    pairs = [p for p in getaddresses([printable(decode_words(str(v))) for v in msg.get_all("From", [])])
             if "@" in p[1]]
    address = (pairs[0][1] if pairs else envelope_from).strip().lower()
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if not envelope_from or (auto and auto != "no") or \
            str(msg.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list"):
        return Request("automatic", address)   # a bounce or an auto-reply is never answered (RFC 3834)
    if role == "join":
        return Request("subscribe", address)
    if role == "leave":
        return Request("unsubscribe", address)
    for text in (printable(decode_words(str(msg.get("Subject", "")))), _first_text_line(msg)):
        options = read_options(text)
        if options is not None:
            return Request("options", address, options=options)
        found = _COMMAND.match(text)
        if found and found.group(1).lower() in _WORDS:
            command = _WORDS[found.group(1).lower()]
            token = (found.group(2) or "").lower() if command == "confirm" else ""
            if command == "confirm" and not token:
                continue
            return Request(command, address, token)
        tokens = re.search(r"\bconfirm\s+([a-z0-9]{6,32})\b", text, re.I)
        if tokens:
            return Request("confirm", address, tokens.group(1).lower())
    return Request("", address)


def _token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(12))


def new_confirmation(conn: sqlite3.Connection, mlist: ListConfig, address: str, action: str, at: float) -> str:
    """A token that, mailed back to LIST-request@, does `action` for `address` (until confirm_within)."""
    token = _token()
    conn.execute("INSERT INTO confirmations (token, list, address, action, created_at, expires_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (token, mlist.address, address, action, at, at + mlist.confirm_within))
    return token


def _is_member(conn: sqlite3.Connection, mlist: ListConfig, address: str) -> bool:
    return conn.execute("SELECT 1 FROM members WHERE list = ? AND address = ?",
                        (mlist.address, address)).fetchone() is not None


def _mail(conn: sqlite3.Connection, mlist: ListConfig, to: str, subject: str, body: str, hostname: str,
          at: float, in_reply_to: str = "") -> None:
    msg = new_notice(mlist, (f"{mlist.address} list", mlist.request_address), to, subject, hostname,
                     in_reply_to=in_reply_to)
    msg["Reply-To"] = mlist.request_address
    msg.set_content(body)
    enqueue_notice(conn, None, mlist, to, msg.as_bytes(), at)


def help_text(mlist: ListConfig) -> str:
    return (f"{mlist.address} understands these requests, mailed to {mlist.request_address}\n"
            "with the request as the subject (or the first line of the text):\n\n"
            "    subscribe     join the list (you confirm by replying to the answer)\n"
            "    unsubscribe   leave the list (likewise confirmed)\n"
            "    options       your options; \"options nomail on\" (no mail for now), \"options metoo on\"\n"
            "                  (a copy of your own posts); changes are confirmed like the rest\n"
            "    help          this text\n\n"
            f"A mail to {mlist.local_part}-join@{mlist.domain} or {mlist.local_part}-leave@{mlist.domain} "
            "does the same as subscribe or unsubscribe.\n"
            f"People: the list owner is {mlist.owner_alias}.\n")


def handle_request(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, request: Request, *,
                   hostname: str, at: float, per_hour: int, message_id: str = "", client_ip: str = "",
                   per_ip_hour: int = 20, base_url: str = "") -> str:
    """Apply one request inside the caller's transaction; the SMTP answer (250 in every case that
    is not an error of ours: the answer comes by mail, so the reply says nothing about membership).
    `client_ip` ("" for a trusted relay) may send `per_ip_hour` requests an hour, then 450."""
    address = request.address
    if request.command == "automatic":
        return "250 2.0.0 Automatic mail is not answered"
    if not address or "@" not in address:
        return "550 5.1.7 A request needs a sender address to answer"
    if client_ip:
        recent = conn.execute("SELECT COUNT(*) FROM request_log WHERE ip = ? AND at > ?",
                              (client_ip, at - 3600)).fetchone()[0]
        if recent >= per_ip_hour:
            return "450 4.7.1 Too many requests from your address this hour; please try again later"
        conn.execute("DELETE FROM request_log WHERE at < ?", (at - 3600,))
        conn.execute("INSERT INTO request_log (ip, at) VALUES (?, ?)", (client_ip, at))
    if request.command == "confirm":
        return _confirm(conn, secret, mlist, request, hostname=hostname, at=at, per_hour=per_hour,
                        message_id=message_id)
    if not may_notify(conn, address, at, per_hour):
        return "250 2.0.0 Request received (no answer: this address had enough mail from us this hour)"
    if request.command == "help" or not request.command:
        _mail(conn, mlist, address, f"Help for {mlist.address}", help_text(mlist) if request.command else
              "Your mail was not understood as a request.\n\n" + help_text(mlist), hostname, at, message_id)
        return "250 2.0.0 Request received; the answer comes by mail"
    if request.command == "options":
        row = conn.execute("SELECT nomail, metoo, digest FROM members WHERE list = ? AND address = ?",
                           (mlist.address, address)).fetchone()
        if row is None:
            _mail(conn, mlist, address, f"Options on {mlist.address}",
                  f"{address} is not a member of {mlist.address}, so it has no options there.\n\n"
                  + help_text(mlist), hostname, at, message_id)
            return "250 2.0.0 Request received; the answer comes by mail"
        if not request.options:
            _mail(conn, mlist, address, f"Your options on {mlist.address}",
                  _options_text(mlist, bool(row[0]), bool(mlist.metoo if row[1] is None else row[1]), bool(row[2])),
                  hostname, at, message_id)
            return "250 2.0.0 Request received; the answer comes by mail"
    action = f"options:{request.options}" if request.command == "options" else request.command
    if request.command == "subscribe" and mlist.subscribe_policy == "open":
        if _is_member(conn, mlist, address):
            _mail(conn, mlist, address, f"You are a member of {mlist.address}",
                  f"{address} is already subscribed to {mlist.address}.\n", hostname, at, message_id)
        else:
            join(conn, secret, mlist, address, actor=f"member:{address}", source="mail (open list)",
                 hostname=hostname, at=at, message_id=message_id)
        return "250 2.0.0 Request received; the answer comes by mail"
    token = new_confirmation(conn, mlist, address, action, at)
    verb = {"subscribe": "join", "unsubscribe": "leave"}.get(
        request.command, f"set these options on ({request.options.replace(',', ', ')})")
    hours = max(1, round(mlist.confirm_within / 3600))
    link = f"or open {confirm_url(base_url, token)} and press Confirm,\n" if base_url else ""
    _subject, body = render(
        mlist, "confirm", "",
        f"Someone (perhaps you) asked for {address} to {verb} {mlist.address}.\n\n"
        f"To confirm, reply to this message keeping the subject (\"confirm {token}\"),\n"
        f"{link}or send a mail to {mlist.request_address} with that subject.\n\n"
        f"If you did not ask, ignore this message: nothing changes. The request expires in {hours} hour(s).\n",
        address=address, token=token, action=request.command, hours=str(hours),
        link=confirm_url(base_url, token) if base_url else "")
    _mail(conn, mlist, address, f"confirm {token}", body, hostname, at, message_id)   # the subject carries the token
    return "250 2.0.0 Request received; a confirmation was mailed to the address"


def _confirm(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, request: Request, *,
             hostname: str, at: float, per_hour: int, message_id: str) -> str:
    row = conn.execute("SELECT address, action, expires_at FROM confirmations WHERE token = ? AND list = ?",
                       (request.token, mlist.address)).fetchone()
    if row is None or row[2] < at:
        if row is not None:
            conn.execute("DELETE FROM confirmations WHERE token = ?", (request.token,))
        if may_notify(conn, request.address, at, per_hour):
            _mail(conn, mlist, request.address, f"Re: confirm {request.token}",
                  "That confirmation is unknown or has expired (or was used already); nothing changed.\n"
                  f"Send \"subscribe\" or \"unsubscribe\" to {mlist.request_address} to start again.\n",
                  hostname, at, message_id)
        return "250 2.0.0 Confirmation not applied: unknown or expired"
    address, action, _expires = row
    conn.execute("DELETE FROM confirmations WHERE token = ?", (request.token,))
    actor = f"member:{address}"
    if action == "subscribe":
        if mlist.subscribe_policy == "moderate" and not _is_member(conn, mlist, address):
            label = hold_for_approval(conn, secret, mlist, address, at, hostname)
            _mail(conn, mlist, address, f"Your request to join {mlist.address}",
                  f"Thank you: your address is confirmed. A moderator of {mlist.address} approves each new\n"
                  f"member; you will hear from us when one has (request {label}).\n", hostname, at, message_id)
            return "250 2.0.0 Confirmed; a moderator approves the request"
        join(conn, secret, mlist, address, actor=actor, source="mail (confirmed)", hostname=hostname, at=at,
             message_id=message_id)
        return "250 2.0.0 Confirmed"
    if action == "enable":
        from .bounces import enable
        if enable(conn, secret, mlist, address, actor, at):
            _mail(conn, mlist, address, f"Mail from {mlist.address} is on again",
                  f"{mlist.address} sends its mail to {address} again.\n", hostname, at, message_id)
        return "250 2.0.0 Confirmed"
    if action.startswith("options:"):
        changes: dict[str, bool | None] = {
            name: value == "on" for name, _, value in (p.partition("=") for p in action[8:].split(",") if p)}
        try:
            said = set_options(conn, secret, mlist.address, address, changes, actor=actor,
                               source="mail (confirmed)", at=at)
        except KeyError:
            return "250 2.0.0 Not applied: the address is no longer a member"
        row = conn.execute("SELECT nomail, metoo, digest FROM members WHERE list = ? AND address = ?",
                           (mlist.address, address)).fetchone()
        _mail(conn, mlist, address, f"Your options on {mlist.address}",
              ("Changed: " + said + ".\n\n" if said else "Nothing needed changing.\n\n")
              + _options_text(mlist, bool(row[0]), bool(mlist.metoo if row[1] is None else row[1]), bool(row[2])),
              hostname, at, message_id)
        return "250 2.0.0 Confirmed"
    if remove_member(conn, secret, mlist.address, address, actor=actor, source="mail (confirmed)", at=at):
        subject, body = render(
            mlist, "goodbye", f"You have left {mlist.address}",
            f"{address} is no longer subscribed to {mlist.address}, and gets no more of its mail.\n\n"
            f"To come back, send \"subscribe\" to {mlist.request_address}.\n", address=address)
        _mail(conn, mlist, address, subject, body, hostname, at, message_id)
    return "250 2.0.0 Confirmed"


def _options_text(mlist: ListConfig, nomail: bool, metoo: bool, digest: bool = False) -> str:
    return (f"Your options on {mlist.address}:\n\n"
            f"    nomail  {'on ' if nomail else 'off'}   {'no copies are sent to you' if nomail else 'you get the list mail'}\n"
            f"    metoo   {'on ' if metoo else 'off'}   {'you get a copy of your own posts' if metoo else 'no copy of your own posts'}\n"
            f"    digest  {'on ' if digest else 'off'}   {'one digest a day instead of each post' if digest else 'each post as it comes'}\n\n"
            f"To change them, send e.g. \"options nomail on\" or \"options metoo on\" to {mlist.request_address}.\n")


def join(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, address: str, *, actor: str, source: str,
         hostname: str, at: float, message_id: str = "") -> bool:
    """Add the member (audited) and send the welcome with the guidelines."""
    if not add_member(conn, secret, mlist.address, address, actor=actor, source=source, reason="", at=at):
        return False
    subject, body = render(mlist, "welcome", f"Welcome to {mlist.address}", welcome_text(mlist),
                           address=address, guidelines=_guidelines(mlist))
    _mail(conn, mlist, address, subject, body, hostname, at, message_id)
    return True


SUBSCRIPTION = "subscription"   # the category of a held "post" that is a request to join


def hold_for_approval(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, address: str, at: float,
                      hostname: str) -> str:
    """A confirmed request to join a moderated list, held like a post so that moderators decide it in
    the same digest, with the same tokens (approve adds the member; reject tells them no)."""
    from . import audit
    from .posts import new_short_id
    raw = (f"From: {address}\r\nTo: {mlist.request_address}\r\nSubject: Subscription request\r\n"
           f"Message-ID: <subscribe-{int(at * 1000)}.{secrets.token_hex(4)}@{hostname}>\r\n\r\n"
           f"{address} asks to join {mlist.address} and confirmed the address.\r\n").encode()
    sha = hashlib.sha256(raw).hexdigest()
    cursor = conn.execute("INSERT INTO messages (received_at, envelope_from, rcpt_tos, sha256, size, peer, raw) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)", (at, address, json.dumps([mlist.request_address]), sha,
                                                           len(raw), "", raw))
    short_id = new_short_id(conn)
    reason = f"{address} asks to join {mlist.address}; approve to add them, reject to say no."
    template = "A request to join {list}; approve to add the member, reject to say no."
    post_cursor = conn.execute(
        "INSERT INTO posts (message, list, short_id, state, action, rule, source, actor, reason, evidence, ruleset, "
        "sender, subject, message_id, created_at, thread, escalated, tags, context, excerpt, parsed, verified, "
        "category) VALUES (?, ?, ?, 'held', 'hold', 'subscription', 'subscribe_policy', 'rules', ?, '', '', ?, "
        "'Subscription request', '', ?, '', 0, '', '', ?, 1, 1, ?)",
        (cursor.lastrowid, mlist.address, short_id, reason, address, at,
         f"{address} asks to join the list (address confirmed).", SUBSCRIPTION))
    audit.append(conn, secret, list=mlist.address, post=post_cursor.lastrowid, message_id="", sha256=sha,
                 sender=address, action="hold", reason=reason, template=template, rule="subscription",
                 source="subscribe_policy", actor="rules", at=at)
    return short_id


def _guidelines(mlist: ListConfig) -> str:
    if mlist.guidelines is None:
        return ""
    try:
        return mlist.guidelines.read_text(encoding="utf-8", errors="replace")[:64 * 1024]
    except OSError:
        return ""


def welcome_text(mlist: ListConfig) -> str:
    guidelines = _guidelines(mlist)
    text = (f"Welcome to {mlist.address}.\n\nTo post, write to {mlist.address}. "
            f"To leave, send \"unsubscribe\" to {mlist.request_address}\n"
            f"(or any mail to {mlist.local_part}-leave@{mlist.domain}).\n")
    if guidelines.strip():
        text += "\nThe list's guidelines:\n\n" + textwrap.indent(guidelines.rstrip(), "    ") + "\n"
    return text


def expire_confirmations(conn: sqlite3.Connection, at: float) -> int:
    return conn.execute("DELETE FROM confirmations WHERE expires_at < ?", (at,)).rowcount


def first_message_id(raw: bytes) -> str:
    """The Message-ID of a request, for the answer's In-Reply-To ("" when there is none)."""
    found = re.search(rb"(?im)^message-id:[ \t]*(<[^>\r\n]{1,250}>)", raw[:MAX_READ])
    return found.group(1).decode("ascii", "replace") if found else ""


def forward_to_owner(conn: sqlite3.Connection, mlist: ListConfig, raw: bytes, at: float) -> str:
    """Mail to LIST-owner@, passed to the owner (else the moderators) as it came, with
    X-Loop so that it never comes round again; inside the caller's transaction."""
    if re.search(rb"(?im)^x-loop:[ \t]*" + re.escape(mlist.address.encode()) + rb"[ \t]*$",
                 raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]):
        return "250 2.0.0 Not forwarded: it has been through this list already (X-Loop)"
    staff = [mlist.owner] if mlist.owner else list(mlist.moderators)
    if not staff:
        return f"550 5.1.1 {mlist.owner_alias} has no owner or moderator to reach"
    head = f"X-Loop: {mlist.address}\r\nX-Listmod-Forwarded: to the owner of {mlist.address}\r\n".encode()
    for person in staff:
        enqueue_notice(conn, None, mlist, person, head + raw, at)
    return f"250 2.0.0 Forwarded to the owner of {mlist.address}"


def decided_request(conn: sqlite3.Connection, secret: bytes, config: Config, mlist: ListConfig, record: Any,
                    state: str, reason: str, actor: str, at: float) -> None:
    """A moderator decided a request to join: approved adds the member (welcomed); rejected tells them."""
    address = record.sender
    if not address:
        return
    hostname = config.server.hostname
    if state == "accepted":
        join(conn, secret, mlist, address, actor=actor, source=f"request {record.short_id} approved",
             hostname=hostname, at=at)
    elif state == "rejected":
        _mail(conn, mlist, address, f"Your request to join {mlist.address}",
              f"A moderator of {mlist.address} did not approve your request to join.\n\nReason given:\n\n"
              f"{textwrap.indent(textwrap.fill(reason, 72), '    ')}\n", hostname, at)
