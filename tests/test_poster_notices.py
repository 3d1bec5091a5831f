"""Posters hear what happened to their post: a held notice by default for members and for senders
that trusted authentication vouches for (never backscatter to a forged sender), addressed to them,
and the outcome when a moderator decides; notify_held = "all" or "none" to change it."""

from __future__ import annotations

from conftest import LIST, MEMBERS, post_bytes, wait_until

AUTHSERV = "mx.example.org"


def notices_to(sink, address):
    return [r for r in sink.handler.received if address in r.rcpt_tos and r.message["Auto-Submitted"]]


def held(d):
    return wait_until(lambda: d.cli_json("queue"), 15, "a held post")


def test_a_members_held_post_is_announced_to_them_and_so_is_its_approval(sink, make_daemon):
    d = make_daemon(sink, list_extra='default_member_action = "hold"\n')
    alice = MEMBERS[0]
    d.send(alice, LIST, post_bytes(subject="my question", message_id="<q1@test>"))
    [post] = held(d)
    notice = wait_until(lambda: notices_to(sink, alice), 15, "the held notice")[0]
    text = notice.message.get_payload(decode=True).decode()
    assert notice.message["To"] == alice
    assert f"Your post to {LIST} is waiting for a moderator (it is held as {post['id']}) because:" in text
    assert "withdraw" in text
    d.cli("approve", post["id"])
    approved = wait_until(lambda: [n for n in notices_to(sink, alice) if "approved" in n.message["Subject"]],
                          15, "the approval notice")[0]
    assert approved.message["In-Reply-To"] == "<q1@test>"


def test_a_stranger_hears_nothing_unless_authentication_vouches_for_them(sink, make_daemon):
    d = make_daemon(sink, server_extra=f'authserv_id = "{AUTHSERV}"\n')
    forged = "victim@example.net"
    d.send(forged, LIST, post_bytes(sender=forged, message_id="<f1@test>"))   # held: not a member
    signed = "sam@signed.example"
    d.send(signed, LIST, post_bytes(sender=signed, message_id="<s1@test>", extra=(
        f"Authentication-Results: {AUTHSERV}; dkim=pass header.d=signed.example header.s=s1\r\n")))
    spoofed = "pat@spoofed.example"   # a result under another authserv-id is the sender's own claim
    d.send(spoofed, LIST, post_bytes(sender=spoofed, message_id="<p1@test>", extra=(
        "Authentication-Results: mx.attacker.example; dkim=pass header.d=spoofed.example\r\n")))
    wait_until(lambda: len(d.cli_json("queue")) == 3, 15, "three held posts")
    notice = wait_until(lambda: notices_to(sink, signed), 15, "the notice to the signed sender")[0]
    assert "You are not a member of" in notice.message.get_payload(decode=True).decode()   # said to them
    d.cli("digest", "send")   # gives the outbox a moment; nothing else is due to the others
    wait_until(lambda: d.outbox_idle(), 15, "the outbox idle")
    assert notices_to(sink, forged) == [] and notices_to(sink, spoofed) == []


def test_notify_held_all_and_none(sink, make_daemon):
    d = make_daemon(sink, list_extra='notify_held = "none"\ndefault_member_action = "hold"\n')
    d.send(MEMBERS[0], LIST, post_bytes(message_id="<n1@test>"))
    held(d)
    wait_until(lambda: d.outbox_idle(), 15, "the outbox idle")
    assert notices_to(sink, MEMBERS[0]) == []
    d2 = make_daemon(sink, list_extra='notify_held = "all"\n')
    d2.send("anyone@example.net", LIST, post_bytes(sender="anyone@example.net", message_id="<a1@test>"))
    wait_until(lambda: notices_to(sink, "anyone@example.net"), 15, "the notice to anyone")
