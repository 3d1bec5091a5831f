"""Privacy, as a person asking for their data would see it: `listmod privacy export` gives everything
stored about them; `listmod privacy forget` leaves no byte of their address under state_dir (the
SQLite file, its WAL, the journal, the Maildirs) while `audit verify` still passes; a post under a
legal hold is kept until the owner releases it; retain_messages blanks decided posts' raw messages."""

from __future__ import annotations

import json
import re
import time

from conftest import LIST, MEMBERS, post_bytes, wait_until

ZOE = "zoe@example.net"
REQUEST = "dev-request@example.org"


def files_mentioning(d, needle: str) -> list[str]:
    pattern = re.compile(re.escape(needle.encode()), re.I)
    state = d.dir / "var"
    return [str(p.relative_to(state)) for p in state.rglob("*") if p.is_file() and pattern.search(p.read_bytes())]


def held_ids(d) -> list[str]:
    return [p["id"] for p in d.cli_json("queue")]


def test_forget_leaves_no_byte_of_the_address_under_state_dir_and_the_chain_verifies(make_daemon):
    # no smarthost: copies and digests are written to Maildirs under state_dir, which must be scrubbed too
    d = make_daemon(None, members=[*MEMBERS, ZOE], list_extra='default_member_action = "hold"\ndigest_every = "1s"\n')
    d.send(ZOE, LIST, post_bytes(sender=f"Zoe <{ZOE}>", subject="my post", message_id="<z1@test>"))
    d.send(MEMBERS[1], LIST, post_bytes(sender=MEMBERS[1], subject="re: zoe", message_id="<b1@test>",
                                        extra=f"Cc: {ZOE}\r\n", body=f"Zoe ({ZOE.upper()}) is right."))
    d.send(ZOE, REQUEST, f"From: {ZOE}\r\nSubject: help\r\n\r\n".encode())      # an answer mailed to her
    d.cli("trust", LIST, ZOE, "--reason", "a long-standing contributor")
    wait_until(lambda: len(held_ids(d)) == 2, 15, "both posts held")
    wait_until(lambda: list((d.dir / "var").rglob("digest-*")), 20, "a digest in the Maildir")
    for post in held_ids(d):
        d.cli("approve", post)
    wait_until(lambda: d.outbox_idle(), 20, "every copy written")
    assert files_mentioning(d, ZOE), "the test must start with the address stored"

    exported = json.loads(d.cli("privacy", "export", ZOE).stdout)
    assert [p["subject"] for p in exported["posts"]] == ["my post"]
    assert exported["memberships"][0]["list"] == LIST and exported["standing"][0]["standing"] == "trusted"
    assert exported["mentioned_in_other_posts"] == 1

    d.stop()
    said = d.cli("privacy", "forget", ZOE, "--reason", "erasure requested").stdout
    assert "forgot zoe@example.net" in said and "KEPT" not in said
    assert files_mentioning(d, ZOE) == []
    assert d.cli("audit", "verify").returncode == 0
    assert ZOE not in d.cli("audit").stdout
    # the others' posts are still there, with her address replaced
    d.start()
    assert "[forgotten]" in d.db().execute("SELECT CAST(raw AS TEXT) FROM messages WHERE CAST(raw AS TEXT) LIKE '%Zoe (%'"
                                           ).fetchone()[0]
    assert ZOE not in d.cli("members", "list", LIST).stdout


def test_a_post_under_legal_hold_is_kept_until_the_owner_releases_it(make_daemon, sink):
    d = make_daemon(sink, start=False, members=[*MEMBERS, ZOE], list_extra='escalation_contact = "legal@example.org"\n')
    (d.dir / "rules" / "05-legal.toml").write_text(
        '[[rule]]\nid = "legal"\nmatch.body.words = ["defamatory"]\naction = "escalate"\n'
        'reason = "Possibly defamatory: the escalation contact decides."\n')
    d.start()
    d.send(ZOE, LIST, post_bytes(sender=ZOE, body="This is defamatory.", message_id="<legal@test>"))
    [post] = wait_until(lambda: held_ids(d), 15, "the escalated post")
    said = d.cli("privacy", "forget", ZOE, "--reason", "erasure requested").stdout
    assert "KEPT under a legal hold" in said and post in said
    assert d.db().execute("SELECT length(raw) FROM messages").fetchone()[0] > 0   # the evidence stays

    assert "released from its legal hold" in d.cli("privacy", "release", post, "--reason", "counsel agreed").stdout
    said = d.cli("privacy", "forget", ZOE, "--reason", "erasure requested").stdout
    assert "KEPT" not in said
    assert d.db().execute("SELECT length(raw) FROM messages").fetchone()[0] == 0
    assert d.cli("audit", "verify").returncode == 0


def test_retain_messages_blanks_decided_posts_and_keeps_held_ones(make_daemon, sink):
    d = make_daemon(sink, list_extra='retain_messages = "1s"\n')
    d.send(MEMBERS[0], LIST, post_bytes(message_id="<old@test>"))
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id="<held@test>"))
    wait_until(lambda: len(sink.copies_for("<old@test>")) == len(MEMBERS), 15, "delivery")

    def raw_sizes():
        return dict(d.db().execute("SELECT p.message_id, length(m.raw) FROM posts p JOIN messages m "
                                   "ON m.id = p.message").fetchall())
    wait_until(lambda: raw_sizes()["<old@test>"] == 0, 15, "the delivered post's raw message blanked",
               state=raw_sizes)
    time.sleep(1.5)
    assert raw_sizes()["<held@test>"] > 0          # a held post is never purged
    assert d.cli("audit", "verify").returncode == 0


def test_forget_while_serving_leaves_nothing_once_the_daemon_has_stopped(make_daemon):
    d = make_daemon(None, members=[*MEMBERS, ZOE])
    for n in range(3):
        d.send(ZOE, LIST, post_bytes(sender=ZOE, subject=f"post {n}", message_id=f"<z{n}@test>"))
    wait_until(lambda: d.outbox_idle(), 20, "every copy written")
    said = d.cli("privacy", "forget", ZOE, "--reason", "erasure requested").stdout   # the daemon still serving
    assert "forgot zoe@example.net" in said
    d.send(MEMBERS[0], LIST, post_bytes(message_id="<after@test>"))                # and still working
    wait_until(lambda: d.outbox_idle(), 20, "the next post delivered")
    d.stop()
    assert files_mentioning(d, ZOE) == []
    assert d.cli("audit", "verify").returncode == 0
