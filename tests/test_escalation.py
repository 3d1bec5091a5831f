"""An escalated post is a legal hold: it never expires into delivery or discard, `approve all`
passes it by, the queue flags it, and only a decision that names it decides it."""

import time

from conftest import LIST, MEMBERS, post_bytes, wait_until
from test_moderation import MODERATION, all_command, command_for, digests, reply

THREAT = "I know where you live and you will regret this."


def test_an_escalated_post_never_expires_into_delivery(sink, make_daemon):
    d = make_daemon(sink, list_extra='expire_after = "2s"\nexpire_action = "accept"\n'
                                     'escalation_contact = "legal@example.org"\n')
    d.send("alice@example.org", LIST, post_bytes(body=THREAT, message_id="<threat@t>"))
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id="<plain@t>"))
    # the plain held post expires into delivery (expire_action = accept) ...
    wait_until(lambda: len(sink.copies_for("<plain@t>")) == len(MEMBERS), 15, "the plain post expired")
    time.sleep(1)  # several expiry rounds (one a second) after the threat's expire_after passed
    wait_until(d.outbox_idle, 15, "the outbox idle")
    # ... the escalated one stays held, flagged, and no member has it
    queue = d.cli_json("queue")
    assert [(q["message_id"], q["escalated"]) for q in queue] == [("<threat@t>", True)]
    assert "ESCALATED" in d.cli("queue").stdout
    assert sink.copies_for("<threat@t>") == []


def test_approve_all_passes_an_escalated_post_by_and_a_named_approve_decides_it(sink, make_daemon):
    d = make_daemon(sink, moderators=("mod@example.org",), list_extra='escalation_contact = "legal@example.org"\n')
    d.send("alice@example.org", LIST, post_bytes(body=THREAT, message_id="<threat2@t>"))
    digest = wait_until(lambda: digests(d), 15, "the digest")[-1]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", all_command(digest), digest))
    receipt = wait_until(lambda: [r for rcpt, r in sink.copies() if rcpt == "mod@example.org"
                                  and b"legal hold" in r.content.replace(b"=\r\n", b"")], 15, "the receipt")
    assert receipt and [q["message_id"] for q in d.cli_json("queue")] == ["<threat2@t>"]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve"), digest))
    wait_until(lambda: len(sink.copies_for("<threat2@t>")) == len(MEMBERS), 15, "delivery once named")
