"""Joining and leaving by mail, as a new member would: LIST-request@ (subscribe, unsubscribe, help,
confirm), LIST-join@ and LIST-leave@, each change confirmed by the address itself within
confirm_within; rate limits per address and per client; the welcome with the guidelines; mail to
LIST-owner@ reaching the owner."""

from __future__ import annotations

import smtplib
import time

from conftest import LIST, MEMBERS, post_bytes, wait_until

REQUEST, JOIN, LEAVE, OWNER = ("dev-request@example.org", "dev-join@example.org", "dev-leave@example.org",
                               "dev-owner@example.org")
NEWCOMER = "newcomer@example.net"
GUIDELINES = "Be kind. Stay on topic: the development of dev.\n"


def mail(sender: str, subject: str, body: str = "", extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {REQUEST}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@client.example>\r\n{extra}\r\n{body}\r\n").encode()


def sent_to(sink, address: str) -> list:
    return [r for r in sink.handler.received if address in r.rcpt_tos]


def answer(d, rcpt: str, message: bytes, sender: str = NEWCOMER) -> str:
    with d.smtp() as s:
        s.ehlo()
        s.mail(sender)
        s.rcpt(rcpt)
        code, text = s.data(message)
    return f"{code} {text.decode()}"


def token_from(received) -> str:
    subject = received.message["Subject"]
    assert subject.startswith("confirm "), subject
    return subject.split()[1]


def members(d) -> list[str]:
    return d.cli("members", "list", LIST).stdout.split()


def test_subscribe_is_confirmed_by_the_address_and_welcomed_with_the_guidelines(sink, make_daemon):
    d = make_daemon(sink, files={"guidelines.txt": GUIDELINES}, list_extra='guidelines = "guidelines.txt"\n')
    said = answer(d, REQUEST, mail(NEWCOMER, "subscribe"))
    assert said.startswith("250 2.0.0") and "confirmation was mailed" in said
    confirmation = wait_until(lambda: sent_to(sink, NEWCOMER), 15, "the confirmation")[0]
    assert confirmation.message["From"] == f'"dev@example.org list" <{REQUEST}>'
    assert confirmation.message["Auto-Submitted"] == "auto-replied"
    assert NEWCOMER not in members(d)          # nothing changes before the address confirms

    token = token_from(confirmation)
    assert answer(d, REQUEST, mail(NEWCOMER, f"Re: confirm {token}")).startswith("250 2.0.0 Confirmed")
    assert NEWCOMER in members(d)
    welcome = wait_until(lambda: [r for r in sent_to(sink, NEWCOMER) if "Welcome" in r.message["Subject"]],
                         15, "the welcome")[0]
    text = welcome.message.get_payload(decode=True).decode()
    assert "Be kind. Stay on topic" in text and "unsubscribe" in text
    [record] = [r for r in d.cli_json("audit", "--only", "people") if r["action"] == "member-added"
                and r["sender"] == NEWCOMER]
    assert record["source"] == "mail (confirmed)" and record["actor"] == f"member:{NEWCOMER}"
    stored = d.db().execute("SELECT actor FROM audit WHERE seq = ?", (record["seq"],)).fetchone()[0]
    assert stored.startswith("member:") and NEWCOMER not in stored   # the trail keeps a pseudonym
    # the token is used up: a replay changes nothing
    assert "unknown or expired" in answer(d, REQUEST, mail(NEWCOMER, f"confirm {token}"))


def test_join_and_leave_addresses_and_the_goodbye(sink, make_daemon):
    d = make_daemon(sink)
    assert answer(d, JOIN, mail(NEWCOMER, "anything at all")).startswith("250")
    token = token_from(wait_until(lambda: sent_to(sink, NEWCOMER), 15, "the confirmation")[0])
    answer(d, REQUEST, mail(NEWCOMER, "Re: your request", body=f"> confirm {token}\r\nconfirm {token}"))
    wait_until(lambda: NEWCOMER in members(d), 10, "the new member")

    member = MEMBERS[0]
    assert answer(d, LEAVE, mail(member, ""), sender=member).startswith("250")
    token = token_from(wait_until(lambda: [r for r in sent_to(sink, member)
                                           if r.message["Subject"].startswith("confirm")], 15, "confirmation")[0])
    assert member in members(d)
    answer(d, REQUEST, mail(member, f"confirm {token}"), sender=member)
    assert member not in members(d)
    bye = wait_until(lambda: [r for r in sent_to(sink, member) if "You have left" in r.message["Subject"]],
                     15, "the goodbye")[0]
    assert "subscribe" in bye.message.get_payload(decode=True).decode()


def test_a_confirmation_expires(sink, make_daemon):
    d = make_daemon(sink, list_extra='confirm_within = "1s"\n')
    answer(d, REQUEST, mail(NEWCOMER, "subscribe"))
    token = token_from(wait_until(lambda: sent_to(sink, NEWCOMER), 15, "the confirmation")[0])
    time.sleep(1.5)
    assert "unknown or expired" in answer(d, REQUEST, mail(NEWCOMER, f"confirm {token}"))
    assert NEWCOMER not in members(d)


def test_the_list_cannot_be_used_to_mail_bomb_someone(sink, make_daemon):
    victim = "victim@example.net"
    d = make_daemon(sink, server_extra="held_notices_per_hour = 3\nrequests_per_ip_per_hour = 6\n"
                                       "trusted_relays = []\n")
    answers = [answer(d, REQUEST, mail(victim, "subscribe"), sender=victim) for _ in range(6)]
    assert all(a.startswith("250") for a in answers)
    time.sleep(1)
    assert len(sent_to(sink, victim)) == 3          # held_notices_per_hour, whatever the requests
    assert "enough mail from us this hour" in answers[-1]
    # the seventh request from this client within the hour: 450, try later
    assert answer(d, REQUEST, mail("other@example.net", "subscribe"), sender="other@example.net") \
        .startswith("450 4.7.1")


def test_auto_replies_and_bounces_to_the_request_address_are_not_answered(sink, make_daemon):
    d = make_daemon(sink)
    assert "not answered" in answer(d, REQUEST, mail(NEWCOMER, "Out of office", extra="Auto-Submitted: auto-replied\r\n"))
    assert "not answered" in answer(d, REQUEST, mail("mailer-daemon@example.net", "failure"), sender="")
    time.sleep(0.5)
    assert sent_to(sink, NEWCOMER) == [] and sink.handler.received == []


def test_help_and_a_request_not_understood_get_the_help_text(sink, make_daemon):
    d = make_daemon(sink)
    answer(d, REQUEST, mail(NEWCOMER, "help"))
    answer(d, REQUEST, mail("other@example.net", "what is this list?"), sender="other@example.net")
    helped = wait_until(lambda: len(sent_to(sink, NEWCOMER)) + len(sent_to(sink, "other@example.net")) == 2
                        and sent_to(sink, NEWCOMER) + sent_to(sink, "other@example.net"), 15, "two answers")
    for r in helped:
        assert "subscribe" in r.message.get_payload(decode=True).decode()
    assert "not understood" in helped[1].message.get_payload(decode=True).decode()


def test_mail_to_the_owner_address_reaches_the_owner_once(sink, make_daemon):
    d = make_daemon(sink)
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=15) as s:
        s.sendmail(NEWCOMER, [OWNER], post_bytes(sender=NEWCOMER, to=OWNER, subject="a question",
                                                 message_id="<q@client.example>"))
        looped = post_bytes(sender=NEWCOMER, to=OWNER, subject="again", extra=f"X-Loop: {LIST}\r\n")
        code = s.sendmail(NEWCOMER, [OWNER], looped)
    assert code == {}
    forwarded = wait_until(lambda: sent_to(sink, "owner@example.org"), 15, "the forwarded mail")
    time.sleep(0.5)
    assert len(sent_to(sink, "owner@example.org")) == 1
    assert forwarded[0].message["Subject"] == "a question" and forwarded[0].message["X-Loop"] == LIST


def test_not_metoo_is_the_default_and_options_by_mail_are_confirmed(sink, make_daemon):
    d = make_daemon(sink, metoo=False)
    alice = MEMBERS[0]
    d.send(alice, LIST, post_bytes(sender=alice, message_id="<own1@test>"))
    copies = wait_until(lambda: len(c := sink.copies_for("<own1@test>")) == len(MEMBERS) - 1 and c, 15, "copies")
    assert alice not in [r for r, _ in copies]            # no copy of one's own post, by default

    assert "confirmation was mailed" in answer(d, REQUEST, mail(alice, "options metoo on"), sender=alice)
    token = token_from(wait_until(lambda: [r for r in sent_to(sink, alice)
                                           if r.message["Subject"].startswith("confirm")], 15, "confirmation")[0])
    answer(d, REQUEST, mail(alice, f"Re: confirm {token}"), sender=alice)
    told = wait_until(lambda: [r for r in sent_to(sink, alice) if r.message["Subject"].startswith("Your options")],
                      15, "the options answer")[0]
    assert "Changed: metoo on" in told.message.get_payload(decode=True).decode()
    d.send(alice, LIST, post_bytes(sender=alice, message_id="<own2@test>"))
    wait_until(lambda: alice in [r for r, _ in sink.copies_for("<own2@test>")], 15, "her own copy now")
    assert [r["reason"] for r in d.cli_json("audit", "--only", "people") if r["action"] == "member-options"] == \
        ["A member's options on dev@example.org: metoo on."]


def test_nomail_keeps_the_member_but_sends_nothing(sink, make_daemon):
    d = make_daemon(sink)
    bob = MEMBERS[1]
    assert "nomail on" in d.cli("members", "options", LIST, bob, "--nomail", "on").stdout
    assert f"{bob}  (nomail)" in d.cli("members", "list", LIST).stdout
    d.send(MEMBERS[0], LIST, post_bytes(message_id="<nomail@test>"))
    copies = wait_until(lambda: len(c := sink.copies_for("<nomail@test>")) == len(MEMBERS) - 1 and c, 15, "copies")
    assert bob not in [r for r, _ in copies]
    result = d.cli("members", "options", LIST, "stranger@example.net", "--nomail", "on", check=False)
    assert result.returncode != 0 and "is not a member" in result.stderr


def test_an_open_list_adds_at_once_and_a_moderated_one_asks_a_moderator(sink, make_daemon):
    d = make_daemon(sink, list_extra='subscribe_policy = "open"\n')
    assert "answer comes by mail" in answer(d, REQUEST, mail(NEWCOMER, "subscribe"))
    assert NEWCOMER in members(d)
    wait_until(lambda: [r for r in sent_to(sink, NEWCOMER) if "Welcome" in r.message["Subject"]], 15, "welcome")

    d2 = make_daemon(sink, list_extra='subscribe_policy = "moderate"\n')
    asker, refused = "asker@example.net", "refused@example.net"
    for who in (asker, refused):
        answer(d2, REQUEST, mail(who, "subscribe"), sender=who)
        token = token_from(wait_until(lambda: [r for r in sent_to(sink, who)
                                               if r.message["Subject"].startswith("confirm")], 15, "confirm")[0])
        assert "a moderator approves" in answer(d2, REQUEST, mail(who, f"confirm {token}"), sender=who)
    held = {p["sender"]: p for p in d2.cli_json("queue")}
    assert set(held) == {asker, refused} and held[asker]["rule"] == "subscription"
    assert asker not in members(d2)
    d2.cli("approve", held[asker]["id"])
    d2.cli("reject", held[refused]["id"], "--reason", "this list is for the project's maintainers")
    assert asker in members(d2) and refused not in members(d2)
    wait_until(lambda: [r for r in sent_to(sink, asker) if "Welcome" in r.message["Subject"]], 15, "welcome")
    no = wait_until(lambda: [r for r in sent_to(sink, refused) if "did not approve" in text_of(r)], 15, "no")[0]
    assert "maintainers" in text_of(no)
    d2.cli("digest", "send")
    wait_until(d2.outbox_idle, 15, "the outbox idle")
    assert [r for r, m in sink.copies() if m.message["Subject"] == "Subscription request"
            and r in MEMBERS] == []   # a request is never delivered to the list


def text_of(r) -> str:
    return r.message.get_payload(decode=True).decode()


def test_a_member_who_chose_digest_gets_one_digest_instead_of_each_post(sink, make_daemon):
    d = make_daemon(sink, list_extra='member_digest_every = "2s"\n')
    bob = MEMBERS[1]
    d.cli("members", "options", LIST, bob, "--digest", "on")
    time.sleep(0.5)   # the first round only starts the clock
    for n in (1, 2):
        d.send(MEMBERS[0], LIST, post_bytes(subject=f"news {n}", message_id=f"<d{n}@test>"))
    for n in (1, 2):
        wait_until(lambda: len(sink.copies_for(f"<d{n}@test>")) == len(MEMBERS) - 1, 15, "the others' copies")
    digest = wait_until(lambda: [r for r in sent_to(sink, bob) if "digest of" in (r.message["Subject"] or "")],
                        15, "bob's digest")[0]
    assert bob not in [r for n in (1, 2) for r, _ in sink.copies_for(f"<d{n}@test>")]
    assert digest.message.get_content_type() == "multipart/digest"
    inner = [p.get_payload()[0]["Message-ID"] for p in digest.message.get_payload()[1:]]
    assert inner == ["<d1@test>", "<d2@test>"]
    assert "news 1" in digest.message.get_payload()[0].get_payload(decode=True).decode()


def test_a_list_speaks_its_members_language_through_its_templates(sink, make_daemon):
    files = {"templates/welcome.txt": "Subject: Willkommen bei {list}\n\nHallo {address}!\n\nRegeln:\n{guidelines}\n",
             "templates/held.txt": "Subject: Ihr Beitrag wartet ({id})\n\nGrund: {reason}\n{unknown} bleibt stehen.\n",
             "guidelines.txt": "Seid freundlich.\n"}
    d = make_daemon(sink, start=False, list_extra='templates = "templates"\nguidelines = "guidelines.txt"\n'
                                                  'subscribe_policy = "open"\n')
    (d.dir / "templates").mkdir()
    for name, text in files.items():
        (d.dir / name).write_text(text, encoding="utf-8")
    d.start()
    answer(d, REQUEST, mail(NEWCOMER, "subscribe"))
    welcome = wait_until(lambda: [r for r in sent_to(sink, NEWCOMER) if "Willkommen" in r.message["Subject"]],
                         15, "the German welcome")[0]
    assert welcome.message["Subject"] == f"Willkommen bei {LIST}"
    assert f"Hallo {NEWCOMER}!" in text_of(welcome) and "Seid freundlich." in text_of(welcome)
    d.send(NEWCOMER, LIST, post_bytes(sender=NEWCOMER, body="see http://x.example/ and http://y.example/ "
                                      + " ".join(f"http://{n}.example/" for n in range(20))))
    held = wait_until(lambda: [r for r in sent_to(sink, NEWCOMER) if "wartet" in r.message["Subject"]],
                      15, "the German held notice")[0]
    assert "Grund:" in text_of(held) and "{unknown} bleibt stehen." in text_of(held)
