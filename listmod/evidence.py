"""Evidence of an escalated post, for the list's escalation contact: a summary they can act on, the
original exactly as received (message/rfc822, with its sha256), and the post's audit records with
the chain head, so that the bundle can be checked against the trail later. The same bundle is
mailed at once when a post is escalated and written by `listmod evidence ID --out FILE`."""

from __future__ import annotations

import email.utils
import json
import secrets
import sqlite3
import textwrap
import time

from . import audit, tokens
from .config import ListConfig
from .message import printable
from .posts import PostNotFound, enqueue_notice, post_by_id
from .rawmail import crlf_lines


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def bundle(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, post_id: int, hostname: str,
           note: str = "", at: float | None = None) -> bytes:
    """The evidence message for one post, as bytes (CRLF). `note`: a moderator's words for the contact
    (else the notes of earlier escalations, from the trail)."""
    at = time.time() if at is None else at
    post = post_by_id(conn, post_id)
    row = conn.execute("SELECT received_at, envelope_from, peer, sha256, size, raw FROM messages WHERE id = ?",
                       (post.message,)).fetchone()
    if row is None:
        raise PostNotFound(f"post {post.label} has no stored message")
    received_at, envelope_from, peer, sha256, size, raw = row
    raw = raw or b""
    records = [audit.as_dict(r) for r in audit.read(conn) if r.post == post.id]
    if not note:
        note = "\n".join(r["reason"] for r in records if r["action"] == "escalate"
                         and str(r["actor"]).startswith(("moderator:", "leader:")) and r["reason"])
    seq, head = audit.head(conn)
    held = post.state == "held"
    cid = tokens.command_id(post.short_id or "", tokens.post_token(secret, mlist.address, post.id, post.short_id or ""))
    first = next((r for r in records if r["actor"] in ("rules", "default")), None)
    lines = [f"Evidence: post {post.label} to {mlist.address}, "
             f"{'held under a legal hold until someone decides' if held else post.state}.", "",
             f"Received:  {_utc(received_at)} from {peer or '?'} (envelope sender {envelope_from or '<>'})",
             f"SHA-256:   {sha256}",
             f"           of the attached original ({size:,} bytes, byte for byte as received)",
             f"From:      {post.sender or '<>'}",
             f"Subject:   {printable(post.subject) or '(no subject)'}",
             f"Message-ID: {post.message_id or '(none)'}"]
    if first is not None:
        lines += [f"Flagged by: {first['rule']} ({first['source']})",
                  *textwrap.wrap(first["reason"] or "(reason erased)", 76, initial_indent="           ",
                                 subsequent_indent="           ")]
        if first["evidence"]:
            lines.append(f"Matched:   {printable(first['evidence'])[:300]}")
    if note:
        lines += ["", "Moderator's note:", *textwrap.indent(note, "    ").splitlines()]
    lines += ["", f"Audit records of this post ({len(records)}; all of them in audit-records.json):"]
    for r in records:
        lines.append(f"  #{r['seq']} {_utc(r['time'])}  {r['action']:<9} {r['actor'].split(':')[0]:<10} "
                     f"{textwrap.shorten(r['reason'] or '(erased)', 60, placeholder='...')}")
    lines += ["", f"Audit chain head: {seq} {head}",
              f"  (check it later with: listmod audit verify --anchor {seq}:{head})"]
    if held:
        lines += ["", "To decide, reply to this message with one line:", f"  approve {cid}",
                  f"  reject {cid} <reason for the poster>",
                  f"  keep {cid} <note>      (leave it held under the legal hold)"]
    text = "\n".join(lines) + "\n"
    boundary = "listmod-evidence-" + secrets.token_hex(12)
    while boundary.encode() in raw:
        boundary = "listmod-evidence-" + secrets.token_hex(12)
    head_lines = [
        f"From: {email.utils.formataddr((f'{mlist.address} moderation', mlist.moderation_address))}",
        f"To: {mlist.escalation_contact or mlist.owner or mlist.owner_alias}",
        f"Reply-To: {mlist.moderation_address}",
        f"Subject: [escalated {post.label}] {mlist.address}: evidence",
        f"Date: {email.utils.formatdate(at, localtime=True)}",
        f"Message-ID: {email.utils.make_msgid('evidence', domain=hostname)}",
        "Auto-Submitted: auto-generated", f"X-Loop: {mlist.address}", f"Audit-Head: {seq} {head}",
        "MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{boundary}"']
    body = text.encode("utf-8")
    out = [*(h.encode("utf-8") for h in head_lines), b"", b"Evidence of an escalated post (MIME).",
           f"--{boundary}".encode(), b"Content-Type: text/plain; charset=utf-8",
           b"Content-Transfer-Encoding: 8bit" if not body.isascii() else b"Content-Transfer-Encoding: 7bit",
           b"", body.replace(b"\n", b"\r\n").rstrip(b"\r\n"), f"--{boundary}".encode()]
    if raw and raw == crlf_lines(raw) and max((len(x) for x in raw.split(b"\r\n")), default=0) <= 998:
        out += [b"Content-Type: message/rfc822", b"Content-Disposition: attachment; filename=\"original.eml\"",
                f"Content-Description: the original, sha256 {sha256}".encode(), b"", raw]
    else:   # bare LFs or overlong lines would not survive mail transport byte for byte: base64 does
        import base64
        out += [b"Content-Type: application/octet-stream; name=\"original.eml\"",
                b"Content-Disposition: attachment; filename=\"original.eml\"", b"Content-Transfer-Encoding: base64",
                f"Content-Description: the original, sha256 {sha256}".encode(), b"",
                base64.encodebytes(raw).replace(b"\n", b"\r\n").rstrip(b"\r\n")]
    records_json = json.dumps({"audit_head": {"seq": seq, "hash": head}, "records": records}, indent=1,
                              ensure_ascii=True).encode()
    out += [f"--{boundary}".encode(), b"Content-Type: application/json; name=\"audit-records.json\"",
            b"Content-Disposition: attachment; filename=\"audit-records.json\"", b"", records_json.replace(b"\n", b"\r\n"),
            f"--{boundary}--".encode(), b""]
    return b"\r\n".join(out)


def original_of(data: bytes) -> bytes:
    """The original as a bundle carries it (the inverse of bundle(), for checking one). A bundle
    saved with LF line ends (a Maildir, most mail clients) gives the original back with its CRLF
    line ends, as it was received over SMTP and hashed: the original part is only ever one whose
    lines all end in CRLF (anything else travels as base64, untouched)."""
    import base64
    import email
    import email.policy
    crlf = b"\r\n" in data
    eol = b"\r\n" if crlf else b"\n"
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    boundary = (msg.get_boundary() or "").encode()
    for part in data.split(b"--" + boundary)[1:]:
        head, _, content = part.partition(eol + eol)
        if b'filename="original.eml"' not in head:
            continue
        content = content[:-len(eol)] if content.endswith(eol) else content   # the line end before the delimiter
        if b"base64" in head:
            return base64.b64decode(content)
        return content if crlf else crlf_lines(content)
    raise ValueError("the bundle carries no original.eml")


def send_evidence(conn: sqlite3.Connection, secret: bytes, mlist: ListConfig, post_id: int, note: str,
                  hostname: str, at: float) -> bool:
    """Mail the bundle to the list's escalation contact now (in the caller's transaction)."""
    if not mlist.escalation_contact:
        return False
    enqueue_notice(conn, post_id, mlist, mlist.escalation_contact,
                   bundle(conn, secret, mlist, post_id, hostname, note, at), at)
    return True
