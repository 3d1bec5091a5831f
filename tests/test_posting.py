"""Posts through the real daemon to a real sink: accepted, held, approved, rejected."""

import getpass
import re

from conftest import LIST, MEMBERS, post_bytes, wait_until


def test_member_post_reaches_every_member_with_list_headers(sink, make_daemon):
    d = make_daemon(sink)
    d.send("alice@example.org", LIST, post_bytes(message_id="<m1@test>", body="Hello everyone."))

    copies = wait_until(lambda: len(sink.copies_for("<m1@test>")) == len(MEMBERS) and
                        sink.copies_for("<m1@test>"), what="a copy for every member")
    assert sorted(rcpt for rcpt, _ in copies) == sorted(MEMBERS)
    for _, received in copies:
        msg = received.message
        assert received.mail_from == "dev-bounces@example.org"
        assert msg["List-Id"] == "<dev.example.org>"
        assert msg["List-Post"] == "<mailto:dev@example.org>"
        assert msg["List-Unsubscribe"] == "<mailto:dev-request@example.org?subject=unsubscribe>"
        assert msg["List-Subscribe"] == "<mailto:dev-request@example.org?subject=subscribe>"
        assert msg["List-Help"] == "<mailto:dev-request@example.org?subject=help>"
        assert msg["List-Owner"] == "<mailto:dev-owner@example.org>"
        assert msg["Precedence"] == "list"
        assert msg.get_payload().strip() == "Hello everyone."

    records = d.cli_json("audit", "--only", "posts")
    assert [(r["action"], r["actor"], r["message_id"]) for r in records] == [
        ("accept", "default", "<m1@test>")]
    assert records[0]["reason"] == "The sender is a member of dev@example.org and no rule objected."
    assert records[0]["sender"] == "alice@example.org"


def test_nonmember_post_is_held_with_reason_and_shown_in_queue(sink, make_daemon):
    d = make_daemon(sink)
    with d.smtp() as s:
        s.ehlo()
        s.mail("stranger@example.net")
        s.rcpt(LIST)
        code, reply = s.data(post_bytes(sender="stranger@example.net", subject="Question",
                                        message_id="<q1@test>"))
    assert code == 250
    assert b"Held for moderation" in reply

    queue = d.cli_json("queue")
    assert len(queue) == 1
    item = queue[0]
    assert item["list"] == LIST and item["sender"] == "stranger@example.net"
    assert item["subject"] == "Question" and item["rule"] == "default-nonmember"
    assert item["reason"] == "The sender is not a member of dev@example.org; a moderator will review the post."
    assert item["held_at"] > 0 and re.fullmatch(r"[2-9A-Z]{4}", item["id"])
    assert item["id"].encode() in reply
    # nothing reaches the members; the moderators may already have their digest (it goes out as soon
    # as the post is held, so whether it has arrived yet is a race the test must not depend on)
    wait_until(d.outbox_idle, what="the outbox idle")
    assert all(rcpt == "mod@example.org" and "await moderation" in received.message["Subject"]
               for rcpt, received in sink.copies()), sink.copies()


def test_approving_a_held_post_delivers_it_and_audits_the_admin(sink, make_daemon):
    d = make_daemon(sink)
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id="<q2@test>"))
    held = d.cli_json("queue")[0]

    out = d.cli("approve", held["id"].lower()).stdout
    assert "accepted" in out
    wait_until(lambda: len(sink.copies_for("<q2@test>")) == len(MEMBERS), what="delivery after approval")
    assert d.cli_json("queue") == []
    last = d.cli_json("audit", "--only", "posts")[-1]
    assert (last["action"], last["actor"], last["message_id"]) == ("accept", f"admin:{getpass.getuser()}", "<q2@test>")
    d.cli("audit", "verify")


def test_rejecting_a_held_post_sends_the_poster_the_reason(sink, make_daemon):
    d = make_daemon(sink, list_extra='notify_held = "all"\n')   # a stranger is told only when the list says so
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject="Buy now",
                                                   message_id="<q3@test>"))
    held = d.cli_json("queue")[0]

    d.cli("reject", held["id"], "--reason", "Off topic: this list is about listmod development.")
    notice = wait_until(lambda: [r for rcpt, r in sink.copies() if rcpt == "stranger@example.net"
                                 and "not accepted" in r.message["Subject"]], what="the rejection notice")[0]
    msg = notice.message
    assert notice.mail_from == "dev-bounces@example.org"  # bounces of the notice come back to us
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<q3@test>"
    assert "Buy now" in msg["Subject"]
    assert "Off topic: this list is about listmod development." in msg.get_payload(decode=True).decode()
    assert sink.copies_for("<q3@test>") == []  # nothing reached the members
    last = d.cli_json("audit", "--only", "posts")[-1]
    assert (last["action"], last["actor"]) == ("reject", f"admin:{getpass.getuser()}")
    assert last["reason"] == "Off topic: this list is about listmod development."


def test_a_decided_post_cannot_be_decided_again(sink, make_daemon):
    d = make_daemon(sink)
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net"))
    held = d.cli_json("queue")[0]
    d.cli("discard", held["id"], "--reason", "spam")

    again = d.cli("approve", held["id"], check=False)
    assert again.returncode == 1
    assert "already discarded by admin" in again.stderr
    assert [r["action"] for r in d.cli_json("audit", "--only", "posts")] == ["hold", "discard"]


def test_relay_list_forwards_each_post_to_one_address(sink, make_daemon):
    d = make_daemon(sink, members=[], list_extra='deliver = "relay:upstream@example.com"\n'
                                                 'default_nonmember_action = "accept"\n')
    d.send("anyone@example.net", LIST, post_bytes(sender="anyone@example.net", message_id="<r1@test>"))
    copies = wait_until(lambda: sink.copies_for("<r1@test>"), what="the relayed copy")
    assert [rcpt for rcpt, _ in copies] == ["upstream@example.com"]


def test_without_outbound_each_copy_is_a_file_in_the_local_maildir(make_daemon):
    d = make_daemon(None)
    d.send("alice@example.org", LIST, post_bytes(message_id="<md1@test>"))
    new = d.dir / "var" / "outbound-maildir" / "new"
    files = wait_until(lambda: len(list(new.glob("*"))) == len(MEMBERS) and list(new.glob("*")),
                       what="one Maildir file per member")
    recipients = sorted(f.read_text().split("\n", 1)[0] for f in files)
    assert recipients == sorted(f"Delivered-To: {m}" for m in MEMBERS)
    assert all("List-Id: <dev.example.org>" in f.read_text() for f in files)


def test_smarthost_4xx_is_retried_and_5xx_is_recorded_as_failed(sink, make_daemon):
    sink.handler.answers["bob@example.org"] = ["451 4.2.0 try later", "451 4.2.0 try later"]
    sink.handler.answers["carol@example.net"] = "550 5.1.1 no such user"
    d = make_daemon(sink)
    d.send("alice@example.org", LIST, post_bytes(message_id="<rt@test>"))

    wait_until(lambda: {r for r, _ in sink.copies_for("<rt@test>")} == {"alice@example.org", "bob@example.org"},
               what="bob's copy after two temporary failures")

    def states():
        return dict(d.db().execute("SELECT recipient, state || ' ' || attempts || ' ' || COALESCE(last_error, '') "
                                   "FROM outbox").fetchall())
    final = wait_until(lambda: (s := states()) and all(not v.startswith(("pending", "sending")) for v in s.values()) and s,
                       what="every copy settled")
    assert final["alice@example.org"].startswith("sent 1")
    assert final["bob@example.org"].startswith("sent 3")
    assert final["carol@example.net"] == "failed 1 550 5.1.1 no such user"


def test_a_utf8_address_fails_clearly_when_the_smarthost_lacks_smtputf8(make_daemon):
    from aiosmtpd.controller import Controller
    from conftest import Sink, SinkHandler, free_port
    handler, port = SinkHandler(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    controller.start()
    try:
        d = make_daemon(Sink(handler, port, controller), members=["alice@example.org", "zoë@exämple.org"])
        d.send("alice@example.org", LIST, post_bytes(message_id="<u8@test>"))
        wait_until(lambda: [r for r, _ in handler.copies()] == ["alice@example.org"], what="alice's copy")
        row = wait_until(lambda: d.db().execute(
            "SELECT state, last_error FROM outbox WHERE recipient = 'zoë@exämple.org' AND state = 'failed'"
        ).fetchone(), what="the failure to be recorded")
        assert "does not offer SMTPUTF8" in row[1]
    finally:
        controller.stop()


def test_a_forged_strangers_rejected_post_mails_nobody(sink, make_daemon):
    d = make_daemon(sink)   # notify_held = "verified": members and authenticated senders only
    d.send("victim@example.net", LIST, post_bytes(sender="victim@example.net", message_id="<forged@test>"))
    d.cli("reject", d.cli_json("queue")[0]["id"], "--reason", "spam")
    wait_until(d.outbox_idle, 15, "the outbox idle")
    assert [r for rcpt, r in sink.copies() if rcpt == "victim@example.net"] == []
