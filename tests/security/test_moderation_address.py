"""Finding 8: the moderation address is no reflector. A stranger's reply with thousands of commands
and a forged From is one audit record, no receipt to anyone, at most one short answer an hour that
names no moderator; held notices to one address are rate-limited."""

import time

from conftest import LIST, post_bytes, wait_until

MODS = ("mod@example.org", "mod2@example.org")
MODERATION = "dev-moderation@example.org"


def flood(frm: str, lines: int) -> bytes:
    body = "".join(f"approve ABCD http://spam.example/{n}\r\n" for n in range(lines))
    return (f"From: {frm}\r\nTo: {MODERATION}\r\nSubject: Re: held posts\r\n"
            f"Message-ID: <flood-{time.time_ns()}@spam.example>\r\n\r\n{body}").encode()


def test_a_strangers_flood_is_one_record_and_no_receipt(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, max_message_size="5MB")
    before = len(d.cli_json("audit", "--only", "posts"))
    started = time.monotonic()
    d.send("victim@example.net", MODERATION, flood("victim@example.net", 50_000))
    d.send("victim@example.net", MODERATION, flood("victim@example.net", 10))
    assert time.monotonic() - started < 5
    wait_until(lambda: d.db().execute("SELECT COUNT(*) FROM inbox WHERE state = 'pending'").fetchone()[0] == 0,
               20, "both replies handled")
    wait_until(d.outbox_idle, 15, "every answer sent")
    records = d.cli_json("audit", "--only", "posts")[before:]
    assert len(records) == 2 and all(r["action"] == "refused" for r in records)
    assert all("moderator" not in r["actor"] for r in records)
    copies = sink.copies()
    assert not [c for c in copies if c[0] in MODS], "a stranger's reply made receipts to moderators"
    answers = [r for rcpt, r in copies if rcpt == "victim@example.net"]
    assert len(answers) == 1 and len(answers[0].content) < 4000
    text = answers[0].message.get_payload(decode=True).decode() + answers[0].message["To"]
    assert "spam.example" not in text and not any(m in text for m in MODS)


def test_a_moderators_reply_reads_at_most_the_configured_number_of_commands(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, server_extra="max_commands_per_reply = 5\n")
    d.send("mod@example.org", MODERATION, flood("mod@example.org", 40))
    receipts = wait_until(lambda: [r for rcpt, r in sink.copies() if rcpt == "mod@example.org"], 20, "a receipt")
    text = receipts[0].message.get_payload(decode=True).decode()
    assert text.count("NOT applied") == 6 and "35 more command line(s)" in text
    # each moderator gets a receipt of their own, naming only them in To:
    other = wait_until(lambda: [r for rcpt, r in sink.copies() if rcpt == "mod2@example.org"], 20, "mod2's receipt")
    assert other[0].message["To"] == "mod2@example.org"


def test_held_notices_to_one_address_are_rate_limited(sink, make_daemon):
    d = make_daemon(sink, list_extra="notify_held = true\n")  # held_notices_per_hour = 3 by default
    for n in range(12):
        d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject=f"q{n}"))
    wait_until(lambda: len(d.cli_json("queue")) == 12, 10, "twelve held posts")
    wait_until(d.outbox_idle, 15, "every notice sent")
    notices = [r for rcpt, r in sink.copies() if rcpt == "stranger@example.net"]
    assert len(notices) == 3


def test_an_automatic_reply_to_the_moderation_address_is_never_answered(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS)
    before = len(d.cli_json("audit", "--only", "posts"))
    raw = flood("vacation@example.net", 3).replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:")
    d.send("vacation@example.net", MODERATION, raw)
    wait_until(lambda: d.db().execute("SELECT state FROM inbox").fetchone()[0] == "applied", 10, "handled")
    wait_until(d.outbox_idle, 15, "the outbox idle")
    assert not [r for rcpt, r in sink.copies() if rcpt == "vacation@example.net"]
    assert len(d.cli_json("audit", "--only", "posts")) == before
