"""Trust that is earned and sanctions that expire, as a community manager would use them: members
promoted by their approved posts (and told), demoted by a conduct rejection, never for being quiet;
the ladder note → warning → moderated → banned, each step with its reason, notice and end, and the
return to the step before when it ends; the moderators' `warn` and `ban ID for 30d` commands."""

from __future__ import annotations

import time

from conftest import LIST, MEMBERS, post_bytes, wait_until
from test_moderation import MODERATION, command_for, digests, hold, reply
from test_moderation import text_of as moderation_text

ALICE, BOB = MEMBERS[0], MEMBERS[1]
RULES = """
[[rule]]
id = "insults"
category = "conduct"
match.body.words = ["idiot"]
action = "reject"
reason = "Insults are against the code of conduct."

[[rule]]
id = "links-reviewed"
match.body.contains = "http://"
action = "hold"
reason = "Posts with links are read by a moderator first."
"""


def people_daemon(make_daemon, sink, extra=""):
    d = make_daemon(sink, start=False, moderators=("mod@example.org",), files={"guidelines.txt": "Be kind.\n"},
                    list_extra='promote_basic_after = 1\npromote_trusted_after = 2\npromote_trusted_days = "0s"\n'
                               f'guidelines = "guidelines.txt"\n{extra}')
    for old in (d.dir / "rules").glob("*.toml"):
        old.unlink()
    (d.dir / "rules" / "10-people.toml").write_text(RULES)
    d.start()
    return d


def member(d, address):
    return d.cli_json("member", "show", LIST, address)[0]


def mail_to(sink, address, subject_part):
    return [r for r in sink.handler.received if address in r.rcpt_tos and subject_part in (r.message["Subject"] or "")]


def text(r) -> str:
    return r.message.get_payload(decode=True).decode()


def test_members_are_promoted_by_approved_posts_and_told(sink, make_daemon):
    d = people_daemon(make_daemon, sink)
    assert member(d, ALICE)["level"] == "new"
    d.send(ALICE, LIST, post_bytes(message_id="<p1@test>"))
    wait_until(lambda: member(d, ALICE)["level"] == "basic", 10, "basic")
    d.send(ALICE, LIST, post_bytes(message_id="<p2@test>"))
    wait_until(lambda: member(d, ALICE)["level"] == "trusted", 10, "trusted")
    told = wait_until(lambda: mail_to(sink, ALICE, "Your standing on"), 15, "the promotion notices")
    assert "trusted member" in text(told[-1])
    # a trusted member's post with a link skips the review a new member's would get
    d.send(ALICE, LIST, post_bytes(message_id="<p3@test>", body="see http://example.org/"))
    d.send(BOB, LIST, post_bytes(sender=BOB, message_id="<b1@test>", body="see http://example.org/"))
    wait_until(lambda: len(sink.copies_for("<p3@test>")) == len(MEMBERS), 15, "the trusted post delivered")
    assert [p["sender"] for p in d.cli_json("queue")] == [BOB]
    actions = [r["action"] for r in d.cli_json("audit", "--only", "people") if r["sender"] == ALICE]
    assert actions == ["member-added", "promoted", "promoted"]


def test_a_conduct_rejection_demotes_and_clears_trust_given_by_hand(sink, make_daemon):
    d = people_daemon(make_daemon, sink)
    d.cli("trust", LIST, BOB, "--level", "leader", "--reason", "runs the newcomers' FAQ")
    assert member(d, BOB)["level"] == "leader"
    with d.smtp() as s:
        s.ehlo()
        s.mail(BOB)
        s.rcpt(LIST)
        code, said = s.data(post_bytes(sender=BOB, body="You idiot."))
    assert code == 550 and b"code of conduct" in said
    shown = member(d, BOB)
    assert shown["level"] == "new" and shown["trust_by_hand"] is None
    assert [h["action"] for h in shown["history"]][-4:] == ["made-leader", "promoted", "reject", "demoted"]


def test_the_sanction_ladder_with_notices_and_an_end(sink, make_daemon):
    d = people_daemon(make_daemon, sink)
    d.cli("sanction", LIST, BOB, "note", "--reason", "sharp tone in the build thread")
    assert mail_to(sink, BOB, "on dev@example.org") == []      # a note is for the moderators only
    d.cli("sanction", LIST, BOB, "warning", "--reason", "personal remarks about another member")
    warning = wait_until(lambda: mail_to(sink, BOB, "Warning on"), 15, "the warning")[0]
    assert "step 2 of 4 (note, warning, moderated, banned)" in text(warning)
    assert "personal remarks" in text(warning) and "Be kind." in text(warning)   # the guidelines

    d.cli("sanction", LIST, BOB, "moderated", "--for", "3s", "--reason", "kept on after the warning")
    moderated = wait_until(lambda: mail_to(sink, BOB, "Moderated on"), 15, "the notice")[0]
    assert "then a warning again" in text(moderated) and "warned: personal remarks" in text(moderated)
    d.send(BOB, LIST, post_bytes(sender=BOB, message_id="<m1@test>"))
    wait_until(lambda: [p["rule"] for p in d.cli_json("queue")] == ["moderated"], 10, "held as moderated")

    ended = wait_until(lambda: mail_to(sink, BOB, "Ended on"), 20, "the end of the moderation")[0]
    assert "back to a warning" in text(ended)
    assert member(d, BOB)["sanction"] == "warning"
    d.send(BOB, LIST, post_bytes(sender=BOB, message_id="<m2@test>"))
    wait_until(lambda: len(sink.copies_for("<m2@test>")) == len(MEMBERS), 15, "a post after the end")

    d.cli("sanction", LIST, BOB, "banned", "--reason", "harassment")
    with d.smtp() as s:
        s.ehlo()
        s.mail(BOB)
        s.rcpt(LIST)
        code, _ = s.data(post_bytes(sender=BOB))
    assert code == 550
    d.cli("sanction", LIST, BOB, "lift", "--reason", "apologised; the members agreed")
    shown = member(d, BOB)
    assert shown["sanction"] is None
    ladder = ("noted", "warned", "moderated", "sanction-ended", "banned", "sanction-lifted", "hold", "accept",
              "reject")
    assert [h["action"] for h in shown["history"] if h["action"] in ladder] == [
        "noted", "warned", "moderated", "hold", "sanction-ended", "accept", "banned", "reject", "sanction-lifted"]


def test_moderators_warn_and_ban_for_a_time_by_mail(sink, make_daemon):
    d = people_daemon(make_daemon, sink, extra='digest_every = "1s"\n')
    hold(d, subject="first", sender="troll@example.net")
    [digest] = wait_until(lambda: digests(d), 15, "a digest")
    line = command_for(digest, "approve").replace("approve", "ban") + " for 2s spam, again"
    d.send("mod@example.org", MODERATION, reply("mod@example.org", line, digest))
    wait_until(lambda: member(d, "troll@example.net")["sanction"] == "banned", 15, "banned")
    shown = member(d, "troll@example.net")
    assert shown["sanction_until"] is not None
    wait_until(lambda: member(d, "troll@example.net")["sanction"] is None, 15, "the ban's end")


def test_leaders_get_the_digest_and_decide_posts_by_new_members_only(sink, make_daemon):
    lee = "lee@example.org"
    d = make_daemon(sink, start=False, members=[*MEMBERS, lee], moderators=("mod@example.org",),
                    list_extra='leaders_moderate = true\ndigest_every = "1s"\nescalation_contact = "legal@example.org"\n')
    (d.dir / "rules" / "05-legal.toml").write_text(
        '[[rule]]\nid = "legal"\nmatch.body.words = ["defamatory"]\naction = "escalate"\n'
        'reason = "Possibly defamatory."\n')
    d.start()
    d.cli("trust", LIST, lee, "--level", "leader", "--reason", "volunteer moderator in training")
    hold(d, subject="a newcomer's question", sender="newbie@example.net")
    digest = wait_until(lambda: [r for r in sink.handler.received if lee in r.rcpt_tos
                                 and "await moderation" in (r.message["Subject"] or "")], 15, "lee's digest")[0]
    from email import message_from_bytes
    from email.policy import default
    parsed = message_from_bytes(digest.content, policy=default)
    line = command_for(parsed, "approve")
    d.send(lee, MODERATION, reply(lee, line, parsed))
    [record] = wait_until(lambda: [r for r in d.cli_json("audit", "--only", "posts") if r["action"] == "accept"],
                          15, "the leader's approval")
    assert record["actor"] == f"leader:{lee}"

    d.send("newbie@example.net", LIST, post_bytes(sender="newbie@example.net", body="That is defamatory."))
    escalated = wait_until(lambda: [p for p in d.cli_json("queue") if p["rule"] == "legal"], 15, "escalated")[0]
    later = wait_until(lambda: [r for r in sink.handler.received if lee in r.rcpt_tos
                                and "await moderation" in (r.message["Subject"] or "")
                                and escalated["id"].split("-")[0] in r.content.decode(errors="replace")],
                       15, "the next digest")[-1]
    parsed = message_from_bytes(later.content, policy=default)
    d.send(lee, MODERATION, reply(lee, command_for(parsed, "approve"), parsed))
    receipt = wait_until(lambda: [r for r in sink.handler.received if lee in r.rcpt_tos
                                  and "decide posts by new" in " ".join(moderation_text(r.message).split())],
                         15, "the refusal in lee's receipt")
    assert receipt and [p["rule"] for p in d.cli_json("queue")] == ["legal"]


def test_moderators_note_moderate_and_lift_a_person_by_mail_with_a_posts_token(sink, make_daemon):
    d = people_daemon(make_daemon, sink, extra='digest_every = "1s"\n')
    hold(d, subject="hello", sender="pat@example.net")
    [digest] = wait_until(lambda: digests(d), 15, "a digest")
    post = command_for(digest, "approve").split()[1]
    message_id = "<person-commands@client.example>"
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"note {post} asks a lot, but kindly\n"
                                                f"moderate {post} for 1h off-topic links, three times", digest,
                                                message_id=message_id))
    wait_until(lambda: member(d, "pat@example.net")["sanction"] == "moderated", 15, "moderated")
    shown = member(d, "pat@example.net")
    assert [h["action"] for h in shown["history"] if h["action"] in ("noted", "moderated")] == ["noted", "moderated"]
    assert shown["sanction_until"] is not None
    # the same reply again (a replay) changes nothing
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"lift {post} replayed", digest,
                                                message_id=message_id))
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"lift all {post.split('-')[1]} x", digest))
    time.sleep(1.5)
    assert member(d, "pat@example.net")["sanction"] == "moderated"
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"lift {post} they explained", digest))
    wait_until(lambda: member(d, "pat@example.net")["sanction"] is None, 15, "lifted")
