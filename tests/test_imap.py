"""Moderation through a real Dovecot: digests APPENDed to the moderators' folder, replies read with
IDLE, applied once, receipted, moved to the processed folder; outages and restarts lose nothing."""

import re
import time
from email import message_from_bytes
from email.policy import default

from conftest import LIST, MEMBERS, post_bytes, wait_until
from imapclient import IMAPClient

MODS = ("mod@example.org", "mod2@example.org")


def imap(server) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    client.login(server.user, server.password)
    return client


def folder_messages(server, folder):
    client = imap(server)
    try:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        fetched = client.fetch(uids, ["RFC822", "FLAGS"]) if uids else {}
        return [(message_from_bytes(v[b"RFC822"], policy=default), v[b"FLAGS"]) for _, v in sorted(fetched.items())]
    finally:
        client.logout()


def deliver_reply(server, raw: bytes) -> None:
    """What the MTA does with a moderator's reply: put it in the moderation mailbox."""
    client = imap(server)
    try:
        client.append("INBOX", raw)
    finally:
        client.logout()


def imap_daemon(make_daemon, sink, server, **kw):
    extra = (f'\n[imap]\nhost = "127.0.0.1"\nport = {server.port}\nusername = "{server.user}"\n'
             f'password_file = "imap.secret"\npoll_every = "1s"\n')
    return make_daemon(sink, moderators=MODS, server_extra=extra,
                       files={"imap.secret": server.password + "\n"}, **kw)


def reply_to(digest, frm, text, message_id=None):
    mid = message_id or f"<r{time.time_ns()}@client.example>"
    return (f"From: {frm}\r\nTo: dev-moderation@example.org\r\nSubject: Re: {digest['Subject']}\r\n"
            f"Message-ID: {mid}\r\nIn-Reply-To: {digest['Message-ID']}\r\nReferences: {digest['Message-ID']}\r\n"
            f"\r\n{text}\r\n\r\nOn Wed, dev moderation wrote:\r\n> {digest['Subject']}\r\n").encode()


def approve_line(digest, n=1):
    text = next(digest.iter_parts()).get_content()
    return [l.strip() for l in text.splitlines() if l.strip().startswith("approve ")][n - 1]


def test_digest_in_imap_and_an_approve_reply_delivers_and_is_filed(sink, make_daemon, dovecot):
    d = imap_daemon(make_daemon, sink, dovecot)
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id="<i1@t>"))
    digest, _ = wait_until(lambda: folder_messages(dovecot, "Moderation"), 20, "the digest in IMAP")[0]
    assert digest.get_content_type() == "multipart/digest"
    assert [p.get_content_type() for p in digest.iter_parts()] == ["text/plain", "message/rfc822"]
    deliver_reply(dovecot, reply_to(digest, "mod@example.org", approve_line(digest)))
    wait_until(lambda: len(sink.copies_for("<i1@t>")) == len(MEMBERS), 20, "delivery after the reply")
    for moderator in MODS:
        wait_until(lambda: [1 for r, m in sink.copies() if r == moderator and m.message["Subject"].startswith("Re:")],
                   what=f"the receipt for {moderator}")
    processed = wait_until(lambda: folder_messages(dovecot, "Processed"), what="the reply filed")
    assert b"\\Flagged" in processed[0][1]
    assert folder_messages(dovecot, "INBOX") == []


def test_an_outage_of_the_imap_server_loses_nothing_and_applies_nothing_twice(sink, make_daemon, dovecot):
    d = imap_daemon(make_daemon, sink, dovecot, list_extra='digest_every = "1s"\n')
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id="<o1@t>"))
    first, _ = wait_until(lambda: folder_messages(dovecot, "Moderation"), 20, "the first digest")[0]
    dovecot.stop()
    d.send("other@example.net", LIST, post_bytes(sender="other@example.net", message_id="<o2@t>"))
    wait_until(lambda: "the digest is kept and retried" in d.log(), 20,
               "the daemon to try the digest and find the server gone")
    dovecot.start()
    digests = wait_until(lambda: len(folder_messages(dovecot, "Moderation")) >= 2 and
                         folder_messages(dovecot, "Moderation"), 40, "the digest made during the outage")
    latest = digests[-1][0]
    token = re.search(r"approve all ([A-Z2-7]{8})", next(latest.iter_parts()).get_content()).group(1)
    reply = reply_to(latest, "mod@example.org", f"approve all {token}", message_id="<same-reply@client.example>")
    deliver_reply(dovecot, reply)
    for mid in ("<o1@t>", "<o2@t>"):
        wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), 30, f"delivery of {mid}")
    # the daemon restarts; the same reply is delivered to the mailbox again, and a second reply arrives
    d.stop()
    deliver_reply(dovecot, reply)
    d.start()
    d.send("third@example.net", LIST, post_bytes(sender="third@example.net", message_id="<o3@t>"))
    third = wait_until(lambda: [m for m, _ in folder_messages(dovecot, "Moderation")
                                if "third@example.net" in next(m.iter_parts()).get_content()], 30,
                       "a digest with the third post")[-1]
    deliver_reply(dovecot, reply_to(third, "mod2@example.org", approve_line(third)))
    wait_until(lambda: len(sink.copies_for("<o3@t>")) == len(MEMBERS), 30, "delivery of the third")
    wait_until(lambda: len(folder_messages(dovecot, "Processed")) == 3, 20, "all replies filed")
    for mid in ("<o1@t>", "<o2@t>", "<o3@t>"):
        assert len(sink.copies_for(mid)) == len(MEMBERS)  # once each
    actions = [(r["actor"], r["action"]) for r in d.cli_json("audit", "--only", "posts") if r["actor"].startswith("moderator:")]
    assert actions.count(("moderator:mod@example.org", "accept")) == 2
    assert ("moderator:mod@example.org", "refused") in actions  # the replayed reply, answered
