"""The outbound SMTP transaction (listmod/delivery/smtpsend.py) against real aiosmtpd servers: one
write for the envelope when the smarthost offers PIPELINING, one command at a time when it does not,
and the same outcomes either way: refused recipients, a refused sender, a refused DATA, a kept
connection the smarthost closed."""
from __future__ import annotations

import smtplib
import time

import pytest
from aiosmtpd.controller import Controller
from conftest import SinkHandler, free_port
from hypothesis import given, settings
from hypothesis import strategies as st

from listmod.config import Config, OutboundConfig
from listmod.delivery.outbox import Copy, SmtpSink
from listmod.delivery.smtpsend import StaleConnection, transaction
from listmod.intake.server import SIMPLE_ANGLE_ADDR, FastData

RECIPIENTS = [f"m{i}@example.org" for i in range(10)]
BODY = b"From: a@example.org\r\nSubject: t\r\nMessage-ID: <t@example.org>\r\n\r\nline\r\n.starts with a dot\r\n"


class CountingSMTP(smtplib.SMTP):
    """smtplib.SMTP that counts its writes to the socket (each a round trip the client waits for)."""
    writes = 0

    def send(self, s):
        self.writes += 1
        return super().send(s)


@pytest.fixture(params=[True, False], ids=["pipelining", "one-at-a-time"])
def server(request):
    handler = SinkHandler()
    handler.pipelining = request.param
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, timeout=1.0)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def connect(port: int) -> CountingSMTP:
    conn = CountingSMTP("127.0.0.1", port, timeout=10)
    conn.ehlo()
    conn.writes = 0
    return conn


def test_a_post_to_ten_members_is_two_writes_when_pipelined_and_arrives_whole(server):
    handler, port = server
    conn = connect(port)
    assert transaction(conn, "list-bounces@example.org", RECIPIENTS, BODY) == {}
    assert conn.writes == (2 if handler.pipelining else 1 + len(RECIPIENTS) + 2)
    [got] = handler.received
    assert got.rcpt_tos == RECIPIENTS and got.mail_from == "list-bounces@example.org"
    assert got.content.replace(b"\r\n", b"\n") == BODY.replace(b"\r\n", b"\n")  # the dot line unstuffed again


def test_refused_recipients_are_reported_and_the_connection_carries_the_next_post(server):
    handler, port = server
    handler.answers = {"m3@example.org": "550 5.1.1 no such user", "m4@example.org": "451 4.3.0 try later"}
    conn = connect(port)
    refused = transaction(conn, "b@example.org", RECIPIENTS, BODY)
    assert refused == {"m3@example.org": (550, b"5.1.1 no such user"), "m4@example.org": (451, b"4.3.0 try later")}
    assert handler.received[0].rcpt_tos == [r for r in RECIPIENTS if r not in refused]
    handler.answers = {r: "550 5.1.1 gone" for r in RECIPIENTS}
    with pytest.raises(smtplib.SMTPRecipientsRefused) as every:
        transaction(conn, "b@example.org", RECIPIENTS, BODY)
    assert set(every.value.recipients) == set(RECIPIENTS)
    handler.answers = {}
    assert transaction(conn, "b@example.org", RECIPIENTS[:2], BODY) == {}
    assert [r.rcpt_tos for r in handler.received] == [handler.received[0].rcpt_tos, RECIPIENTS[:2]]


def test_a_refused_sender_or_data_raises_as_sendmail_does_and_the_connection_is_reset(server):
    handler, port = server
    refusing = [True]

    async def handle_mail(server_, session, envelope, address, options):
        if refusing[0]:
            return "553 5.7.1 sender refused"
        envelope.mail_from, envelope.mail_options = address, options
        return "250 OK"
    handler.handle_MAIL = handle_mail  # aiosmtpd looks its hooks up when a connection opens
    conn = connect(port)
    with pytest.raises(smtplib.SMTPSenderRefused) as mail:
        transaction(conn, "b@example.org", RECIPIENTS, BODY)
    assert mail.value.smtp_code == 553
    refusing[0] = False
    handler.data_answers = ["554 5.6.0 content refused"]
    with pytest.raises(smtplib.SMTPDataError) as data:
        transaction(conn, "b@example.org", RECIPIENTS, BODY)
    assert data.value.smtp_code == 554
    assert transaction(conn, "b@example.org", RECIPIENTS, BODY) == {}
    assert len(handler.received) == 1


def test_a_kept_connection_the_smarthost_closed_is_replaced_once_and_the_copies_go(server):
    handler, port = server
    config = Config(outbound=OutboundConfig(host="127.0.0.1", port=port, starttls=False))
    sink = SmtpSink(config)
    copies = [Copy(i, 1, "post", "l@example.org", r, "l-bounces@example.org", 0, 0.0)
              for i, r in enumerate(RECIPIENTS)]
    assert {o.result for o in sink.deliver(copies, BODY)} == {"sent"}
    time.sleep(1.6)  # the server's idle timeout (1 s) closes the kept connection
    with pytest.raises(StaleConnection):
        transaction(sink.conn, "l-bounces@example.org", RECIPIENTS, BODY)
    sink.conn = None
    assert {o.result for o in sink.deliver(copies, BODY)} == {"sent"}
    time.sleep(1.6)
    assert {o.result for o in sink.deliver(copies, BODY)} == {"sent"}
    sink.close()
    assert [len(r.rcpt_tos) for r in handler.received] == [10, 10, 10]


def test_an_address_that_would_break_the_command_line_is_failed_not_sent(server):
    handler, port = server
    config = Config(outbound=OutboundConfig(host="127.0.0.1", port=port, starttls=False))
    sink = SmtpSink(config)
    bad = Copy(1, 1, "post", "l@example.org", "x@example.org>\r\nRCPT TO:<y@example.org", "l-b@example.org", 0, 0.0)
    [outcome] = sink.deliver([bad], BODY)
    sink.close()
    assert outcome.result == "failed" and "cannot be an SMTP envelope address" in outcome.detail
    assert handler.received == []


ATEXT = "abcxyzABCXYZ0129!#$%&'*+/=?^_`{|}~-"


_structured = st.builds(lambda local, domain: f"{local}@{domain}", st.text(alphabet=ATEXT + ".", max_size=12),
                        st.text(alphabet="ab9-.é", max_size=12))
_anything = st.text(alphabet=ATEXT + ".@<>()\" \t\\é", max_size=30)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_structured, _anything), st.sampled_from(["", " SIZE=10", "x", " (c) A", "\t", "  \t(x)"]))
def test_simple_envelope_addresses_are_read_as_aiosmtpds_full_parser_reads_them(inner, tail):
    arg = f"<{inner}>{tail}"
    fast = SIMPLE_ANGLE_ADDR.match(arg)
    if fast is None:
        return  # the full parser reads it
    full = FastData.__mro__[1]._getaddr(_Limits(), arg)
    assert (fast.group(1), arg[fast.end():]) == full


class _Limits:
    local_part_limit = 0
