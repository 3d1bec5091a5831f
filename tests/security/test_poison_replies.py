"""Finding 1: a reply that makes the code raise (`approve ²`, `approve 1-é`, a UTF-7 lone surrogate in
the Subject) is set aside with its reason; the valid reply after it is applied within seconds, over
SMTP and over IMAP, also after a restart."""

import time

import pytest
from conftest import LIST, MEMBERS, free_port, post_bytes, wait_until

MODS = ("mod@example.org", "mod2@example.org")
MODERATION = "dev-moderation@example.org"
POISON = [
    ("Re: held", "approve \u00b2"),
    ("Re: held", "approve 1-\u00e9"),
    ("=?utf-7?q?+2D3-?= held", "approve ZZZZ"),
]


def held_post(d, n: int) -> tuple[str, str]:
    """Hold a post from a non-member; (its Message-ID, its short id from the queue)."""
    mid = f"<poison-{n}-{time.time_ns()}@t>"
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id=mid))
    item = wait_until(lambda: [q for q in d.cli_json("queue") if q["message_id"] == mid], what="the held post")[0]
    return mid, item["id"]


def command_line(d, short_id: str) -> str:
    from listmod.tokens import command_id, post_token
    key = (d.dir / "var" / "secret.key").read_bytes()
    post = d.db().execute("SELECT id FROM posts WHERE short_id = ?", (short_id,)).fetchone()[0]
    return command_id(short_id, post_token(key, LIST, post, short_id))


def reply(subject: str, text: str) -> bytes:
    return (f"From: mod@example.org\r\nTo: {MODERATION}\r\nSubject: {subject}\r\n"
            f"Message-ID: <r-{time.time_ns()}@client.example>\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n").encode()


def send_reply(d, raw: bytes) -> None:
    with d.smtp() as s:
        s.sendmail("mod@example.org", [MODERATION], raw, mail_options=["SMTPUTF8"])


def test_poison_replies_over_smtp_do_not_stop_the_valid_one_after_them(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS)
    mid, short = held_post(d, 1)
    for subject, text in POISON:
        send_reply(d, reply(subject, text))
    send_reply(d, reply("Re: held", f"approve {command_line(d, short)}"))
    wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), 10, "the valid reply applied")
    # and after a restart, the next valid reply is applied too
    mid2, short2 = held_post(d, 2)
    d.stop()
    d.start()
    send_reply(d, reply("=?utf-7?q?+2D3-?=", "approve \u00b2"))
    send_reply(d, reply("Re: held", f"approve {command_line(d, short2)}"))
    wait_until(lambda: len(sink.copies_for(mid2)) == len(MEMBERS), 10, "the valid reply after a restart")


def test_poison_replies_over_imap_are_moved_aside_and_the_next_one_is_applied(sink, make_daemon, tmp_path):
    from servers import Dovecot
    from test_imap import deliver_reply, folder_messages, imap_daemon

    dovecot = Dovecot(free_port(), "moderation", "s3cret")
    dovecot.start()
    try:
        d = imap_daemon(make_daemon, sink, dovecot)
        mid, short = held_post(d, 3)
        for subject, text in POISON:
            deliver_reply(dovecot, reply(subject, text))
        deliver_reply(dovecot, reply("Re: held", f"approve {command_line(d, short)}"))
        wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), 15, "the valid reply applied over IMAP")
        # each poison reply is handled (refused in its receipt, or set aside in Failed), none left behind
        wait_until(lambda: folder_messages(dovecot, "INBOX") == [], 15, "every reply taken from INBOX")
        handled = len(folder_messages(dovecot, "Processed")) + len(folder_messages(dovecot, "Failed"))
        assert handled == len(POISON) + 1
        assert [r["action"] for r in d.cli_json("audit", "--only", "posts")].count("refused") >= 2
        mid2, short2 = held_post(d, 4)
        d.stop()
        deliver_reply(dovecot, reply("Re: held", "approve \u00b2"))
        deliver_reply(dovecot, reply("Re: held", f"approve {command_line(d, short2)}"))
        d.start()
        wait_until(lambda: len(sink.copies_for(mid2)) == len(MEMBERS), 15, "the valid reply after a restart")
    finally:
        dovecot.cleanup()


@pytest.mark.parametrize("subject,text", POISON)
def test_each_poison_reply_is_answered_not_crashed_on(sink, make_daemon, subject, text):
    d = make_daemon(sink, moderators=MODS)
    held_post(d, 5)
    code, _ = d.answer("mod@example.org", MODERATION, reply(subject, text), ("SMTPUTF8",))
    assert code == 250
    wait_until(lambda: d.db().execute("SELECT COUNT(*) FROM inbox WHERE state != 'pending'").fetchone()[0] == 1,
               10, "the reply handled")
    state, error = d.db().execute("SELECT state, error FROM inbox").fetchone()
    assert state == "applied", error  # the bad command is refused in the receipt, not a crash
