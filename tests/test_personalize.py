"""Personalised lists: one copy per member with a VERP envelope that names the member in bounces, an
RFC 8058 one-click List-Unsubscribe URL served by listmod's HTTP listener (a GET changes nothing; the
POST with the RFC 8058 body unsubscribes), DKIM signed over List-Unsubscribe and -Post; confirmation
mails carry a link that confirms on POST."""

from __future__ import annotations

import http.client
import re
from urllib.parse import urlsplit

import dkim
from conftest import LIST, MEMBERS, dkim_key_pair, free_port, post_bytes, wait_until

BOB = MEMBERS[1]


def key_pair():
    pem, record = dkim_key_pair()
    return pem.decode(), record


def request(port: int, method: str, path: str, body: str = "") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    conn.request(method, path, body=body.encode() if body else None, headers=headers)
    response = conn.getresponse()
    return response.status, response.read().decode()


def personal_daemon(make_daemon, sink, pem):
    port = free_port()
    d = make_daemon(sink, files={"dkim.key": pem},
                    server_extra=f'http = "127.0.0.1:{port}"\nbase_url = "https://lists.example.org/lm"\n',
                    list_extra='personalize = true\ndkim_selector = "list"\ndkim_key = "dkim.key"\n')
    return d, port


def test_each_member_gets_a_personal_copy_and_one_click_unsubscribe_works(sink, make_daemon):
    pem, record = key_pair()
    d, port = personal_daemon(make_daemon, sink, pem)
    d.send(MEMBERS[0], LIST, post_bytes(message_id="<p1@test>"))
    copies = wait_until(lambda: len(c := sink.copies_for("<p1@test>")) == len(MEMBERS) and c, 15, "copies")
    urls = {}
    for rcpt, copy in copies:
        user, domain = rcpt.split("@")
        assert copy.rcpt_tos == [rcpt]                                     # one transaction per member
        assert copy.mail_from == f"dev-bounces+{user}={domain}@example.org"   # VERP
        header = copy.message["List-Unsubscribe"]
        url = re.match(r"<(https://lists\.example\.org/lm/unsubscribe/[^>]+)>, <mailto:dev-request@example.org", header)
        assert url, header
        urls[rcpt] = url.group(1)
        assert copy.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert rcpt not in header                                          # the URL names no address
        signature = copy.message["DKIM-Signature"]
        assert "list-unsubscribe" in signature and "list-unsubscribe-post" in signature
        assert dkim.verify(copy.content, dnsfunc=lambda name, timeout=5: record)
    assert len(set(urls.values())) == len(MEMBERS)

    path = urlsplit(urls[BOB]).path.removeprefix("/lm")      # the reverse proxy strips its prefix
    status, page = request(port, "GET", path)                # a link scanner: nothing changes
    assert status == 200 and "<form method='post'" in page
    assert BOB in d.cli("members", "list", LIST).stdout
    assert request(port, "POST", path, "List-Unsubscribe=Nope")[0] == 400
    status, page = request(port, "POST", path, "List-Unsubscribe=One-Click")   # RFC 8058
    assert status == 200 and "no more mail" in page
    assert BOB not in d.cli("members", "list", LIST).stdout
    [record] = [r for r in d.cli_json("audit", "--only", "people") if r["action"] == "member-removed"]
    assert record["source"] == "one-click unsubscribe (RFC 8058)" and record["sender"] == BOB
    forged = path[:-4] + ("0000" if not path.endswith("0000") else "1111")
    assert request(port, "POST", forged, "List-Unsubscribe=One-Click")[0] == 404


def test_a_bounce_to_a_verp_address_scores_the_member_it_names(sink, make_daemon):
    pem, _ = key_pair()
    d, _port = personal_daemon(make_daemon, sink, pem)
    d.send("", "dev-bounces+bob=example.org@example.org",
           b"From: MAILER-DAEMON@example.net\r\nSubject: failure notice\r\n\r\nSorry, no mailbox here.\r\n")
    assert d.db().execute("SELECT bounce_score FROM members WHERE address = ?", (BOB,)).fetchone()[0] == 1


def test_a_confirmation_link_confirms_on_post(sink, make_daemon):
    pem, _ = key_pair()
    d, port = personal_daemon(make_daemon, sink, pem)
    newcomer = "newcomer@example.net"
    d.send(newcomer, "dev-request@example.org", f"From: {newcomer}\r\nSubject: subscribe\r\n\r\n".encode())
    mail = wait_until(lambda: [r for r in sink.handler.received if newcomer in r.rcpt_tos], 15, "the confirmation")[0]
    link = re.search(r"https://lists\.example\.org/lm(/confirm/[a-z0-9]+)", mail.message.get_payload(decode=True).decode())
    assert link
    status, page = request(port, "GET", link.group(1))
    assert status == 200 and newcomer not in d.cli("members", "list", LIST).stdout
    status, page = request(port, "POST", link.group(1))
    assert status == 200 and "Confirmed" in page
    assert newcomer in d.cli("members", "list", LIST).stdout
    assert request(port, "POST", link.group(1))[0] == 404     # used up
