"""Bounces: every delivery report in the corpus read with its recipient (RFC 3464 DSNs, broken ones,
the non-standard formats, ARF complaints), and through the daemon a member scored by permanent
failures (never by delays), disabled past the threshold, told, and re-enabled by confirming."""

from __future__ import annotations

import re
import time

import pytest
from conftest import DATA, LIST, MEMBERS, post_bytes, wait_until

from listmod.bounces import parse_report, verp_recipient

BOUNCES = DATA / "corpus" / "bounces"
BOUNCE_ADDRESS = "dev-bounces@example.org"
REQUEST = "dev-request@example.org"
BOB = MEMBERS[1]

# what each report says (its first recipient, whether it failed for good, how many recipients)
EXPECTED = {
    "017-cpython-msg-16.eml": ("jangel1@cougar.noc.ucla.edu", True, 1),
    "026-cpython-msg-25.eml": ("scoffman@wellpartner.com", True, 1),     # MIME broken: read from the text
    "044-cpython-msg-43.eml": ("xxxxxxx@dot.ca.gov", True, None),
    "053-flanker-broken-mime.eml": ("info@example.net", True, 1),        # "Delivery failed 10 attempts:"
    "054-flanker-delayed-broken.eml": ("demo@example.com", True, 1),     # Action: failed (Status 4.2.2)
    "055-flanker-delayed.eml": ("foo@example.com", True, 1),
    "056-flanker-gmail-invalid-address.eml": ("awfawfawfawfawfaw@someserverhere.com", True, 1),
    "057-flanker-gmail-no-dns.eml": ("user@example.comm", True, 1),
    "058-flanker-mailbox-full.eml": ("user@aol.com", True, 1),
    "059-flanker-no-mx.eml": ("user@example.com", False, 1),             # a delay
    "060-flanker-office365.eml": ("noname@example.com", True, 1),
    "061-flanker-zed.eml": ("asdfasdfasdfasdfasdfasdfewrqertrtyrthsfgdfgadfqeadvxzvz@gmail.com", True, 1),
    "146-rubymail-raw-email-with-mimepart-without-content-type.eml": ("larose.julie@courrier.uqam.ca", False, 1),
    "158-rubymail-multi-address-bounce1.eml": ("bbbbvhvbbvkjbhfbvbvjhb@gmail.com", True, None),
    "159-rubymail-multipart-report-multiple-status.eml": ("u@ci.com", True, 1),
    "160-rubymail-report-422.eml": ("fraser@oooooooo.com.au", False, 1),
    "161-rubymail-report-530.eml": ("edwin@zzzzzzz.com", True, 1),
}
COMPLAINTS = {"063-flanker-aol.eml": "redacted@aol.com", "064-flanker-yahoo.eml": "user@yahoo.com"}


def final_recipients(raw: bytes) -> set[str]:
    """The distinct Final-Recipient addresses, read independently of listmod's parser."""
    return {m.decode().lower() for m in re.findall(rb"(?im)^final-recipient:\s*rfc822;\s*<?([^>\s]+@[^>\s]+)>?",
                                                   raw)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_delivery_report_in_the_corpus_names_its_recipient(name):
    raw = (BOUNCES / name).read_bytes()
    report = parse_report(raw)
    first, permanent, count = EXPECTED[name]
    assert report.kind in ("dsn", "nonstandard")
    assert report.failures[0].recipient == first and report.failures[0].permanent is permanent
    expected = final_recipients(raw) or {first}
    assert {f.recipient for f in report.failures} == expected
    if count is not None:
        assert len(report.failures) == count


def test_the_corpus_is_covered_and_what_is_no_report_says_so():
    names = {p.name for p in BOUNCES.glob("*.eml")}
    assert names == set(EXPECTED) | set(COMPLAINTS) | {"005-cpython-msg-05.eml"}
    assert parse_report((BOUNCES / "005-cpython-msg-05.eml").read_bytes()).kind == "unknown"  # "Yadda yadda"
    for name, complainant in COMPLAINTS.items():
        report = parse_report((BOUNCES / name).read_bytes())
        assert (report.kind, report.feedback_type, report.complainant) == ("arf", "abuse", complainant)


def test_reports_that_break_the_parser_are_unknown_not_errors():
    for raw in (b"", b"\xff\xfe" * 1000, b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n" * 500,
                b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; \xc3\r\nAction: failed\r\n"):
        assert parse_report(raw).kind in ("unknown", "dsn")
    assert verp_recipient("dev-bounces+bob=example.org@example.org") == "bob@example.org"
    assert verp_recipient("dev-bounces@example.org") == ""


def dsn_for(address: str, name: str = "058-flanker-mailbox-full.eml", was: str = "user@aol.com") -> bytes:
    """A real DSN from the corpus, about `address` instead of the original recipient."""
    return (BOUNCES / name).read_bytes().replace(was.encode(), address.encode())


def members_row(d, address):
    return d.db().execute("SELECT COALESCE(bounce_score, 0), disabled_at FROM members WHERE list = ? AND address = ?",
                          (LIST, address)).fetchone()


def test_a_member_whose_mail_keeps_failing_is_disabled_told_and_re_enabled_by_confirming(sink, make_daemon):
    d = make_daemon(sink, list_extra='bounce_threshold = 2\nbounce_score_every = "1s"\n')
    d.send("", BOUNCE_ADDRESS, dsn_for(BOB))
    d.send("", BOUNCE_ADDRESS, dsn_for(BOB))          # the same moment: one point, not two
    assert members_row(d, BOB) == (1, None)
    d.send("", BOUNCE_ADDRESS, dsn_for(BOB, "059-flanker-no-mx.eml", "user@example.com"))   # a delay
    assert members_row(d, BOB) == (1, None)
    time.sleep(1.1)
    d.send("", "dev-bounces+bob=example.org@example.org", b"Subject: failed\r\n\r\nNo such user.\r\n")  # VERP
    score, disabled = members_row(d, BOB)
    assert score == 2 and disabled is not None

    d.send(MEMBERS[0], LIST, post_bytes(message_id="<after@test>"))
    wait_until(lambda: len(sink.copies_for("<after@test>")) == len(MEMBERS) - 1, 15, "copies")
    assert BOB not in [r for r, _ in sink.copies_for("<after@test>")]
    told = wait_until(lambda: [r for r in sink.handler.received if BOB in r.rcpt_tos
                               and (r.message["Subject"] or "").startswith("confirm ")], 15, "the notice")[0]
    assert "stopped sending" in told.message.get_payload(decode=True).decode()
    token = told.message["Subject"].split()[1]
    d.send(BOB, REQUEST, f"From: {BOB}\r\nSubject: Re: confirm {token}\r\n\r\n".encode())
    assert members_row(d, BOB) == (0, None)
    actions = [r["action"] for r in d.cli_json("audit", "--only", "people") if r["sender"] == BOB]
    assert actions == ["member-added", "bounce", "bounce", "member-disabled", "member-enabled"]


def test_a_complaint_is_recorded_and_the_owner_told(sink, make_daemon):
    d = make_daemon(sink)
    raw = (BOUNCES / "064-flanker-yahoo.eml").read_bytes().replace(b"user@yahoo.com", BOB.encode())
    d.send("", BOUNCE_ADDRESS, raw)
    [record] = [r for r in d.cli_json("audit", "--only", "people") if r["action"] == "complaint"]
    assert record["sender"] == BOB and "abuse" in record["reason"]
    told = wait_until(lambda: [r for r in sink.handler.received if "owner@example.org" in r.rcpt_tos], 15, "owner")
    assert BOB in told[0].message.get_payload(decode=True).decode()
    assert members_row(d, BOB) == (0, None)   # a complaint alone changes nothing but the record

