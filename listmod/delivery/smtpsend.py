"""One SMTP transaction on a kept-open smtplib connection: MAIL, a RCPT per recipient, DATA.

When the server offers PIPELINING (RFC 2920; Postfix and Exim do) the envelope goes out in one
write and its replies are read together, so a post to ten members costs two round trips instead
of thirteen; a server that does not offer it gets one command at a time. Either way the outcome
is reported as smtplib.sendmail reports it (the refused recipients, or SMTPSenderRefused,
SMTPRecipientsRefused, SMTPDataError), plus StaleConnection for a kept connection that turned out
to be closed before the server had answered anything.
"""
from __future__ import annotations

import re
import smtplib

Reply = tuple[int, bytes]


class StaleConnection(smtplib.SMTPServerDisconnected):
    """The connection failed before the server's first reply: nothing was accepted, so the same
    transaction may be tried once more on a new connection."""


def angle(address: str) -> str:
    """An envelope address as SMTP writes it (`<>` for the null sender). The addresses come from
    the store, checked when they were added; a line break would end the command early, so it is
    refused here whatever its origin."""
    if "\r" in address or "\n" in address or "<" in address or ">" in address:
        raise ValueError(f"{address!r} cannot be an SMTP envelope address (line break or angle bracket)")
    return f"<{address}>"


def dot_stuffed(body: bytes) -> bytes:
    """The DATA payload: leading dots doubled (RFC 5321 4.5.2), ended by CRLF . CRLF."""
    data = re.sub(rb"(?m)^\.", b"..", body)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _reset(conn: smtplib.SMTP) -> None:
    """RSET after a failed transaction, so the kept connection can carry the next one."""
    try:
        conn.rset()
    except (OSError, smtplib.SMTPException):
        conn.close()


def transaction(conn: smtplib.SMTP, sender: str, recipients: list[str], body: bytes,
                options: list[str] | tuple[str, ...] = ()) -> dict[str, Reply]:
    """Send `body` to `recipients`; returns the recipients the server refused (with its reply)
    when it accepted at least one. `options` are MAIL parameters (SMTPUTF8, BODY=8BITMIME)."""
    conn.command_encoding = "utf-8" if any(o.upper() == "SMTPUTF8" for o in options) else "ascii"
    mail = f"MAIL FROM:{angle(sender)}{''.join(' ' + o for o in options)}\r\n"
    rcpts = [f"RCPT TO:{angle(r)}\r\n" for r in recipients]
    pipelined = conn.has_extn("pipelining")
    rcpt_replies: list[Reply] = []
    data_reply: Reply = (0, b"")
    try:
        conn.send(mail + "".join(rcpts) + "DATA\r\n" if pipelined else mail)
        mail_reply = conn.getreply()
    except smtplib.SMTPServerDisconnected as err:
        raise StaleConnection(str(err)) from err
    if pipelined:
        rcpt_replies = [conn.getreply() for _ in rcpts]
        data_reply = conn.getreply()
    elif mail_reply[0] == 250:
        for command in rcpts:
            conn.send(command)
            rcpt_replies.append(conn.getreply())
    if mail_reply[0] != 250:
        if pipelined and data_reply[0] == 354:
            _end_empty(conn)
        _reset(conn)
        raise smtplib.SMTPSenderRefused(mail_reply[0], mail_reply[1], sender)
    refused = {r: reply for r, reply in zip(recipients, rcpt_replies, strict=True) if reply[0] not in (250, 251)}
    if len(refused) == len(recipients):
        if pipelined and data_reply[0] == 354:
            _end_empty(conn)
        _reset(conn)
        raise smtplib.SMTPRecipientsRefused(refused)
    if not pipelined:
        conn.send("DATA\r\n")
        data_reply = conn.getreply()
    if data_reply[0] != 354:
        _reset(conn)
        raise smtplib.SMTPDataError(*data_reply)
    conn.send(dot_stuffed(body))
    code, text = conn.getreply()
    if code != 250:
        _reset(conn)
        raise smtplib.SMTPDataError(code, text)
    return refused


def _end_empty(conn: smtplib.SMTP) -> None:
    """A server that said 354 although it accepted no recipient (RFC 2920 asks for 503 or 554):
    end the data at once; with no recipient it delivers nothing."""
    conn.send(".\r\n")
    conn.getreply()
