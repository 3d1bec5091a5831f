"""Moderated newsgroups: submissions by mail, judged like list posts, approved articles POSTed to a
real INN server on loopback and read back with ARTICLE."""

from __future__ import annotations

import base64
import smtplib
import threading
import time
from collections import Counter
from email import message_from_bytes
from email.policy import default

import pytest
from conftest import LIST, wait_until
from servers import Inn
from test_moderation import MODERATION, command_for, digests, post_ids, reply, text_of

from listmod.delivery.nntp import NntpClient

MOD = "mod@example.org"
RULES = """
[[rule]]
id = "no-sales"
action = "reject"
reason = "Sales pitches are off topic in this group; see the charter."
match.subject.contains = "buy now"

[[rule]]
id = "review"
action = "hold"
reason = "Posts marked [review] are read by a moderator first."
match.subject.contains = "[review]"
"""


@pytest.fixture(scope="module")
def inn():
    from conftest import free_port
    server = Inn(free_port())
    server.start()
    yield server
    server.cleanup()


def news_daemon(make_daemon, sink, inn, tmp_path, groups="test.moderated", extra="", extra_lists="", files=None):
    rules = tmp_path / "news-rules"
    rules.mkdir(exist_ok=True)
    (rules / "group.toml").write_text(RULES)
    return make_daemon(sink, members=[], rules_dir=rules, moderators=(MOD,), extra_lists=extra_lists, files=files,
                       list_extra=f'deliver = "nntp://127.0.0.1:{inn.port}/{groups}"\n'
                                  f'default_nonmember_action = "accept"\n{extra}')


def submission(subject="On parsers", body="Which parser do you use?\r\n", message_id=None,
               sender="poster@example.net", groups="test.moderated", extra="") -> tuple[bytes, str]:
    mid = message_id or f"<sub-{time.time_ns()}@example.net>"
    head = (f"From: Poster <{sender}>\r\nNewsgroups: {groups}\r\nSubject: {subject}\r\n"
            f"Message-ID: {mid}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n{extra}")
    return (head + "\r\n" + body).encode(), mid


def article(inn, message_id) -> bytes | None:
    client = NntpClient("127.0.0.1", inn.port, timeout=10)
    try:
        return client.article(message_id)
    finally:
        client.close()


def copies_in_group(inn, group, message_id) -> int:
    """How many articles in `group` carry this Message-ID (HDR over the whole group)."""
    client = NntpClient("127.0.0.1", inn.port, timeout=10)
    try:
        if client.command(f"GROUP {group}").code != 211:
            return 0
        reply_ = client.command("HDR Message-ID 1-")
        assert reply_.code == 225, reply_
        return sum(1 for line in client.read_block().splitlines() if line.split(b" ", 1)[-1].decode() == message_id)
    finally:
        client.close()


def headers_and_body(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    return message_from_bytes(head + b"\r\n\r\n", policy=default), body


def outbox(d, kind="article"):
    return d.db().execute("SELECT state, attempts, last_error FROM outbox WHERE kind = ?", (kind,)).fetchall()


def test_an_accepted_submission_is_posted_with_approved_and_its_own_message_id(sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path)
    raw, mid = submission(extra="Path: old.example!not-for-mail\r\nReceived: from x by y; Wed, 25 Nov 2026\r\n"
                                "NNTP-Posting-Host: 192.0.2.1\r\nX-Trace: old trace\r\nXref: old.example test.moderated:9\r\n"
                                "Injection-Info: old.example; posting-host=\"x\"\r\n"
                                f"To: {LIST}\r\n")
    d.send("poster@example.net", LIST, raw)
    stored = wait_until(lambda: article(inn, mid), what="the article on the news server")
    headers, body = headers_and_body(stored)
    assert headers["Message-ID"] == mid
    assert headers["Approved"] == LIST
    assert headers["Newsgroups"] == "test.moderated"
    assert "old.example" not in headers["Path"] and "old.example" not in headers["Xref"]
    for gone in ("Received", "NNTP-Posting-Host", "X-Trace", "To"):
        assert headers[gone] is None, gone
    assert "192.0.2.1" not in headers["Injection-Info"]
    assert body == b"Which parser do you use?\r\n"
    assert outbox(d) == [("sent", 1, None)]
    audit = d.cli_json("audit", "--only", "posts")
    assert [(a["action"], a["list"]) for a in audit] == [("accept", LIST)]


def test_a_held_submission_appears_only_after_a_moderators_approve_reply(sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path, extra='approved_by = "moderators@example.org"\n')
    raw, mid = submission(subject="[review] a long essay")
    d.send("poster@example.net", LIST, raw)
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    time.sleep(0.5)  # the outbox had its chance: nothing may reach the group yet
    assert article(inn, mid) is None and outbox(d) == []
    d.send(MOD, MODERATION, reply(MOD, command_for(digest, "approve")))
    headers, _ = headers_and_body(wait_until(lambda: article(inn, mid), what="the approved article"))
    assert headers["Approved"] == "moderators@example.org"
    actions = [(a["action"], a["actor"]) for a in d.cli_json("audit", "--only", "posts")]
    assert actions == [("hold", "rules"), ("accept", f"moderator:{MOD}")]


def test_a_rejected_submission_never_appears_and_the_poster_is_told_why(sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path)
    raw, mid = submission(subject="Cheap watches, buy now")
    with d.smtp() as s:
        s.ehlo()
        s.mail("news@loopback.test")
        s.rcpt(LIST)
        code, text = s.data(raw)
    # the SMTP client is the news server's mailer: it is told 250, the poster hears by mail
    assert code == 250 and b"Rejected" in text and b"off topic" in text
    notice = wait_until(lambda: [m for r, m in sink.copies() if r == "poster@example.net"], what="the notice")[0]
    assert "off topic in this group" in text_of(notice.message)
    assert notice.message["In-Reply-To"] == mid
    time.sleep(0.5)
    assert article(inn, mid) is None
    assert outbox(d) == []


def test_an_article_approved_while_the_news_server_is_down_appears_once_it_is_back(
        sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path)
    raw, mid = submission(subject="[review] during an outage")
    d.send("poster@example.net", LIST, raw)
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    inn.stop()
    try:
        d.send(MOD, MODERATION, reply(MOD, command_for(digest, "approve")))
        failed = wait_until(lambda: [r for r in outbox(d) if r[0] == "pending" and r[1] >= 2],
                            what="failed attempts while INN is down")
        assert "cannot reach the news server" in failed[0][2]
    finally:
        inn.start()
    wait_until(lambda: article(inn, mid), what="the article once INN is back")
    wait_until(lambda: outbox(d)[0][0] == "sent", what="the outbox row settled")
    assert copies_in_group(inn, "test.moderated", mid) == 1


def test_the_same_article_approved_twice_appears_once(sink, make_daemon, inn, tmp_path):
    # digests every second: when the second copy misses the first digest, the next one shows it
    d = news_daemon(make_daemon, sink, inn, tmp_path, extra='digest_every = "1s"\n')
    # the poster sent the submission twice; both copies are held and both are approved
    raw, mid = submission(subject="[review] twice")
    d.send("poster@example.net", LIST, raw)
    # the second copy comes after the first digest went out (the order that once made this test
    # flaky): a later digest shows it, and the first one again as "still waiting"; the ids are taken
    # from whichever digests show them
    wait_until(lambda: digests(d), what="the first digest")
    d.send("poster@example.net", LIST, raw)
    held = wait_until(lambda: [q["id"] for q in d.cli_json("queue")] if len(d.cli_json("queue")) == 2 else None,
                      what="both copies held")
    ids = wait_until(lambda: (found := {i.split("-")[0]: i for g in digests(d) for i in post_ids(g)})
                     and all(h in found for h in held) and [found[h] for h in held], what="digests showing both")
    d.send(MOD, MODERATION, reply(MOD, f"approve {ids[0]}"))
    d.send(MOD, MODERATION, reply(MOD, f"approve {ids[1]}"))
    # and the first approval is sent again as well, as a second reply: refused, already decided
    d.send(MOD, MODERATION, reply(MOD, f"approve {ids[0]}"))
    wait_until(lambda: [r[0] for r in outbox(d)] == ["sent", "sent"], what="both approvals settled",
               state=lambda: (outbox(d), d.cli_json("audit", "--only", "posts")))
    details = d.db().execute("SELECT last_error FROM outbox WHERE kind = 'article'").fetchall()
    assert copies_in_group(inn, "test.moderated", mid) == 1
    # a restart after a lost 'sent' record posts again: the server answers "already have it"
    d.stop()
    d.db().execute("UPDATE outbox SET state = 'pending' WHERE kind = 'article'").connection.commit()
    d.start()
    wait_until(lambda: [r[0] for r in outbox(d)] == ["sent", "sent"], what="the re-posts settled")
    assert copies_in_group(inn, "test.moderated", mid) == 1
    assert details == [(None,), (None,)]
    decisions = [a["action"] for a in d.cli_json("audit", "--only", "posts")]
    assert decisions == ["hold", "hold", "accept", "accept"]


def test_an_8bit_body_a_long_header_and_an_attachment_arrive_unchanged(sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path)
    refs = " ".join(f"<ref-{n}-{'x' * 20}@example.net>" for n in range(40))
    folded = refs.replace("> <", ">\r\n\t<")
    attachment = base64.encodebytes(bytes(range(256)) * 20).decode().replace("\n", "\r\n")
    body = ("--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße aus Köln — ça va? 日本語のテキスト\r\n.leading dot\r\n..two dots\r\n\r\n"
            "--b1\r\nContent-Type: application/octet-stream; name=data.bin\r\n"
            "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=data.bin\r\n\r\n"
            f"{attachment}--b1--\r\n").encode()
    raw, mid = submission(extra=f"References: {folded}\r\nMIME-Version: 1.0\r\n"
                                "Content-Type: multipart/mixed; boundary=b1\r\n", body="")
    raw += body
    d.send("poster@example.net", LIST, raw)
    stored = wait_until(lambda: article(inn, mid), what="the article")
    headers, stored_body = headers_and_body(stored)
    assert stored_body == body
    assert f"References: {folded}".encode() in stored
    assert headers["References"].split() == refs.split()


def test_a_cross_post_to_two_of_our_groups_is_judged_once_and_posted_once(sink, make_daemon, inn, tmp_path):
    other = "other@example.org"
    d = news_daemon(make_daemon, sink, inn, tmp_path, extra_lists=(
        f'\n[[list]]\naddress = "{other}"\nmoderators = ["{MOD}"]\ndefault_nonmember_action = "accept"\n'
        f'deliver = "nntp://127.0.0.1:{inn.port}/test.other"\n'))
    raw, mid = submission(groups="test.other,test.moderated,test.open")
    refused = d.send("news@loopback.test", [LIST, other], raw)
    assert refused == {}
    stored = wait_until(lambda: article(inn, mid), what="the cross-posted article")
    headers, _ = headers_and_body(stored)
    assert headers["Newsgroups"] == "test.other,test.moderated,test.open"
    assert sorted(g.split(":")[0] for g in headers["Xref"].split()[1:]) == [
        "test.moderated", "test.open", "test.other"]
    posts = d.db().execute("SELECT list, state FROM posts").fetchall()
    assert posts == [(other, "accepted")]   # the list of the first group in Newsgroups decided
    assert len(outbox(d)) == 1


def test_a_submission_the_news_server_mails_to_us_comes_back_approved(sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path)
    inn.mail_submissions("test.moderated", LIST, d.smtp_port)
    mid = f"<via-inn-{time.time_ns()}@example.net>"
    client = NntpClient("127.0.0.1", inn.port, timeout=10)
    try:
        answer = client.post(f"From: poster@example.net\r\nNewsgroups: test.moderated\r\nSubject: via INN\r\n"
                             f"Message-ID: {mid}\r\n\r\nPosted to the news server.\r\n".encode())
    finally:
        client.close()
    assert answer.code == 240 and "mailed to moderator" in answer.text
    headers, body = headers_and_body(wait_until(lambda: article(inn, mid), what="the approved article"))
    assert headers["Approved"] == LIST and headers["To"] is None
    assert body == b"Posted to the news server.\r\n"
    envelope = d.db().execute("SELECT envelope_from FROM messages").fetchone()[0]
    assert envelope == "news@loopback.test"


def test_an_article_the_news_server_refuses_is_failed_and_poster_and_owner_are_told(
        sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path, groups="test.nosuchgroup")
    raw, mid = submission(groups="test.nosuchgroup")
    d.send("poster@example.net", LIST, raw)
    row = wait_until(lambda: [r for r in outbox(d) if r[0] == "failed"], what="the refusal recorded")[0]
    assert row[2].startswith(f"the news server 127.0.0.1:{inn.port}: 441")
    told = wait_until(lambda: {r for r, m in sink.copies() if m.message["In-Reply-To"] == mid} ==
                      {"poster@example.net", "owner@example.org"} and sink.copies(), what="the notices")
    text = text_of(next(m for r, m in told if r == "poster@example.net").message)
    assert "did not take it" in text and "441" in text
    assert [a["action"] for a in d.cli_json("audit", "--only", "posts")] == ["accept", "undelivered"]


def test_a_submission_for_groups_we_do_not_moderate_is_held_with_the_reason(sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path)
    raw, mid = submission(groups="alt.elsewhere.moderated")
    d.send("poster@example.net", LIST, raw)
    (post,) = d.cli_json("queue")
    assert post["rule"] == "newsgroups"
    assert "alt.elsewhere.moderated, none of which" in post["reason"] and "test.moderated" in post["reason"]
    assert article(inn, mid) is None


def test_a_server_that_wants_a_login_gets_authinfo_from_the_password_file(sink, make_daemon, tmp_path):
    from conftest import free_port
    server = Inn(free_port(), logins={"listmod": "n3ws-s3cret"})
    server.start()
    try:
        d = news_daemon(make_daemon, sink, server, tmp_path, files={"nntp.password": "n3ws-s3cret\n"},
                        extra='nntp_username = "listmod"\nnntp_password_file = "nntp.password"\n')
        raw, mid = submission()
        d.send("poster@example.net", LIST, raw)
        wait_until(lambda: article(server, mid), what="the article posted after AUTHINFO")
        # without the login the same server refuses to take posts from us
        anonymous = NntpClient("127.0.0.1", server.port, timeout=10)
        try:
            answer = anonymous.post(submission()[0] + b"Approved: x@example.org\r\n")
        finally:
            anonymous.close()
        assert answer.code in (440, 480), answer
    finally:
        server.cleanup()


@pytest.mark.slow
def test_kill_9_while_posting_loses_no_acknowledged_submission_and_posts_each_once(
        sink, make_daemon, inn, tmp_path):
    d = news_daemon(make_daemon, sink, inn, tmp_path)
    acked: list[str] = []
    done = threading.Event()

    def send_all():
        n = 0
        s = None
        deadline = time.monotonic() + 120
        while n < 600 and time.monotonic() < deadline:
            raw, mid = submission(message_id=f"<kill-{n}-{time.time_ns()}@example.net>", subject=f"Part {n}")
            try:
                s = s or d.smtp()
                s.sendmail("news@loopback.test", [LIST], raw)
                acked.append(mid)
                n += 1
            except (smtplib.SMTPException, OSError):
                s = None  # the daemon is down: connect again (bounded by the deadline)
                time.sleep(0.05)
        done.set()

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    wait_until(lambda: len(acked) >= 200, 60, "200 submissions acknowledged")
    d.kill9()
    d.start()
    sender.join(150)
    assert done.is_set() and len(acked) == 600
    wait_until(lambda: d.db().execute("SELECT COUNT(*) FROM outbox WHERE state != 'sent'").fetchone()[0] == 0,
               120, "every article posted")
    client = NntpClient("127.0.0.1", inn.port, timeout=10)
    try:
        assert client.command("GROUP test.moderated").code == 211
        assert client.command("HDR Message-ID 1-").code == 225
        in_group = Counter(line.split(b" ", 1)[1].decode() for line in client.read_block().splitlines())
    finally:
        client.close()
    assert all(in_group[mid] == 1 for mid in acked), "an acknowledged submission is missing or posted twice"
