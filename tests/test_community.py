"""The community manager's work through the daemon: a heated thread cools down and tells its
participants once, escalation with evidence that the contact decides by reply, appeals decided by
another moderator, and a moderator's day (one-line summaries that fit 80x24, the digest cap, canned
reasons, claims, notes on members), and scheduled posts."""

import hashlib
import time
from email import message_from_bytes
from email.policy import default

import pyte
from conftest import LIST, MEMBERS, post_bytes, wait_until
from test_moderation import MODERATION, command_for, digests, hold, reply, summary
from test_moderation import text_of as raw_text_of

from listmod.evidence import original_of

MODS = ("mod@example.org", "mod2@example.org")
CONTACT = "legal@example.net"


def text_of(message) -> str:
    return raw_text_of(message).replace("\r\n", "\n")


def reply_to(sender: str, subject: str, root: str, mid: str, body: str = "I disagree.") -> bytes:
    return (f"From: {sender}\r\nTo: {LIST}\r\nSubject: Re: {subject}\r\nMessage-ID: {mid}\r\n"
            f"In-Reply-To: {root}\r\nReferences: {root}\r\n\r\n{body}\r\n").encode()


def pauses(sink, who: str) -> list:
    return [m for r, m in sink.copies() if r == who and "A pause in the thread" in str(m.message["Subject"])]


def audit_actions(d, *actions: str) -> list[dict]:
    return [r for r in d.cli_json("audit") if r["action"] in actions]


def test_a_heated_thread_cools_down_tells_its_participants_once_and_warms_up(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='cool_posts_per_hour = 4\ncooldown = "4s"\n'
                                                       'digest_every = "1s"\n')
    d.send("alice@example.org", LIST, post_bytes(subject="Tabs or spaces", message_id="<root@t>"))
    for n, who in enumerate(["bob@example.org", "alice@example.org", "bob@example.org"], start=1):
        d.send(who, LIST, reply_to(who, "Tabs or spaces", "<root@t>", f"<r{n}@t>"))
    # the fourth post in an hour made it hot: every post so far went out, the next one is held
    wait_until(lambda: len(sink.copies_for("<r3@t>")) == len(MEMBERS), what="the fourth post delivered")
    answer = d.send("carol@example.net", LIST, reply_to("carol@example.net", "Tabs or spaces", "<root@t>",
                                                          "<r4@t>"))
    held = d.cli_json("queue")
    assert [q["message_id"] for q in held] == ["<r4@t>"] and answer == {}
    assert "cooling down" in held[0]["reason"] and held[0]["rule"] == "thread-cooling"
    # alice and bob, who took part, hear once; carol's held notice says why instead
    for who in ("alice@example.org", "bob@example.org"):
        wait_until(lambda who=who: pauses(sink, who), what=f"the mediation notice to {who}")
    d.send("bob@example.org", LIST, reply_to("bob@example.org", "Tabs or spaces", "<root@t>", "<r5@t>"))
    digest = wait_until(lambda: [g for g in digests(d) if "Threads cooling down" in summary(g)], 15,
                        "a digest flagging the thread")[-1]
    assert "tabs or spaces" in summary(digest) and "COOLING DOWN" in summary(digest)
    assert len(audit_actions(d, "thread-cooled")) == 1
    # after `cooldown` it ends by itself, and a reply goes out again without a second notice
    wait_until(lambda: audit_actions(d, "thread-warmed"), 15, "the end of the cool-down")
    d.send("alice@example.org", LIST, reply_to("alice@example.org", "Tabs or spaces", "<root@t>", "<r6@t>"))
    wait_until(lambda: len(sink.copies_for("<r6@t>")) == len(MEMBERS), what="a post after the cool-down")
    time.sleep(1.5)
    assert [len(pauses(sink, w)) for w in ("alice@example.org", "bob@example.org")] == [1, 1]
    assert len(audit_actions(d, "thread-cooled")) == 1


def test_a_moderator_locks_and_unlocks_a_thread_by_mail(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "1s"\n')
    root = hold(d, "Licensing question")
    digest = wait_until(lambda: digests(d), what="a digest")[-1]
    pid = command_for(digest, "approve").split()[1]
    # odd digits in a duration are words of the reason, never an error that sets the reply aside
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"cool {pid} for ９h\n"
                                                f"moderate {pid} for 9999999999d odd", digest))
    wait_until(lambda: audit_actions(d, "thread-cooled"), what="the cool-down")
    assert not audit_actions(d, "reply-failed")
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"lock {pid} going in circles", digest))
    wait_until(lambda: audit_actions(d, "thread-locked"), what="the lock")
    d.send("alice@example.org", LIST, reply_to("alice@example.org", "Licensing question", root, "<l1@t>"))
    assert {q["message_id"]: q["rule"] for q in d.cli_json("queue")}["<l1@t>"] == "thread-locked"
    # a post that only shares the subject (no References) is in the same thread
    d.send("bob@example.org", LIST, post_bytes(sender="bob@example.org", subject="RE: [dev] Licensing  question",
                                               message_id="<l2@t>"))
    assert "<l2@t>" in {q["message_id"] for q in d.cli_json("queue")}
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"unlock {pid}", digest))
    wait_until(lambda: audit_actions(d, "thread-unlocked"), what="the unlock")
    d.send("alice@example.org", LIST, reply_to("alice@example.org", "Licensing question", root, "<l3@t>"))
    wait_until(lambda: len(sink.copies_for("<l3@t>")) == len(MEMBERS), what="delivery after the unlock")
    # and from the command line, by any post of the thread
    assert "locked" in d.cli("thread", "lock", pid.split("-")[0], "--reason", "enough").stdout
    assert audit_actions(d, "thread-locked")[-1]["actor"].startswith("admin:")
    d.send("bob@example.org", LIST, reply_to("bob@example.org", "Licensing question", root, "<l4@t>"))
    assert {q["message_id"]: q["rule"] for q in d.cli_json("queue")}["<l4@t>"] == "thread-locked"


THREAT = "I know where you live and you will regret this."


def test_the_escalation_contact_gets_the_evidence_and_decides_by_reply(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra=f'escalation_contact = "{CONTACT}"\n')
    raw = post_bytes(body=THREAT, message_id="<threat@t>", subject="You again")
    d.send("alice@example.org", LIST, raw)
    evidence = wait_until(lambda: [m for r, m in sink.copies() if r == CONTACT], what="the evidence")[0]
    data = evidence.content
    # the original byte for byte, its hash, the audit records and the chain head
    original = original_of(data)
    assert original == raw
    assert original_of(data.replace(b"\r\n", b"\n")) == raw   # as a Maildir or a mail client saves it
    sha = hashlib.sha256(raw).hexdigest()
    text = text_of(evidence.message)
    assert f"SHA-256:   {sha}" in text and "threats-or-doxxing" in text
    head = evidence.message["Audit-Head"]
    assert f"Audit chain head: {head}" in text
    assert d.cli("audit", "verify", "--anchor", head.replace(" ", ":")).returncode == 0
    line = next(x.strip() for x in text.splitlines() if x.strip().startswith("keep "))
    pid = line.split()[1]
    # the same bundle from the command line
    out = d.dir / "evidence.eml"
    d.cli("evidence", pid.split("-")[0], "--out", str(out))
    assert original_of(out.read_bytes()) == raw and sha in out.read_text()
    # a forged reply in the contact's name from elsewhere does nothing; the contact's own reply decides
    d.send("stranger@example.net", MODERATION, reply("stranger@example.net", f"approve {pid}", extra=""))
    d.send(CONTACT, MODERATION, reply(CONTACT, f"keep {pid} police report filed"))
    wait_until(lambda: audit_actions(d, "kept"), what="keep")
    assert [q["message_id"] for q in d.cli_json("queue")] == ["<threat@t>"]
    d.send(CONTACT, MODERATION, reply(CONTACT, f"reject {pid} removed on legal advice"))
    wait_until(lambda: d.cli_json("queue") == [], what="the contact's decision")
    last = audit_actions(d, "reject")[-1]
    assert last["actor"] == f"contact:{CONTACT}" and last["reason"] == "removed on legal advice"
    assert sink.copies_for("<threat@t>") == []
    refused = audit_actions(d, "refused")
    assert refused and refused[0]["actor"] == "unverified:stranger@example.net"


def test_a_moderator_escalates_a_held_post_with_a_note(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra=f'escalation_contact = "{CONTACT}"\ndigest_every = "1s"\n')
    hold(d, "My neighbour's phone number")
    digest = wait_until(lambda: digests(d), what="a digest")[-1]
    pid = command_for(digest, "approve").split()[1]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"escalate {pid} may be doxxing", digest))
    evidence = wait_until(lambda: [m for r, m in sink.copies() if r == CONTACT], what="the evidence")[0]
    assert "Moderator's note:\n    may be doxxing" in text_of(evidence.message)
    assert d.cli_json("queue")[0]["escalated"] is True


def test_an_appeal_reaches_the_digest_and_another_moderators_decision_reaches_the_poster(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "1s"\nnotify_held = "all"\n'
                                                       'reasons = { offtopic = "Off topic for {list}." }\n')
    mid = hold(d, "Selling my bike", sender="poster@example.net")
    digest = wait_until(lambda: digests(d), what="a digest")[-1]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "reject") + " #offtopic",
                                                digest))
    notice = wait_until(lambda: [m.message for r, m in sink.copies() if r == "poster@example.net"
                                 and "not accepted" in str(m.message["Subject"])], what="the rejection")[0]
    assert "Off topic for dev@example.org." in text_of(notice) and "appeal" in text_of(notice)
    appeal = (f"From: poster@example.net\r\nTo: {MODERATION}\r\nSubject: Re: {notice['Subject']}\r\n"
              f"Message-ID: <appeal1@client>\r\nIn-Reply-To: {notice['Message-ID']}\r\n\r\n"
              "appeal it was for the list's own bike ride\r\n").encode()
    d.send("poster@example.net", MODERATION, appeal)
    later = wait_until(lambda: [g for g in digests(d) if "Appeals (1)" in summary(g)], 15, "the appeal in a digest")[-1]
    text = summary(later)
    assert "poster@example.net appeals the rejection" in text and "decided by mod@example.org: Off topic" in text
    assert "it was for the list's own bike ride" in text
    grant = next(x.strip() for x in text.splitlines() if x.strip().startswith("grant AP"))
    # the moderator who rejected it may not decide the appeal; another one may
    d.send("mod@example.org", MODERATION, reply("mod@example.org", grant, later))
    wait_until(lambda: [r for r in audit_actions(d, "refused") if "another moderator" in r["reason"]],
               what="the first moderator refused")
    d.send("mod2@example.org", MODERATION, reply("mod2@example.org", grant + " fair enough", later))
    outcome = wait_until(lambda: [m.message for r, m in sink.copies() if r == "poster@example.net"
                                  and "appeal" in str(m.message["Subject"])], what="the outcome")[0]
    assert "granted" in str(outcome["Subject"]) and "fair enough" in text_of(outcome)
    wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), what="the post delivered on appeal")
    assert [r["actor"] for r in audit_actions(d, "appeal-granted")] == ["moderator:mod2@example.org"]


def _first_screen(text: str) -> list[str]:
    """What an 80x24 terminal shows of the text's start, as a pager's first page does (pyte
    emulates the terminal: a line longer than 80 columns wraps and takes two rows)."""
    screen = pyte.Screen(80, 24)
    stream = pyte.Stream(screen)
    for n, line in enumerate(text.split("\n")):
        if n and screen.cursor.y == 23:
            break   # the next line would scroll the first page away
        stream.feed(("\r\n" if n else "") + line)
    return screen.display


def test_a_twenty_post_digest_summary_fits_an_80x24_screen_and_the_cap_holds(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra="digest_max_items = 20\ndigest_every = \"1h\"\n")
    senders = ["a.very.long.address.of.somebody@subdomain.example.net", "stranger@example.net", "li@example.net"]
    subjects = ["Ein sehr langer Betreff über die Pläne für das nächste Treffen im Frühjahr",
                "会議の議事録について質問があります、よろしくお願いします"]
    with d.smtp() as smtp:
        for n in range(23):
            sender = senders[n % 3]
            subject = subjects[n % 3] if n % 3 < 2 else f"post {n}"
            smtp.sendmail(sender, [LIST], post_bytes(sender=sender, subject=subject, message_id=f"<cap{n}@t>"))
    wait_until(lambda: len(d.cli_json("queue")) == 23, 20, "the 23 posts held")
    # the first post may have gone out alone (the first digest goes at once): ask for one now, which
    # lists 20 of the 23 either way (new ones first, then those an earlier digest showed)
    d.cli("digest", "send")
    digest = wait_until(lambda: [g for g in digests(d) if "3 more" in summary(g)], 20,
                        "a digest listing 20 posts and 3 more")[0]
    text = summary(digest)
    shown = _first_screen(text)
    held = {q["id"] for q in d.cli_json("queue")}
    listed = [i for i in held if any(i in row for row in shown)]
    assert len(listed) == 20, "\n".join(shown)
    assert len(digest.get_payload()) <= 1 + 20   # the posts no digest showed yet are attached
    # the cap: no digest ever lists more than digest_max_items
    assert text.count("    approve ") == 20


def test_claims_and_notes_on_members_help_two_moderators(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "1s"\n')
    mid = hold(d, "First try", sender="newbie@example.net")
    digest = wait_until(lambda: digests(d), what="a digest")[-1]
    pid = command_for(digest, "approve").split()[1]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"claim {pid}\nnote newbie@example.net "
                                                "asked in IRC first; be kind", digest))
    wait_until(lambda: audit_actions(d, "claimed"), what="the claim")
    d.send("mod2@example.org", MODERATION, reply("mod2@example.org", f"approve {pid}", digest))
    wait_until(lambda: [r for r in audit_actions(d, "refused") if "claimed by mod@example.org" in r["reason"]],
               what="the second moderator's approve refused")
    assert d.cli_json("queue")[0]["message_id"] == mid
    hold(d, "Second try", sender="newbie@example.net")
    later = wait_until(lambda: [g for g in digests(d) if "Second try" in summary(g)], 15, "the next digest")[-1]
    assert "Note on newbie@example.net (mod@example.org" in summary(later) and "be kind" in summary(later)
    assert "Claimed by mod@example.org" in summary(later)
    # a note by address is refused outside a reply to a digest (its authority)
    d.send("mod@example.org", MODERATION, reply("mod@example.org", "note newbie@example.net forged?"))
    wait_until(lambda: [r for r in audit_actions(d, "refused") if "reply to a digest" in r["reason"]],
               what="the note without a digest refused")
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"approve {pid}", digest))
    wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), what="the claimer's approve")


def test_a_scheduled_post_goes_out_through_the_normal_path(sink, make_daemon):
    d = make_daemon(sink, files={"reminder.txt": "Please read the guidelines of {list}.\n"},
                    list_extra='scheduled = [{ every = "2s", file = "reminder.txt", subject = "Guidelines" }]\n')
    got = wait_until(lambda: [m for r, m in sink.copies() if r == MEMBERS[0]
                              and m.message["Subject"] == "Guidelines"], 20, "the scheduled post")[0]
    assert "Please read the guidelines of dev@example.org." in text_of(got.message)
    record = [r for r in d.cli_json("audit") if r["rule"] == "scheduled"][0]
    assert (record["action"], record["actor"]) == ("accept", "schedule")


def test_the_mediation_notice_wording_comes_from_the_config(sink, make_daemon):
    d = make_daemon(sink, files={"mediation.txt": "Cool it on {list}: {subject} ({why}), {until}.\n"},
                    list_extra='cool_posts_per_hour = 2\nmediation_notice = "mediation.txt"\n')
    d.send("alice@example.org", LIST, post_bytes(subject="Vim vs Emacs", message_id="<v0@t>"))
    d.send("bob@example.org", LIST, reply_to("bob@example.org", "Vim vs Emacs", "<v0@t>", "<v1@t>"))
    notice = wait_until(lambda: pauses(sink, "alice@example.org"), what="the notice")[0]
    body = " ".join(text_of(notice.message).split())
    assert body.startswith("Cool it on dev@example.org: Vim vs Emacs (2 post(s) in the last hour), until ")


def test_the_digest_message_parses_as_mail(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "1s"\n')
    hold(d, "Ünïcode sübject")
    digest = wait_until(lambda: digests(d), what="a digest")[-1]
    raw = digest.as_bytes()
    again = message_from_bytes(raw, policy=default)
    assert again.get_content_type() == "multipart/digest"


def test_a_warned_poster_appeals_the_sanction_and_another_moderator_lifts_it(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "1s"\n')
    hold(d, "Buy my course", sender="poster@example.net")
    digest = wait_until(lambda: digests(d), what="a digest")[-1]
    pid = command_for(digest, "approve").split()[1]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", f"warn {pid} no advertising here", digest))
    warning = wait_until(lambda: [m.message for r, m in sink.copies() if r == "poster@example.net"
                                  and str(m.message["Subject"]).startswith("Warning")], what="the warning")[0]
    assert "appeal" in text_of(warning) and warning["From"].endswith(f"<{MODERATION}>")
    appeal = (f"From: poster@example.net\r\nTo: {MODERATION}\r\nSubject: Re: {warning['Subject']}\r\n"
              f"Message-ID: <appeal2@client>\r\nIn-Reply-To: {warning['Message-ID']}\r\n\r\n"
              "> old text\r\nappeal it was a free community course\r\n").encode()
    d.send("poster@example.net", MODERATION, appeal)
    later = wait_until(lambda: [g for g in digests(d) if "Appeals (1)" in summary(g)], 15, "the appeal in a digest")[-1]
    assert "poster@example.net appeals the sanction" in summary(later)
    grant = next(x.strip() for x in summary(later).splitlines() if x.strip().startswith("grant AP"))
    d.send("mod2@example.org", MODERATION, reply("mod2@example.org", grant, later))
    wait_until(lambda: audit_actions(d, "sanction-lifted"), what="the sanction lifted")
    assert d.cli_json("member", "show", LIST, "poster@example.net")[0]["sanction"] in ("", None)
    # a second appeal of the same decision is answered, not filed again
    d.send("poster@example.net", MODERATION, appeal.replace(b"<appeal2@client>", b"<appeal3@client>"))
    wait_until(lambda: [m for r, m in sink.copies() if r == "poster@example.net"
                        and "appealed already" in text_of(m.message)], what="the answer to a second appeal")
    assert len(audit_actions(d, "appealed")) == 1
