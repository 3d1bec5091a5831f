"""Moderation by mail through the daemon's SMTP -moderation address: digests, commands, receipts,
and every kind of bad reply refused, answered and audited."""

import re
import time
from email import message_from_bytes
from email.policy import default

import pytest
from conftest import LIST, MEMBERS, post_bytes, wait_until

MODS = ("mod@example.org", "mod2@example.org")
MODERATION = "dev-moderation@example.org"


@pytest.fixture
def daemon(sink, make_daemon):
    return make_daemon(sink, moderators=MODS)


def digests(d):
    folder = d.dir / "var" / "moderation-maildir" / "new"
    return [message_from_bytes(p.read_bytes(), policy=default) for p in sorted(folder.glob("*"),
                                                                                key=lambda p: p.stat().st_mtime)]


def summary(digest) -> str:
    return next(digest.iter_parts()).get_content()


COMMAND_LINE = re.compile(r"^\s*(\w+) ([2-9A-Z]{4,6}-[A-Z2-7]{8})\b")


def command_for(digest, verb: str, n: int = 1) -> str:
    """The n-th post's command line for `verb`, as printed under each post (not the help lines)."""
    lines = [l.strip() for l in summary(digest).splitlines()
             if (m := COMMAND_LINE.match(l)) and m.group(1) == verb]
    return lines[n - 1].replace(" <reason for the poster>", "")


def post_ids(digest) -> list[str]:
    """The ids (with tokens) of every post a digest shows, new ones and those still waiting."""
    return re.findall(r"\b[2-9A-Z]{4,6}-[A-Z2-7]{8}\b", summary(digest))


def all_command(digest, verb: str = "approve") -> str:
    """'approve all TOKEN' as the digest prints it (the token is the digest's own)."""
    found = re.search(rf"\b{verb} all ([A-Z2-7]{{8}})\b", summary(digest))
    assert found, summary(digest)
    return f"{verb} all {found.group(1)}"


def reply(frm: str, text: str, digest=None, message_id: str | None = None, extra: str = "") -> bytes:
    refs = f"In-Reply-To: {digest['Message-ID']}\r\nReferences: {digest['Message-ID']}\r\n" if digest else ""
    mid = message_id or f"<reply-{time.time_ns()}@client.example>"
    return (f"From: {frm}\r\nTo: {MODERATION}\r\nSubject: Re: held posts\r\nMessage-ID: {mid}\r\n{refs}{extra}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\r\n"
            f"On Wed, 25 Nov 2026, dev moderation wrote:\r\n> approve QQQQ-DECOYDECOY\r\n> old text\r\n").encode()


def text_of(message) -> str:
    """The first text part of a received message, decoded."""
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    return ""


def hold(d, subject="Question", sender="stranger@example.net"):
    mid = f"<held-{time.time_ns()}@t>"
    d.send(sender, LIST, post_bytes(sender=sender, subject=subject, message_id=mid))
    return mid


def test_held_posts_arrive_in_a_multipart_digest_with_each_post_attached(daemon, sink):
    mid = hold(daemon)
    digest = wait_until(lambda: digests(daemon), what="a digest")[0]
    assert digest.get_content_type() == "multipart/digest"
    parts = list(digest.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    assert [p.get_content_type() for p in parts[1:]] == ["message/rfc822"]
    assert parts[1].get_payload()[0]["Message-ID"] == mid
    text = summary(digest)
    assert "stranger@example.net" in text and "default-nonmember" in text
    assert re.search(r"approve [2-9A-Z]{4}-[A-Z2-7]{8}", text)
    assert digest["Reply-To"] == MODERATION
    # and mailed to both moderators through [outbound]
    wait_until(lambda: {r for r, m in sink.copies() if m.message["Message-ID"] == digest["Message-ID"]} == set(MODS),
               what="the digest mailed to the moderators")


def test_an_approve_reply_delivers_and_every_moderator_gets_the_receipt(daemon, sink):
    mid = hold(daemon)
    digest = wait_until(lambda: digests(daemon), what="a digest")[0]
    daemon.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve")))
    wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), what="delivery after approval")
    for moderator in MODS:
        got = wait_until(lambda: [m.message for r, m in sink.copies() if r == moderator
                                  and m.message["Subject"].startswith("Re: ")], what=f"receipt for {moderator}")
        body = text_of(got[0])
        assert "done:" in body and "approved; it is being delivered" in body
    last = daemon.cli_json("audit", "--only", "posts")[-1]
    assert (last["action"], last["actor"]) == ("accept", "moderator:mod@example.org")
    assert last["source"].startswith("mail command: approve ")
    assert "QQQQ" not in last["source"]


@pytest.mark.parametrize("case", ["non-moderator", "altered token", "other list", "replayed"])
def test_bad_replies_change_nothing_and_are_answered_and_audited(sink, make_daemon, case):
    d = make_daemon(sink, moderators=MODS, extra_lists='\n[[list]]\naddress = "users@example.org"\n'
                                                       'moderators = ["mod@example.org"]\n')
    hold(d)
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    command = command_for(digest, "approve")
    sender, to = "mod@example.org", MODERATION
    if case == "non-moderator":
        sender = "stranger@example.net"
    elif case == "altered token":
        command = command[:-1] + ("A" if command[-1] != "A" else "B")
    elif case == "other list":
        to = "users-moderation@example.org"
    raw = reply(sender, command, message_id="<same@client.example>")
    if case == "replayed":
        d.send(sender, to, raw)   # first time: applied
    d.send(sender, to, raw)
    expected, recorded = {
        "non-moderator": ("commands only from the moderators of dev@example.org", "is not a moderator"),
        "altered token": ("the token does not match",) * 2,
        "other list": ("belongs to dev@example.org, not to users@example.org",) * 2,
        "replayed": ("was already processed",) * 2}[case]
    receipt = wait_until(lambda: [m.message for r, m in sink.copies() if r == sender
                                  and expected in " ".join(text_of(m.message).split())],
                         what="a receipt that says why")[0]
    assert "not applied" in text_of(receipt).lower()
    refused = [r for r in d.cli_json("audit", "--only", "posts") if r["action"] == "refused"]
    assert refused and recorded in refused[-1]["reason"]
    queue = d.cli_json("queue")
    if case == "replayed":
        assert queue == []  # applied once, not twice
        assert [r["action"] for r in d.cli_json("audit", "--only", "posts")].count("accept") == 1
    else:
        assert len(queue) == 1


def test_approve_all_takes_its_authority_from_the_digest_token_on_the_line(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "1s"\n')
    first, second = hold(d, "one"), hold(d, "two", sender="other@example.net")
    digest = wait_until(lambda: [g for g in digests(d) if "2 post(s)" in summary(g)], 20,
                        "a digest listing both posts")[-1]
    # a reply to the digest (its Message-ID in In-Reply-To, which forwards and quotes leak) with a
    # bare 'approve all' and a short id without its token: nothing is approved
    short = command_for(digest, "discard").split()[1].split("-")[0]
    d.send("mod2@example.org", MODERATION, reply("mod2@example.org", f"approve all\r\ndiscard {short}", digest))
    receipt = wait_until(lambda: [m.message for r, m in sink.copies() if r == "mod2@example.org"
                                  and "NOT applied" in text_of(m.message)], what="the receipt")[0]
    assert "approve all TOKEN" in text_of(receipt) and "carries no token" in text_of(receipt)
    assert len(d.cli_json("queue")) == 2
    # the digest's token written on the line (no In-Reply-To at all) approves every post it lists
    d.send("mod2@example.org", MODERATION, reply("mod2@example.org", all_command(digest)))
    for mid in (first, second):
        wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), what=f"delivery of {mid}")
    assert d.cli_json("queue") == []
    # a token quoted from the digest, not written by the moderator, counts for nothing
    third = hold(d, "three")
    later = wait_until(lambda: [g for g in digests(d) if "three" in summary(g)], 20, "a third digest")[-1]
    quoted = reply("mod@example.org", "thanks", later).replace(
        b"> approve QQQQ-DECOYDECOY", ("> " + all_command(later)).encode())
    d.send("mod@example.org", MODERATION, quoted)
    wait_until(lambda: [m for r, m in sink.copies() if r == "mod@example.org" and "no command" in text_of(m.message)],
               what="the receipt of the quote-only reply")
    assert [q["message_id"] for q in d.cli_json("queue")] == [third]


def test_approve_all_decides_the_posts_it_lists_when_a_short_id_is_all_digits(sink, make_daemon):
    """Found by the chaos run: short ids may be all digits ("8498"), and `approve all` looked each
    listed post up by a text that was tried as a short id first, so the post numbered 8498 was
    taken for the post whose short id is 8498 and was passed by, still held."""
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "1s"\n')
    first = hold(d, "one")
    conn = d.db()
    first_number = conn.execute("SELECT id FROM posts WHERE message_id = ?", (first,)).fetchone()[0]
    second = hold(d, "two", sender="other@example.net")
    second_number = conn.execute("SELECT id FROM posts WHERE message_id = ?", (second,)).fetchone()[0]
    # the first post's short id reads as the second post's number (ids are written at intake)
    with conn:
        conn.execute("UPDATE posts SET short_id = ? WHERE id = ?", (str(second_number), first_number))
    digest = wait_until(lambda: [g for g in digests(d) if "2 post(s)" in summary(g)], 20,
                        "a digest listing both posts")[-1]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", all_command(digest), digest))
    for mid in (first, second):
        wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), what=f"delivery of {mid}")
    assert d.cli_json("queue") == []


def test_the_next_digest_says_what_was_decided_and_by_whom(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "1s"\n')
    hold(d, "first")
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    short = command_for(digest, "reject").split()[1].split("-")[0]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "reject") + " off topic"))
    wait_until(lambda: d.cli_json("queue") == [], what="the rejection")
    hold(d, "second")
    later = wait_until(lambda: [g for g in digests(d) if "second" in summary(g)], 20, "the next digest")[-1]
    text = summary(later)
    assert "Decided since the last digest (1):" in text
    assert f"  rejected by mod@example.org (1): {short} (off topic)" in text


def test_a_poster_can_withdraw_until_a_moderator_decides(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra="notify_held = true\n")
    hold(d, sender="stranger@example.net")
    notice = wait_until(lambda: [m.message for r, m in sink.copies() if r == "stranger@example.net"],
                        what="the held notice")[0]
    raw = (f"From: stranger@example.net\r\nTo: {MODERATION}\r\nSubject: Re: {notice['Subject']}\r\n"
           f"Message-ID: <w1@client>\r\nIn-Reply-To: {notice['Message-ID']}\r\n\r\nwithdraw\r\n").encode()
    d.send("stranger@example.net", MODERATION, raw)
    wait_until(lambda: d.cli_json("queue") == [], what="the withdrawal")
    last = d.cli_json("audit", "--only", "posts")[-1]
    assert (last["action"], last["actor"]) == ("discard", "poster:stranger@example.net")


def test_reminders_and_expiry_follow_the_configured_times(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra='remind_after = "1s"\nexpire_after = "3s"\n'
                                                       'digest_every = "1s"\nnotify_held = "all"\n')
    hold(d, sender="stranger@example.net")
    wait_until(lambda: any("REMINDER" in summary(g) for g in digests(d)), 10, "a reminder in a digest")
    wait_until(lambda: d.cli_json("queue") == [], 10, "expiry")
    last = d.cli_json("audit", "--only", "posts")[-1]
    assert (last["action"], last["actor"]) == ("reject", "expiry")
    assert "No moderator of dev@example.org reviewed the post" in last["reason"]
    wait_until(lambda: [m for r, m in sink.copies() if r == "stranger@example.net"
                        and "not accepted" in m.message["Subject"]], what="the poster's notice")


CLIENT_REPLIES = ["001-talon-android.eml", "002-talon-aol.eml", "003-talon-apple_mail.eml", "004-talon-gmail.eml",
                  "005-talon-hotmail.eml", "006-talon-iphone.eml", "007-talon-outlook.eml",
                  "008-talon-thunderbird.eml", "009-talon-yahoo.eml"]


def test_replies_written_by_real_mail_clients_approve_through_the_daemon(sink, make_daemon):
    from email.parser import BytesParser
    from email.policy import compat32

    from conftest import DATA
    from test_replies import with_command
    d = make_daemon(sink, moderators=MODS, list_extra='digest_every = "0.5s"\n')
    for n, name in enumerate(CLIENT_REPLIES):
        mid = hold(d, f"post {n}")
        digest = wait_until(lambda: [g for g in digests(d) if f"post {n}" in summary(g)], 20,
                            f"the digest for post {n}")[-1]
        line = next(l for l in command_for_all(digest, "approve") if f"post {n}" in l[1])[0]
        raw = with_command((DATA / "replies" / name).read_bytes(), line)
        msg = BytesParser(policy=compat32).parsebytes(raw)
        for header in ("From", "Message-ID", "To"):
            del msg[header]
        msg["From"] = "mod2@example.org"
        msg["To"] = MODERATION
        msg["Message-ID"] = f"<client-{n}@client.example>"
        d.send("mod2@example.org", MODERATION, msg.as_bytes())
        wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), 20, f"delivery after the {name} reply")


def command_for_all(digest, verb):
    """(command line, the block of text about that post) for each post of a digest."""
    blocks = re.split(r"\n(?=\[\d+\] )", summary(digest))
    out = []
    for block in blocks:
        for line in block.splitlines():
            if line.strip().startswith(verb + " "):
                out.append((line.strip().replace(" <reason for the poster>", ""), block))
    return out


def test_withdraw_after_a_moderator_decided_changes_nothing(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra="notify_held = true\n")
    mid = hold(d, sender="stranger@example.net")
    notice = wait_until(lambda: [m.message for r, m in sink.copies() if r == "stranger@example.net"],
                        what="the held notice")[0]
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve")))
    wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), what="delivery")
    raw = (f"From: stranger@example.net\r\nTo: {MODERATION}\r\nSubject: Re: x\r\nMessage-ID: <w2@client>\r\n"
           f"In-Reply-To: {notice['Message-ID']}\r\n\r\nwithdraw\r\n").encode()
    d.send("stranger@example.net", MODERATION, raw)
    receipt = wait_until(lambda: [m.message for r, m in sink.copies() if r == "stranger@example.net"
                                  and "can no longer be withdrawn" in text_of(m.message)], what="the answer")
    # the poster learns that the post was decided, never which moderator decided it
    assert "already accepted" in text_of(receipt[0]) and "mod@example.org" not in receipt[0].as_string()
    assert [r["action"] for r in d.cli_json("audit", "--only", "posts")] == ["hold", "accept"]


def test_require_dkim_refuses_replies_without_a_passing_signature(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, list_extra="require_dkim = true\n",
                    server_extra='authserv_id = "mx.example.org"\n')
    mid = hold(d)
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    forged_ar = "Authentication-Results: evil.example; dkim=pass header.d=example.org\r\n"
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve"), extra=forged_ar))
    wait_until(lambda: [m for r, m in sink.copies() if r == "mod@example.org"
                        and "requires a DKIM signature" in text_of(m.message)], what="the refusal")
    assert len(d.cli_json("queue")) == 1
    good_ar = "Authentication-Results: mx.example.org; dkim=pass (ok) header.d=example.org\r\n"
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve"), extra=good_ar))
    wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), what="delivery with a good signature")


def test_check_advises_require_dkim_once_the_moderators_replies_are_seen_signed(sink, make_daemon):
    d = make_daemon(sink, moderators=MODS, server_extra='authserv_id = "mx.example.org"\n')
    assert "warning" not in d.cli("check").stdout
    hold(d)
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    # a forged Authentication-Results (not our authserv_id) counts for nothing ...
    forged_ar = "Authentication-Results: evil.example; dkim=pass header.d=example.org\r\n"
    d.send("mod@example.org", MODERATION, reply("mod@example.org", "defer " + command_for(digest, "approve").split()[1],
                                                extra=forged_ar))
    wait_until(lambda: d.db().execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 1, what="the reply applied")
    assert "warning" not in d.cli("check").stdout
    # ... a passing DKIM result written by our own MTA does
    good_ar = "Authentication-Results: mx.example.org; dkim=pass (ok) header.d=example.org\r\n"
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve"), extra=good_ar))
    wait_until(lambda: d.db().execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 2, what="the reply applied")
    out = d.cli("check").stdout
    assert f"warning: {LIST}: require_dkim is off, but 1 of its moderators' replies carried a passing DKIM" in out
    assert "forged From with a leaked token" in out


def test_digests_wait_for_their_interval_unless_escalated_or_the_queue_is_long(tmp_path):
    from listmod.config import ListConfig
    from listmod.message import parse
    from listmod.moderation.digest import build_digest, digest_due, record_digest
    from listmod.posts import Judged, record_intake
    from listmod.rules import Decision
    from listmod.store import Store

    store = Store(tmp_path / "db.sqlite3", b"k" * 32)
    mlist = ListConfig(address=LIST, moderators=MODS, digest_every=3600, digest_max_items=5)

    def held(n, action="hold"):
        with store.transaction() as conn:
            raw = f"From: p{n}@example.net\r\nSubject: s{n}\r\nMessage-ID: <m{n}@t>\r\n\r\nx\r\n".encode()
            record_intake(conn, b"k" * 32, raw=raw, envelope_from=f"p{n}@example.net", rcpt_tos=[LIST],
                          peer="t", post=parse(raw, f"p{n}@example.net"),
                          judged=[Judged(mlist, Decision(action, "r", "rule", "src", "rules"))], at=now)

    now = 1_000_000.0
    conn = store.connect()
    held(1)
    assert digest_due(conn, mlist, now)                      # the first one: at once
    with store.transaction() as c:
        record_digest(c, build_digest(c, b"k" * 32, mlist, "h", now), now)
    held(2)
    assert not digest_due(conn, mlist, now + 60)             # within the hour: waits
    held(3, action="escalate")
    assert digest_due(conn, mlist, now + 60)                 # an escalation: at once
    with store.transaction() as c:
        record_digest(c, build_digest(c, b"k" * 32, mlist, "h", now + 60), now + 60)
    for n in range(4, 8):
        held(n)
    assert not digest_due(conn, mlist, now + 120)            # 7 held, but only 4 no digest showed
    held(8)                                                  # 5 new: a full digest's worth waits
    assert digest_due(conn, mlist, now + 120)
    with store.transaction() as c:
        record_digest(c, build_digest(c, b"k" * 32, mlist, "h", now + 120), now + 120)
    held(9)                                                  # a long queue alone sends nothing
    assert not digest_due(conn, mlist, now + 180)
    assert digest_due(conn, mlist, now + 120 + 3600)         # and any new post after the interval


def test_a_digest_reads_the_held_queue_through_its_indexes_however_long_it_is(tmp_path):
    """Found by the soak: a digest read every held post and every post decided since the last one
    (a store of 30,000 posts, 3,000 held: 120 ms a digest). Each of its reads now walks a partial
    index as far as it takes; no statement of build_digest or digest_due scans posts or threads or
    sorts them in a temporary tree."""
    from listmod.config import ListConfig
    from listmod.message import parse
    from listmod.moderation.digest import build_digest, digest_due, record_digest
    from listmod.posts import Judged, record_intake
    from listmod.rules import Decision
    from listmod.store import Store

    store = Store(tmp_path / "db.sqlite3", b"k" * 32)
    mlist = ListConfig(address=LIST, moderators=MODS, digest_max_items=5)
    now = 1_000_000.0
    with store.transaction() as conn:
        for n in range(40):
            raw = f"From: p{n}@example.net\r\nSubject: s{n}\r\nMessage-ID: <q{n}@t>\r\n\r\nx\r\n".encode()
            action = "escalate" if n == 7 else "hold" if n % 2 else "accept"
            record_intake(conn, b"k" * 32, raw=raw, envelope_from=f"p{n}@example.net", rcpt_tos=[LIST], peer="t",
                          post=parse(raw, f"p{n}@example.net"),
                          judged=[Judged(mlist, Decision(action, "r", "rule", "src", "rules"))], at=now + n)
    with store.transaction() as conn:
        first = build_digest(conn, b"k" * 32, mlist, "h", now + 100)
        record_digest(conn, first, now + 100)
    conn = store.connect()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    second = build_digest(conn, b"k" * 32, mlist, "h", now + 200)
    digest_due(conn, mlist, now + 200)
    conn.set_trace_callback(None)
    # the escalated post first, then the longest waiting; posts the first digest showed are older
    assert [p.id for p in first.posts][0] == 8 and len(first.posts) == 5   # the escalated one and 4 more
    assert len(second.posts) == 5 and not {p.id for p in second.posts} & {p.id for p in first.posts}
    checked = 0
    for sql in statements:
        if not sql.lstrip().upper().startswith("SELECT") or ("posts" not in sql and "threads" not in sql):
            continue
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN posts" not in plan and "SCAN p " not in plan and not plan.startswith("SCAN p") \
            and "SCAN threads" not in plan and "TEMP B-TREE" not in plan, f"{sql}\n  -> {plan}"
        checked += 1
    assert checked >= 6
