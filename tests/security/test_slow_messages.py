"""Findings 2, 11 and 12: a header storm, a catastrophic regex and many large transfers at once never
freeze the daemon for other clients; the intake limits answer with a clear 5xx or 4xx."""

import smtplib
import socket
import threading
import time

from conftest import LIST, post_bytes, wait_until

STORM_WORDS = 100_000  # ~1.5 MB of encoded-words in one Subject


def storm() -> bytes:
    words = " ".join(["=?utf-8?q?abc?="] * STORM_WORDS)
    return (f"From: alice@example.org\r\nTo: {LIST}\r\nSubject: {words}\r\n"
            f"Message-ID: <storm-{time.time_ns()}@t>\r\n\r\nbody\r\n").encode()


def served_quickly(d, bound: float) -> float:
    """Time for a second client to get a post answered while the first one's message is worked on."""
    started = time.monotonic()
    with d.smtp() as s:
        s.sendmail("alice@example.org", [LIST], post_bytes(subject="meanwhile"))
    took = time.monotonic() - started
    assert took < bound, f"a second client waited {took:.1f}s"
    return took


def send_in_background(d, raw: bytes) -> tuple[threading.Thread, list]:
    answer: list = []

    def send():
        try:
            with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=120) as s:
                s.ehlo()
                s.mail("alice@example.org")
                s.rcpt(LIST)
                answer.append(s.data(raw))
        except smtplib.SMTPException as err:
            answer.append(err)
    t = threading.Thread(target=send)
    t.start()
    return t, answer


def test_a_header_storm_does_not_stall_a_second_client(sink, make_daemon):
    d = make_daemon(sink, server_extra='max_header_size = "4MB"\n', max_message_size="10MB")
    t, answer = send_in_background(d, storm())
    time.sleep(0.3)  # the storm is on its way or being parsed
    served_quickly(d, 2.0)
    t.join(60)
    assert answer and answer[0][0] == 250, answer


def test_a_header_storm_inside_a_mime_part_does_not_stall_a_second_client(sink, make_daemon):
    """Part headers are not under max_header_size: their decoding must be linear and off the loop."""
    d = make_daemon(sink, max_message_size="10MB")
    words = " ".join(["=?utf-8?q?abc?="] * STORM_WORDS)
    raw = (f"From: alice@example.org\r\nTo: {LIST}\r\nSubject: part storm\r\n"
           f"Message-ID: <pstorm-{time.time_ns()}@t>\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
           f"hello\r\n--b\r\nContent-Type: application/octet-stream\r\n"
           f"Content-Disposition: attachment; filename=\"{words}\"\r\n\r\nAAAA\r\n--b--\r\n").encode()
    t, answer = send_in_background(d, raw)
    time.sleep(0.3)
    served_quickly(d, 2.0)
    t.join(90)
    assert answer and answer[0][0] == 250, answer


def test_hostile_html_is_read_in_linear_time_and_does_not_stall_a_second_client(sink, make_daemon):
    """html.parser rescans an unclosed tag from every position: 64 KB of '<a b="' took 20 s."""
    d = make_daemon(sink)
    html = '<a b="' * 11000
    raw = (f"From: alice@example.org\r\nTo: {LIST}\r\nSubject: html\r\nMessage-ID: <html-{time.time_ns()}@t>\r\n"
           f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").encode()
    started = time.monotonic()
    t, answer = send_in_background(d, raw)
    time.sleep(0.2)
    served_quickly(d, 2.0)
    t.join(90)
    assert answer and answer[0][0] == 250, answer
    assert time.monotonic() - started < 5


def test_a_header_over_the_limit_is_refused_with_552_and_the_limit(sink, make_daemon):
    d = make_daemon(sink, max_message_size="10MB")
    t, answer = send_in_background(d, storm())
    t.join(60)
    code, text = answer[0]
    assert code == 552 and b"5.3.4" in text and b"max_header_size" in text
    many = "".join(f"X-H{i}: v\r\n" for i in range(1500))
    code, text = d.answer("alice@example.org", LIST, post_bytes(extra=many))
    assert code == 552 and b"max_header_count" in text


def test_deep_mime_over_the_limit_is_refused_with_554(sink, make_daemon):
    d = make_daemon(sink)
    code, text = d.answer("alice@example.org", LIST, nested(60))
    assert code == 554 and b"5.6.0" in text and b"max_mime_depth" in text


def nested(depth: int, subject: str = "deep") -> bytes:
    head = f"From: alice@example.org\r\nTo: {LIST}\r\nSubject: {subject}\r\nMessage-ID: <deep-{time.time_ns()}@t>\r\nMIME-Version: 1.0\r\n"
    body = "text\r\n"
    for n in range(depth, 0, -1):
        body = (f"Content-Type: multipart/mixed; boundary=\"b{n}\"\r\n\r\n--b{n}\r\n{body}\r\n--b{n}--\r\n")
    return (head + body).encode()


CATASTROPHIC = """
[[rule]]
id = "pathological"
action = "hold"
reason = "A header looks like a run of a's."
match.header."X-Pad".regex = "^(a|aa)+$"
"""


def test_a_catastrophic_regex_over_many_headers_is_held_within_the_budget(sink, make_daemon, tmp_path):
    rules = tmp_path / "slow-rules"
    rules.mkdir()
    (rules / "slow.toml").write_text(CATASTROPHIC)
    d = make_daemon(sink, rules_dir=rules)  # the default judge_budget, 2 s
    pads = "".join(f"X-Pad: {'a' * 23}b\r\n" for _ in range(900))  # ~20 ms each, under the 50 ms limit
    mid = f"<regex-{time.time_ns()}@t>"
    started = time.monotonic()
    t, answer = send_in_background(d, post_bytes(extra=pads, message_id=mid))
    time.sleep(0.2)
    served_quickly(d, 2.0)
    t.join(60)
    assert time.monotonic() - started < 5, "the budget did not stop the regex"
    assert answer[0][0] == 250 and b"Held" in answer[0][1], answer
    held = [q for q in d.cli_json("queue") if q["message_id"] == mid][0]
    assert "took too long to judge" in held["reason"]


def test_connections_per_address_are_limited_unless_trusted(sink, make_daemon):
    d = make_daemon(sink, server_extra='max_connections_per_ip = 3\ntrusted_relays = []\n')
    time.sleep(0.5)  # the fixture's readiness probe has closed; the daemon sees it go asynchronously
    held = [socket.create_connection(("127.0.0.1", d.smtp_port)) for _ in range(3)]
    try:
        for c in held:
            assert c.recv(512).startswith(b"220")
        extra = socket.create_connection(("127.0.0.1", d.smtp_port))
        assert extra.recv(512).startswith(b"421 4.7.0")
        extra.close()
    finally:
        for c in held:
            c.close()
    # the slots are given back when the clients go
    wait_until(lambda: _greets(d), 5, "a free connection slot")


def _greets(d) -> bool:
    with socket.create_connection(("127.0.0.1", d.smtp_port)) as c:
        return c.recv(512).startswith(b"220")


def test_transfers_at_once_are_limited_and_the_rest_told_to_retry(sink, make_daemon):
    d = make_daemon(sink, server_extra="max_concurrent_data = 1\n")
    slow = socket.create_connection(("127.0.0.1", d.smtp_port))
    f = slow.makefile("rb")
    try:
        f.readline()
        for line in (b"EHLO a\r\n", b"MAIL FROM:<alice@example.org>\r\n", f"RCPT TO:<{LIST}>\r\n".encode(), b"DATA\r\n"):
            slow.sendall(line)
            while True:
                reply = f.readline()
                if reply[3:4] != b"-":
                    break
        assert reply.startswith(b"354")
        slow.sendall(b"Subject: half a message\r\n\r\nstill typing")
        with d.smtp() as s:
            s.ehlo()
            s.mail("alice@example.org")
            s.rcpt(LIST)
            code, text = s.docmd("DATA")
        assert code == 451 and b"4.3.2" in text
    finally:
        f.close()  # the socket's file descriptor stays open while its file object lives
        slow.close()
    # once the slow one went away, there is room again
    wait_until(lambda: _accepted(d), 10, "a free transfer slot")


def _accepted(d) -> bool:
    with d.smtp() as s:
        s.ehlo()
        s.mail("alice@example.org")
        s.rcpt(LIST)
        code, _ = s.docmd("DATA")
        if code != 354:
            return False
        s.send(post_bytes() + b".\r\n")
        return s.getreply()[0] == 250
