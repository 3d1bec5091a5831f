"""Every answer says what happened with an enhanced status code (RFC 3463/2034), including the ones
aiosmtpd writes itself; a size refusal names the limit; EHLO advertises ENHANCEDSTATUSCODES."""

from __future__ import annotations

import re
import socket

from conftest import LIST, post_bytes

ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")


def converse(port: int, commands: list[bytes]) -> list[list[str]]:
    """Send each command and collect its (possibly multi-line) reply."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        f = sock.makefile("rb")

        def reply() -> list[str]:
            lines = []
            while True:
                line = f.readline().decode("utf-8", "replace").rstrip("\r\n")
                lines.append(line)
                if len(line) < 4 or line[3] != "-":
                    return lines
        out.append(reply())  # the greeting
        for command in commands:
            sock.sendall(command)
            out.append(reply())
    return out


def test_every_reply_after_the_greeting_and_ehlo_carries_an_enhanced_status_code(sink, make_daemon):
    d = make_daemon(sink, max_message_size="64KB")
    body = post_bytes(sender="alice@example.org", message_id="<codes@test>")
    commands = [b"EHLO client.example\r\n", b"NOOP\r\n", b"FROB\r\n", b"DATA\r\n", b"RCPT TO:<x@y>\r\n",
                b"MAIL FROM:<alice@example.org> SIZE=99999999\r\n", b"MAIL FROM:<alice@example.org>\r\n",
                b"MAIL FROM:<alice@example.org>\r\n", b"RCPT TO:<nobody@example.org>\r\n",
                b"RCPT TO:<" + LIST.encode() + b">\r\n", b"DATA\r\n", body + b".\r\n", b"RSET\r\n",
                b"VRFY alice@example.org\r\n", b"QUIT\r\n"]
    replies = converse(d.smtp_port, commands)
    greeting, ehlo, *rest = replies
    assert greeting[0].startswith("220 ") and "250-ENHANCEDSTATUSCODES" in ehlo
    answers = dict(zip([c.split(b"\r\n")[0][:40] for c in commands[1:]], rest, strict=True))
    for command, lines in answers.items():
        if lines[0].startswith("354"):
            continue
        for line in lines:
            assert ENHANCED.match(line), (command, line)
    texts = [line for lines in rest for line in lines]
    assert "552 5.3.4 Messages to this server are limited to 64 KB (max_message_size)" in texts
    assert any(t.startswith("503 5.5.1 nested MAIL command") for t in texts)
    assert any(t.startswith("550 5.1.1 <nobody@example.org>") for t in texts)
    assert any(t.startswith("250 2.1.0") for t in texts) and any(t.startswith("250 2.1.5") for t in texts)
    assert any(t.startswith("250 2.0.0 Accepted for " + LIST) for t in texts)
    assert texts[-1].startswith("221 2.0.0")


def test_an_oversize_message_is_refused_naming_the_lists_and_the_limit(sink, make_daemon):
    d = make_daemon(sink, max_message_size="64KB")
    big = post_bytes(sender="alice@example.org", body="x" * 70_000 + "\r\n")
    replies = converse(d.smtp_port, [b"EHLO c\r\n", b"MAIL FROM:<alice@example.org>\r\n",
                                     b"RCPT TO:<" + LIST.encode() + b">\r\n", b"DATA\r\n", big + b".\r\n"])
    assert replies[-1] == [f"552 5.3.4 Messages to {LIST} are limited to 64 KB (max_message_size)"]
