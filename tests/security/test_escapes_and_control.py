"""Findings 4 and 13: terminal escapes never reach the queue listing or a notice's Subject; a
submission with Control: cancel is held, and an approved one reaches INN without the header."""


from conftest import LIST, post_bytes, wait_until

ESCAPE = "=?utf-8?q?=1B]0;owned=07=1B[2J?= question"


def test_terminal_escapes_are_removed_from_the_queue_and_from_notices(sink, make_daemon):
    d = make_daemon(sink, list_extra="notify_held = true\n")
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject=ESCAPE))
    out = wait_until(lambda: d.cli("queue").stdout if "question" in d.cli("queue").stdout else "", 10, "held")
    assert "\x1b" not in out and "\x07" not in out
    notice = wait_until(lambda: [r for rcpt, r in sink.copies() if rcpt == "stranger@example.net"], 10, "notice")
    subject = notice[0].message["Subject"]
    assert "question" in subject and not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in subject)
    assert b"\x1b" not in notice[0].content


def test_a_control_cancel_is_held_and_never_posted_with_its_control_header(sink, make_daemon, tmp_path):
    from conftest import free_port
    from servers import Inn
    from test_moderation import MODERATION, command_for, digests, reply
    from test_newsgroups import article, news_daemon, submission
    inn = Inn(free_port())
    inn.start()
    try:
        d = news_daemon(make_daemon, sink, inn, tmp_path)
        raw, mid = submission(subject="Innocent looking question",
                              extra="Control: cancel <victim@example.net>\r\nSupersedes: <victim@example.net>\r\n"
                                    "Also-Control: cancel <victim2@example.net>\r\n")
        d.send("news@example.org", LIST, raw)
        held = wait_until(lambda: [q for q in d.cli_json("queue") if q["message_id"] == mid], 10, "held")[0]
        assert held["rule"] == "control" and "Control: cancel <victim@example.net>" in held["reason"]
        digest = wait_until(lambda: digests(d), 15, "the digest")[-1]
        assert "Control: cancel" in next(digest.iter_parts()).get_content()
        d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve"), digest))
        posted = wait_until(lambda: article(inn, mid), 20, "the article in the group")
        assert b"\nControl:" not in posted and b"Supersedes:" not in posted and b"Also-Control:" not in posted
        assert b"Approved:" in posted
    finally:
        inn.cleanup()

