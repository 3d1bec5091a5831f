"""Deliverability: DMARC mitigation (munge or wrap) decided from real DNS answers — dnsmasq on
loopback serves the test domains' _dmarc records —, DKIM signatures on list copies, and archives
(an address and a Maildir) with List-Archive and Archived-At."""

from __future__ import annotations

import email
import email.policy

import dkim
import pytest
from conftest import LIST, MEMBERS, dkim_key_pair, free_port, post_bytes, wait_until
from servers import DnsServer

RECORDS = {
    "_dmarc.strict.example": "v=DMARC1; p=reject; rua=mailto:dmarc@strict.example",
    "_dmarc.quarantine.example": "v=DMARC1; p=quarantine",   # found for mail.quarantine.example too
    "_dmarc.relaxed.example": "v=DMARC1; p=none",
}
POSTERS = ["ann@strict.example", "quinn@mail.quarantine.example", "rae@relaxed.example"]


@pytest.fixture(scope="module")
def list_key():
    pem, record = dkim_key_pair()
    return pem.decode(), record


@pytest.fixture
def dns_server():
    server = DnsServer(free_port(), RECORDS, ("strict.example", "quarantine.example", "relaxed.example"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def verified(copy: bytes, public_record: bytes) -> bool:
    """The list's DKIM signature checked as a receiver would (the key record given in place of DNS)."""
    return dkim.verify(copy, dnsfunc=lambda name, timeout=5: public_record
                       if name == b"list._domainkey.example.org." else None)


def start(make_daemon, sink, dns_server, list_key, mitigation: str, extra: str = ""):
    return make_daemon(sink, members=[*MEMBERS, *POSTERS], files={"dkim.key": list_key[0]},
                       server_extra=f'nameservers = ["127.0.0.1:{dns_server.port}"]\n',
                       list_extra=f'dmarc_mitigation = "{mitigation}"\ndkim_selector = "list"\n'
                                  f'dkim_key = "dkim.key"\n{extra}')


def copies_of(sink, message_id: str, count: int):
    return wait_until(lambda: len(c := sink.copies_for(message_id)) >= count and c, 20, f"{count} copies")


def test_munge_rewrites_from_only_for_strict_domains_and_the_audit_says_why(make_daemon, sink, dns_server, list_key):
    d = start(make_daemon, sink, dns_server, list_key, "munge")
    members = len(MEMBERS) + len(POSTERS)
    for poster in POSTERS:
        d.send(poster, LIST, post_bytes(sender=f"Poster <{poster}>", message_id=f"<{poster}@test.example>",
                                        extra="Reply-To: team@example.net\r\n"))
    strict = copies_of(sink, "<ann@strict.example@test.example>", members)[0][1]
    org = copies_of(sink, "<quinn@mail.quarantine.example@test.example>", members)[0][1]
    relaxed = copies_of(sink, "<rae@relaxed.example@test.example>", members)[0][1]

    for copy, poster in ((strict, POSTERS[0]), (org, POSTERS[1])):
        m = copy.message
        assert m["From"] == f'Poster via dev <{LIST}>'
        assert m["Reply-To"] == f"team@example.net, {poster}"
        assert m["X-Original-From"] == f"Poster <{poster}>"
        assert verified(copy.content, list_key[1])
    assert relaxed.message["From"] == f"Poster <{POSTERS[2]}>" and relaxed.message["X-Original-From"] is None
    assert verified(relaxed.content, list_key[1])   # signed all the same

    applied = [r for r in d.cli_json("audit", "--only", "posts") if r["action"] == "dmarc-mitigated"]
    assert len(applied) == 2
    reasons = " | ".join(r["reason"] for r in applied)
    assert "strict.example publishes DMARC p=reject (at _dmarc.strict.example)" in reasons
    assert "mail.quarantine.example publishes DMARC p=quarantine (at _dmarc.quarantine.example)" in reasons
    assert "_dmarc.strict.example" in dns_server.log()     # asked the DNS server, as it would ask any
    assert d.cli("audit", "verify").returncode == 0


def test_wrap_sends_the_post_untouched_inside_a_message_from_the_list(make_daemon, sink, dns_server, list_key):
    d = start(make_daemon, sink, dns_server, list_key, "wrap")
    original = post_bytes(sender="Ann <ann@strict.example>", subject="Grüße", message_id="<wrapped@test.example>")
    d.send("ann@strict.example", LIST, original)
    copy = copies_of(sink, "<wrapped@test.example>", len(MEMBERS) + len(POSTERS))[0][1]
    outer = email.message_from_bytes(copy.content, policy=email.policy.default)
    assert outer["From"] == f'Ann via dev <{LIST}>' and outer["Reply-To"] == "ann@strict.example"
    assert outer.get_content_type() == "message/rfc822" and outer["Subject"] == "Grüße"
    assert outer["List-Id"] == "<dev.example.org>"
    assert original in copy.content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")   # byte for byte
    assert verified(copy.content, list_key[1])
    [record] = [r for r in d.cli_json("audit", "--only", "posts") if r["action"] == "dmarc-mitigated"]
    assert "wrapped (message/rfc822)" in record["reason"]


def test_a_policy_that_cannot_be_learnt_is_mitigated_and_says_so(make_daemon, sink, list_key):
    silent = free_port()   # no DNS server there: every lookup times out
    d = make_daemon(sink, members=[*MEMBERS, *POSTERS], files={"dkim.key": list_key[0]},
                    server_extra=f'nameservers = ["127.0.0.1:{silent}"]\n',
                    list_extra='dmarc_mitigation = "munge"\n')
    d.send("ann@strict.example", LIST, post_bytes(sender="ann@strict.example", message_id="<nodns@test.example>"))
    copy = copies_of(sink, "<nodns@test.example>", len(MEMBERS) + len(POSTERS))[0][1]
    assert copy.message["From"] == f'ann via dev <{LIST}>'
    [record] = [r for r in d.cli_json("audit", "--only", "posts") if r["action"] == "dmarc-mitigated"]
    assert "could not be learnt" in record["reason"]


def test_archives_get_the_copy_and_every_copy_names_the_archive(make_daemon, sink, tmp_path):
    maildir = tmp_path / "archive"
    d = make_daemon(sink, list_extra=(
        f'archive = ["archive@example.net", "maildir:{maildir}"]\n'
        'archive_url = "https://lists.example.org/dev/"\n'
        'archived_at = "https://lists.example.org/dev/{message_id}/"\n'))
    d.send("alice@example.org", LIST, post_bytes(message_id="<a/b?c@test.example>"))
    copies = copies_of(sink, "<a/b?c@test.example>", len(MEMBERS) + 1)
    assert sorted(r for r, _ in copies) == sorted([*MEMBERS, "archive@example.net"])
    for _, copy in copies:
        assert copy.message["List-Archive"] == "<https://lists.example.org/dev/>"
        assert copy.message["Archived-At"] == "<https://lists.example.org/dev/a%2Fb%3Fc@test.example/>"
    [stored] = wait_until(lambda: list((maildir / "new").glob("*")) if (maildir / "new").exists() else [], 15,
                          "the Maildir archive copy")
    assert b"Archived-At: <https://lists.example.org/dev/a%2Fb%3Fc@test.example/>" in stored.read_bytes()


def test_dkim_and_archive_settings_are_checked(make_daemon, sink, tmp_path):
    d = make_daemon(sink, start=False, members=[], files={"bad.key": "not a key"},
                    list_extra='dkim_selector = "list"\narchive = ["maildir:relative/dir"]\n'
                               'archived_at = "https://lists.example.org/{id}/"\n')
    problems = d.cli("check", check=False).stderr
    assert "dkim_selector and dkim_key go together" in problems
    assert "maildir:/absolute/path" in problems
    assert "the URL must contain {message_id}" in problems
    d.config_path.write_text(d.config_path.read_text().replace('dkim_selector = "list"',
                                                                'dkim_selector = "list"\ndkim_key = "bad.key"')
                             .replace("maildir:relative/dir", "maildir:/tmp/x").replace("{id}", "{message_id}"))
    problems = d.cli("check", check=False).stderr
    assert "is not a PEM private key" in problems and "openssl genrsa" in problems


def chunks(record: bytes) -> str:
    """A TXT value as dnsmasq takes it: strings of at most 255 characters, comma-separated."""
    text = record.decode()
    return ",".join(text[i:i + 250] for i in range(0, len(text), 250))


def test_doctor_checks_dns_and_that_the_published_dkim_key_verifies(make_daemon, sink, list_key):
    _other, wrong = dkim_key_pair()
    for published, healthy in ((list_key[1], True), (wrong, False)):
        server = DnsServer(free_port(), {**RECORDS, "list._domainkey.example.org": chunks(published)},
                           ("strict.example", "quarantine.example", "relaxed.example", "example.org"))
        server.start()
        try:
            d = make_daemon(sink, start=False, members=[], files={"dkim.key": list_key[0]},
                            server_extra=f'nameservers = ["127.0.0.1:{server.port}"]\n',
                            list_extra='dmarc_mitigation = "munge"\ndkim_selector = "list"\ndkim_key = "dkim.key"\n')
            result = d.cli("doctor", check=False)
        finally:
            server.stop()
        report = result.stdout + result.stderr
        assert "DMARC lookups for dev@example.org" in report and "DNS answers" in report
        if healthy:
            assert "the published key verifies it" in report, report
        else:
            assert "does not verify against list._domainkey.example.org" in report, report
            assert "publish the public key as a TXT record" in report
