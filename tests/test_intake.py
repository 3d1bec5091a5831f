"""What the SMTP/LMTP intake answers, and what it stores (or does not) for each answer."""

import smtplib
import threading

import pytest
from conftest import LIST, MEMBERS, post_bytes, wait_until

EXE_POST = (b"From: alice@example.org\r\nTo: dev@example.org\r\nSubject: my tool\r\n"
            b"Message-ID: <exe@test>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            b"Try this.\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=setup.exe\r\n\r\nMZ\r\n--b--\r\n")


def count(d, table):
    """Rows in a table; for the audit trail, the records about posts (members added are records too)."""
    where = " WHERE post IS NOT NULL" if table == "audit" else ""
    return d.db().execute(f"SELECT COUNT(*) FROM {table}{where}").fetchone()[0]


def test_reject_rule_answers_550_with_the_rules_reason(sink, make_daemon):
    d = make_daemon(sink)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        d.send("alice@example.org", LIST, EXE_POST)
    assert refused.value.smtp_code == 550
    text = refused.value.smtp_error.decode()
    assert text.startswith("5.7.1 Programs and scripts (.exe, .scr, .js, .vbs, ...) are not accepted")
    assert "download page" in text  # the whole reason, over continuation lines
    record = d.cli_json("audit", "--only", "posts")[0]
    assert (record["action"], record["rule"], record["source"]) == (
        "reject", "executable-attachment", "rules/10-security.toml:4")
    assert d.cli_json("queue") == [] and sink.copies() == []


def test_unknown_recipient_gets_550_and_nothing_is_stored(make_daemon):
    d = make_daemon(None)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        d.send("alice@example.org", "someone@elsewhere.example", post_bytes())
    code, text = refused.value.recipients["someone@elsewhere.example"]
    assert code == 550 and text.startswith(b"5.1.1")
    assert count(d, "messages") == 0 and count(d, "audit") == 0


def test_relaying_to_an_outside_address_alongside_a_list_is_refused(sink, make_daemon):
    d = make_daemon(sink)
    refused = d.send("alice@example.org", [LIST, "victim@elsewhere.example"],
                     post_bytes(message_id="<relay@test>"))
    assert refused["victim@elsewhere.example"][0] == 550
    wait_until(lambda: len(sink.copies_for("<relay@test>")) == len(MEMBERS), what="list delivery")
    assert "victim@elsewhere.example" not in {r for r, _ in sink.copies()}


def test_oversize_message_gets_552_and_nothing_is_stored(make_daemon):
    d = make_daemon(None)  # max_message_size = "1MB" in the test config
    big = post_bytes(body=("x" * 76 + "\r\n") * 14000)  # about 1.1 MB
    with pytest.raises(smtplib.SMTPException) as refused:
        with d.smtp() as s:
            s.ehlo()
            s.esmtp_features.pop("size", None)  # don't let the client refuse it first
            s.sendmail("alice@example.org", [LIST], big)
    assert getattr(refused.value, "smtp_code", None) == 552 or "552" in str(refused.value)
    assert count(d, "messages") == 0 and count(d, "audit") == 0
    # a SIZE declaration over the limit is refused at MAIL FROM
    with d.smtp() as s:
        s.ehlo()
        code, _ = s.mail("alice@example.org", [f"SIZE={2 * 1024 * 1024}"])
        assert code == 552


def test_lmtp_answers_each_recipient_separately(sink, make_daemon):
    d = make_daemon(sink, lmtp=True, extra_lists='\n[[list]]\naddress = "closed@example.org"\n'
                                                 'default_nonmember_action = "reject"\n')
    lmtp = smtplib.LMTP("127.0.0.1", d.lmtp_port)
    try:
        lmtp.ehlo()  # smtplib's LMTP sends LHLO for this
        lmtp.mail("alice@example.org")
        lmtp.rcpt(LIST)
        lmtp.rcpt("closed@example.org")
        lmtp.putcmd("data")
        assert lmtp.getreply()[0] == 354
        lmtp.send(post_bytes(message_id="<lmtp@test>").replace(b"\r\n.", b"\r\n..") + b".\r\n")
        first = lmtp.getreply()
        second = lmtp.getreply()
    finally:
        lmtp.close()
    assert first[0] == 250                      # member of dev@: accepted
    assert second[0] == 550 and b"Only members may post to closed@example.org" in second[1]
    wait_until(lambda: len(sink.copies_for("<lmtp@test>")) == len(MEMBERS), what="dev@ delivery")
    actions = {(r["list"], r["action"]) for r in d.cli_json("audit", "--only", "posts")}
    assert actions == {(LIST, "accept"), ("closed@example.org", "reject")}


def test_a_message_to_two_lists_is_judged_for_each(sink, make_daemon):
    d = make_daemon(sink, extra_lists='\n[[list]]\naddress = "users@example.org"\n')
    d.send("alice@example.org", [LIST, "users@example.org"], post_bytes(message_id="<two@test>"))
    by_list = {r["list"]: r for r in d.cli_json("audit", "--only", "posts")}
    assert by_list[LIST]["action"] == "accept"           # alice is a member of dev@
    assert by_list["users@example.org"]["action"] == "hold"  # but not of users@
    assert [q["list"] for q in d.cli_json("queue")] == ["users@example.org"]


@pytest.mark.parametrize("name, headers, mail_from, rule", [
    ("loop", "List-Id: Dev list <dev.example.org>\r\n", "alice@example.org", "loop"),
    ("x-loop", "X-Loop: dev@example.org\r\n", "alice@example.org", "loop"),
    ("bounce", "", "", "bounce"),
    ("auto-reply", "Auto-Submitted: auto-replied\r\n", "alice@example.org", "auto-reply"),
])
def test_loops_bounces_and_auto_replies_are_recorded_never_distributed(sink, make_daemon, name, headers,
                                                                       mail_from, rule):
    d = make_daemon(sink)
    d.send(mail_from, LIST, post_bytes(message_id=f"<{name}@test>", extra=headers))
    d.send("alice@example.org", LIST, post_bytes(message_id=f"<after-{name}@test>"))
    wait_until(lambda: len(sink.copies_for(f"<after-{name}@test>")) == len(MEMBERS), what="the next post")
    assert sink.copies_for(f"<{name}@test>") == []
    record = d.cli_json("audit", "--only", "posts")[0]
    assert (record["action"], record["rule"], record["source"]) == ("discard", rule, "builtin")
    assert record["reason"]


def test_auto_submitted_no_is_an_ordinary_post(sink, make_daemon):
    d = make_daemon(sink)
    d.send("alice@example.org", LIST, post_bytes(message_id="<asno@test>", extra="Auto-Submitted: no\r\n"))
    wait_until(lambda: len(sink.copies_for("<asno@test>")) == len(MEMBERS), what="delivery")


def test_malformed_mime_is_held_with_a_reason(sink, make_daemon):
    d = make_daemon(sink)
    broken = (b"From: alice@example.org\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed; boundary=nothere\r\n\r\njust text, no parts\r\n")
    d.send("alice@example.org", LIST, broken)
    held = d.cli_json("queue")[0]
    assert held["rule"] == "unparseable"
    assert held["reason"].startswith("The message could not be parsed: the multipart boundary never appears")


def test_when_the_store_cannot_commit_the_answer_is_451_and_a_retry_succeeds(sink, make_daemon):
    d = make_daemon(sink, server_extra='commit_timeout = "0.5s"\n')
    blocker = d.db()
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database: commits must fail
    try:
        with pytest.raises(smtplib.SMTPDataError) as failed:
            d.send("alice@example.org", LIST, post_bytes(message_id="<locked@test>"))
        assert failed.value.smtp_code == 451
        assert failed.value.smtp_error.startswith(b"4.3.0")
    finally:
        blocker.rollback()
        blocker.close()
    assert count(d, "messages") == 0
    d.send("alice@example.org", LIST, post_bytes(message_id="<locked@test>"))  # the sender's retry
    wait_until(lambda: len(sink.copies_for("<locked@test>")) == len(MEMBERS), what="delivery after retry")
    assert [r["message_id"] for r in d.cli_json("audit", "--only", "posts")] == ["<locked@test>"]


def test_bad_input_never_stops_the_daemon(sink, make_daemon):
    d = make_daemon(sink)
    nasty = [
        b"\x00\x00\x00 not a message at all",
        b"Subject: " + b"A" * 5000 + b"\r\n\r\n" + b"B" * 200000 + b"\r\n",
        b"From: =?x-unknown?q?=FF=FE?= <alice@example.org>\r\nSubject: =?utf-8?b?!!!?=\r\n\r\n\xff\xfe\r\n",
        b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n",
        b"From: alice@example.org\r\n" + b"X-Deep: 1\r\n" * 900 + b"\r\nbody\r\n",  # under max_header_count
    ]
    threads = [threading.Thread(target=d.send, args=("alice@example.org", LIST, raw)) for raw in nasty]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert d.proc.poll() is None
    assert count(d, "messages") == len(nasty)
    assert count(d, "audit") == len(nasty)


def test_smtputf8_senders_and_raw_utf8_headers_are_received(sink, make_daemon):
    d = make_daemon(sink, members=MEMBERS + ["zoë@exämple.org"])
    raw = ("From: Zoë <zoë@exämple.org>\r\nTo: dev@example.org\r\nSubject: Grüße aus Köln\r\n"
           "Message-ID: <utf8@test>\r\n\r\nHallo!\r\n").encode()
    with d.smtp() as s:
        s.ehlo()
        assert s.has_extn("smtputf8")
        s.sendmail("zoë@exämple.org", [LIST], raw, mail_options=["SMTPUTF8"])
    wait_until(lambda: len(sink.copies_for("<utf8@test>")) == len(MEMBERS) + 1, what="delivery")
    record = d.cli_json("audit", "--only", "posts")[0]
    assert (record["sender"], record["action"]) == ("zoë@exämple.org", "accept")
    assert d.cli_json("members", "list", LIST)[-1]["address"] == "zoë@exämple.org"


def test_lmtp_answers_every_recipient_when_a_post_and_a_moderation_reply_share_a_transaction(sink, make_daemon):
    d = make_daemon(sink, lmtp=True)
    lmtp = smtplib.LMTP("127.0.0.1", d.lmtp_port, timeout=10)  # a missing reply fails, not hangs
    try:
        lmtp.ehlo()
        lmtp.mail("alice@example.org")
        lmtp.rcpt("dev-moderation@example.org")
        lmtp.rcpt(LIST)
        lmtp.putcmd("data")
        assert lmtp.getreply()[0] == 354
        lmtp.send(post_bytes(message_id="<mixed@test>") + b".\r\n")
        first, second = lmtp.getreply(), lmtp.getreply()
        lmtp.noop()  # the session is still in step: no stray reply line is left over
    finally:
        lmtp.close()
    assert first[0] == 250 and b"Reply received" in first[1]   # the -moderation recipient
    assert second[0] == 250 and b"Accepted for dev@example.org" in second[1]
    wait_until(lambda: len(sink.copies_for("<mixed@test>")) == len(MEMBERS), what="the post's delivery")
