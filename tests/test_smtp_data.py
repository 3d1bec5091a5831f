"""The DATA phase: what arrives is exactly what the client meant to send, whatever its shape."""

import smtplib
import socket

import pytest
from conftest import LIST, MEMBERS, wait_until


def stored_raw(d):
    return d.db().execute("SELECT raw FROM messages ORDER BY id DESC LIMIT 1").fetchone()[0]


@pytest.mark.parametrize("body", [
    b".starts with a dot\r\n..two dots\r\nends with a dot.\r\n.\r\n.. \r\nlast line.\r\n",
    b"no final newline",
    b"",
    b"line\nwith bare LF\nand more\r\n",
    b"x" * 3000 + b"\r\n" + b"y." * 40000 + b"\r\n",  # long lines (80 KB), some ending in '.'
])
def test_message_bytes_arrive_exactly_as_sent(make_daemon, body):
    d = make_daemon(None)
    raw = b"From: alice@example.org\r\nTo: dev@example.org\r\nSubject: dots\r\n\r\n" + body
    d.send("alice@example.org", LIST, raw)
    expected = raw if raw.endswith(b"\r\n") else raw + b"\r\n"  # smtplib ends the last line
    assert stored_raw(d) == expected


def test_a_large_message_under_the_limit_is_accepted_whole(make_daemon):
    d = make_daemon(None, max_message_size="6MB")
    attachment = (b"QUJD" * 19 + b"\r\n") * 60000  # ~4.6 MB of base64 lines, no line ends in '.'
    raw = (b"From: alice@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
           b"Content-Disposition: attachment; filename=a.pdf\r\n\r\n" + attachment + b"--b--\r\n")
    d.send("alice@example.org", LIST, raw)
    assert stored_raw(d) == raw


def test_over_the_limit_by_one_chunk_or_many_is_552(make_daemon):
    d = make_daemon(None)  # 1MB
    for body in ((b"z" * 76 + b"\r\n") * 14000, (b"short line.\r\n") * 90000):
        with d.smtp() as s:
            s.ehlo()
            s.esmtp_features.pop("size", None)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                s.sendmail("alice@example.org", [LIST], b"Subject: big\r\n\r\n" + body)
            assert refused.value.smtp_code == 552
            # the session goes on: the next message on the same connection is fine
            s.sendmail("alice@example.org", [LIST], b"Subject: small\r\n\r\nok\r\n")
    assert d.db().execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 2


def test_commands_pipelined_after_the_final_dot_are_answered(sink, make_daemon):
    d = make_daemon(sink)
    with socket.create_connection(("127.0.0.1", d.smtp_port)) as sock:
        f = sock.makefile("rwb")
        f.readline()
        f.write(b"EHLO client.example\r\n")
        f.flush()
        while f.readline()[3:4] == b"-":
            pass
        f.write(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<dev@example.org>\r\nDATA\r\n")
        f.flush()
        assert [f.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        f.write(b"Subject: one\r\nMessage-ID: <pipe1@test>\r\n\r\nfirst\r\n.\r\n"
                b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<dev@example.org>\r\nDATA\r\n")
        f.flush()
        assert [f.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        f.write(b"Subject: two\r\nMessage-ID: <pipe2@test>\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
        f.flush()
        assert f.readline()[:3] == b"250"
        assert f.readline()[:3] == b"221"
    for mid in ("<pipe1@test>", "<pipe2@test>"):
        wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), what=f"delivery of {mid}")


def test_a_client_that_disconnects_mid_message_leaves_nothing_behind(make_daemon):
    d = make_daemon(None)
    with socket.create_connection(("127.0.0.1", d.smtp_port)) as sock:
        f = sock.makefile("rwb")
        f.readline()
        f.write(b"HELO c\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<dev@example.org>\r\nDATA\r\n")
        f.flush()
        for _ in range(4):
            f.readline()
        f.write(b"Subject: cut\r\n\r\nhalf a mess")
        f.flush()
    d.send("alice@example.org", LIST, b"Subject: next\r\n\r\nfine\r\n")
    assert d.db().execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
    assert d.proc.poll() is None


def _stuffed(content: bytes) -> bytes:
    """What an SMTP client sends for `content` (CRLF lines): dot-stuffed, then CRLF.CRLF."""
    lines = content.split(b"\r\n")[:-1] if content else []
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


def test_read_data_returns_exactly_the_content_whatever_the_packet_boundaries():
    import asyncio
    import random

    from listmod.intake.server import DataTooLarge, read_data

    rng = random.Random(1234)
    pieces = [b"", b".", b"..", b"...", b"a", b"ab", b"abc", b"\r", b"\r\r", b"a\rb", b"end.", b"x" * 70,
              b".hidden", b"\xff\xfe", b"  ", b"\t.", b"=2E"]
    cases = [b"", b"a\r\n", b".\r\n", b"\r\n", b"\r\n\r\n", b"ab\r\n.\r\n"[:-3]]
    for _ in range(400):
        lines = [rng.choice(pieces) + rng.choice(pieces) for _ in range(rng.randint(0, 12))]
        cases.append(b"".join(l + b"\r\n" for l in lines))

    async def check(content: bytes) -> None:
        wire = _stuffed(content) + b"QUIT\r\n"  # a pipelined command must be left unread
        reader = asyncio.StreamReader(limit=64)  # small, so the overrun path is exercised too
        cut = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randint(0, 6))))
        async def feed():
            last = 0
            for c in cut + [len(wire)]:
                reader.feed_data(wire[last:c])
                last = c
                await asyncio.sleep(0)
        feeder = asyncio.ensure_future(feed())
        got = await asyncio.wait_for(read_data(reader, limit=None), 5)
        await feeder
        assert got == content, (content, wire)
        assert await reader.readuntil(b"\r\n") == b"QUIT\r\n"

    async def main():
        for content in cases:
            await check(content)
        reader = asyncio.StreamReader(limit=64)
        reader.feed_data(_stuffed(b"y" * 500 + b"\r\n") + b"NOOP\r\n")
        with pytest.raises(DataTooLarge):
            await read_data(reader, limit=100)
        assert await reader.readuntil(b"\r\n") == b"NOOP\r\n"  # read to the end all the same

    asyncio.run(main())
