"""A message as bytes: its header fields (each with its continuation lines) and its body, split
without decoding anything, and CRLF line ends for the wire."""

from __future__ import annotations

import re


def split_message(raw: bytes) -> tuple[list[bytes], bytes, bytes]:
    """Header lines (each with its continuation lines), the separator, and the body, untouched."""
    found = re.search(rb"\r?\n\r?\n", raw)
    if found is None:
        head, sep, body = raw, b"", b""
    else:
        head, sep, body = raw[: found.start()], raw[found.start(): found.end()], raw[found.end():]
    fields: list[bytes] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, sep, body


def crlf_lines(data: bytes) -> bytes:
    """Bare LF line ends made CRLF, as SMTP requires (skipped when there are none, the usual case)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)
