"""SMTP smuggling against listmod's own DATA reader (intake.server.read_data): the cases of aiosmtpd's
upstream test_smtpsmuggling.py (a fake end of data made with a bare LF or CR) and their siblings.
Only CRLF.CRLF ends a message: whatever follows a fake end stays inside the one message, and no
second transaction can be slipped in after it."""

from __future__ import annotations

import socket

import pytest
from conftest import LIST, wait_until

FAKE_ENDS = {
    "lf-dot-crlf": b"\n.\r\n",        # aiosmtpd's upstream case
    "cr-dot-crlf": b"\r.\r\n",
    "lf-dot-lf": b"\n.\n",
    "crlf-dot-lf": b"\r\n.\n",
    "crlf-dot-cr": b"\r\n.\r",
    "cr-dot-cr": b"\r.\r",
}


def _lines(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.splitlines()[-1][3:4] == b"-":
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("fake_end", FAKE_ENDS.values(), ids=FAKE_ENDS.keys())
def test_a_fake_end_of_data_smuggles_nothing(sink, make_daemon, fake_end):
    d = make_daemon(sink)
    smuggled = (b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<" + LIST.encode() + b">\r\nDATA\r\n"
                b"From: evil@example.net\r\nTo: " + LIST.encode() + b"\r\nSubject: smuggled\r\n"
                b"Message-ID: <smuggled@example.net>\r\n\r\nSMUGGLED\r\n")
    payload = (b"From: Alice <alice@example.org>\r\nTo: " + LIST.encode() + b"\r\nSubject: a test\r\n"
               b"Message-ID: <carrier@example.org>\r\n\r\nTesting" + fake_end + smuggled + b"\r\n.\r\n")
    with socket.create_connection(("127.0.0.1", d.smtp_port), timeout=15) as sock:
        answers = [_lines(sock)]
        for command in (b"EHLO client.example\r\n", b"MAIL FROM:<alice@example.org>\r\n",
                        b"RCPT TO:<" + LIST.encode() + b">\r\n", b"DATA\r\n"):
            sock.sendall(command)
            answers.append(_lines(sock))
        assert answers[-1].startswith(b"354")
        sock.sendall(payload)
        answers.append(_lines(sock))
        sock.sendall(b"QUIT\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    # one answer to the one DATA, then the answer to QUIT: nothing else was read as a command
    assert answers[-1].startswith(b"250"), answers
    assert rest.startswith(b"221") and b"354" not in rest and b"250" not in rest, rest
    conn = d.db()
    raws = [raw for (raw,) in conn.execute("SELECT raw FROM messages")]
    assert len(raws) == 1 and b"SMUGGLED" in raws[0] and b"MAIL FROM:<evil@example.net>" in raws[0]
    assert [m for (m,) in conn.execute("SELECT message_id FROM posts")] == ["<carrier@example.org>"]
    # the members get the one message; what followed the fake end is inside it, not a post of its own
    wait_until(lambda: sink.copies_for("<carrier@example.org>"), what="the copies")
    wait_until(d.outbox_idle, what="the outbox idle")
    assert sink.copies_for("<smuggled@example.net>") == []
    assert all(b"SMUGGLED" in r.content for _, r in sink.copies_for("<carrier@example.org>"))
