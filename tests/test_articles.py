"""From submission to approved article (RFC 5537 3.5.1), and what a news server's answer to POST
means for the outbox: pure functions, no server needed."""

import pytest

from listmod.config import ListConfig, parse_news_url
from listmod.delivery.articles import approved_article, article_message_id
from listmod.delivery.nntp import Reply, dot_stuffed, judge_post_reply

GROUP_LIST = ListConfig(address="sub@example.org", deliver="nntp://127.0.0.1:119/comp.test,comp.other")


def test_transport_headers_go_approved_comes_and_the_body_stays_byte_for_byte():
    body = b"line one\r\n.starts with a dot\r\n\xc3\xa9t\xc3\xa9\r\n\r\n"
    raw = (b"Path: a!b!not-for-mail\r\nReceived: from x\r\n\tby y\r\nFrom: p@example.net\r\n"
           b"Newsgroups: comp.test\r\nNNTP-Posting-Host: 192.0.2.9\r\nInjection-Info: x; a=b\r\n"
           b"Injection-Date: now\r\nXref: a comp.test:1\r\nDelivered-To: sub@example.org\r\n"
           b"To: Submissions <sub@example.org>\r\nApproved: forged@example.net\r\nSubject: s\r\n"
           b"Message-ID: <m@example.net>\r\n\r\n") + body
    out = approved_article(raw, GROUP_LIST, "<m@example.net>")
    head, body_out = out.split(b"\r\n\r\n", 1)
    assert body_out == body
    assert head.split(b"\r\n") == [b"From: p@example.net", b"Newsgroups: comp.test", b"Subject: s",
                                   b"Message-ID: <m@example.net>", b"Approved: sub@example.org"]


def test_a_to_naming_someone_else_is_kept():
    raw = b"From: p@example.net\r\nTo: friend@example.com, sub@example.org\r\nSubject: s\r\n\r\nx\r\n"
    assert b"To: friend@example.com, sub@example.org" in approved_article(raw, GROUP_LIST, "<a@b>")


def test_newsgroups_and_message_id_are_added_when_the_submission_has_none():
    raw = b"From: p@example.net\nSubject: mailed directly\n\nhello\n"
    mid = article_message_id("", 42, "ab" * 32, "lists.example.org")
    out = approved_article(raw, GROUP_LIST, mid)
    assert b"Newsgroups: comp.test,comp.other\r\n" in out
    assert b"Message-ID: <listmod.42.abababababababab@lists.example.org>\r\n" in out
    assert out.endswith(b"\r\n\r\nhello\r\n")
    assert article_message_id("<given@x>", 42, "ab" * 32, "h") == "<given@x>"


def test_a_cross_post_keeps_all_its_groups_but_foreign_groups_alone_are_replaced():
    cross = b"From: p@x\r\nNewsgroups: comp.elsewhere, comp.other\r\nSubject: s\r\n\r\nb\r\n"
    assert b"Newsgroups: comp.elsewhere, comp.other\r\n" in approved_article(cross, GROUP_LIST, "<a@b>")
    foreign = b"From: p@x\r\nNewsgroups: alt.moderated.elsewhere\r\nSubject: s\r\n\r\nb\r\n"
    out = approved_article(foreign, GROUP_LIST, "<a@b>")
    assert b"alt.moderated.elsewhere" not in out and b"Newsgroups: comp.test,comp.other\r\n" in out


def test_a_long_folded_header_keeps_its_folding():
    refs = b"References: <a@x>\r\n\t<b@x>\r\n\t<c@x>"
    raw = b"From: p@x\r\n" + refs + b"\r\nSubject: s\r\n\r\nb\r\n"
    assert refs + b"\r\n" in approved_article(raw, GROUP_LIST, "<a@b>")


@pytest.mark.parametrize("code, text, outcome", [
    (240, "Article received <a@b>", "sent"),
    (441, "435 Duplicate", "sent"),             # INN nnrpd: innd already has the Message-ID
    (435, "Duplicate", "sent"),
    (441, "437 Unwanted newsgroup", "failed"),
    (441, "Unknown newsgroup", "failed"),
    (441, "436 Can't write history", "retry"),
    (441, "400 server paused", "retry"),
    (440, "Posting not permitted", "failed"),
    (400, "loadav too high", "retry"),
    (480, "Authentication required", "retry"),
    (502, "Access denied", "failed"),
    (500, "What?", "failed"),
])
def test_each_answer_to_post_means_sent_retry_or_failed(code, text, outcome):
    assert judge_post_reply(Reply(code, text)).outcome == outcome


def test_lines_starting_with_a_dot_are_doubled_on_the_wire():
    assert dot_stuffed(b".a\r\nb\r\n.\r\nc") == b"..a\r\nb\r\n..\r\nc\r\n"


def test_news_urls_give_host_port_groups_and_tls():
    s = parse_news_url("nntp://news.example.org/comp.lang.misc,comp.lang.other")
    assert (s.host, s.port, s.groups, s.tls) == ("news.example.org", 119, ("comp.lang.misc", "comp.lang.other"), False)
    assert parse_news_url("nntps://[::1]/a.b").port == 563
    assert ListConfig(address="a@b.c", deliver="nntp://h/g.x", nntps=True).news_server.port == 563
    assert ListConfig(address="a@b.c", deliver="nntp://h:8119/g.x", nntps=True).news_server.port == 8119
    assert ListConfig(address="a@b.c").news_server is None
