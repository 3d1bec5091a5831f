"""listmod behind a real Postfix on loopback, the two set-ups of docs/postfix.md.

Before-queue: Postfix's smtpd hands each transaction to listmod (smtpd_proxy_filter) while the
client waits, so listmod's 550 reaches the sending client and Postfix generates no bounce.
After-queue: Postfix queues first and hands the list's whole address family to listmod over LMTP
(transport_maps); a rejection is then mailed to the poster as listmod's own notice.
In both, listmod's outbound mail goes back through Postfix (a third smtpd) to the sink, and
OpenDKIM as Postfix's milter writes the Authentication-Results that rules read as `auth.dkim`."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from types import SimpleNamespace

import dkim
import pytest
from conftest import LIST, MEMBERS, dkim_key_pair, free_port, post_bytes, wait_until
from servers import OpenDkim, Postfix

AUTHSERV = "mx.example.test"
SELECTOR, SIGNING_DOMAIN = "s2026", "signed.example"
FAMILY = r"/^dev(-(moderation|request|owner|join|leave|bounces(\+.*)?))?@example\.org$/"

# a post this rule rejects; the rule reads what OpenDKIM wrote
RULES = """\
[[rule]]
id = "no-ads"
match.subject.contains = "buy now"
action = "reject"
reason = "Advertising is not allowed on this list."

[[rule]]
id = "dkim-signed"
match.auth.dkim.equals = "pass"
action = "accept"
reason = "Signed by its domain."

[[rule]]
id = "everyone-else"
match.sender.member = true
action = "accept"
reason = "A member's post."
"""


@pytest.fixture(scope="module")
def signing_key():
    pem, record = dkim_key_pair()
    return pem, record.decode()


@pytest.fixture
def mx(sink, make_daemon, tmp_path, signing_key):
    """Postfix with OpenDKIM in front of a listmod daemon (SMTP for before-queue, LMTP for after)."""
    milter = OpenDkim(free_port(), AUTHSERV, {f"{SELECTOR}._domainkey.{SIGNING_DOMAIN}": signing_key[1]})
    before, after, relay = free_port(), free_port(), free_port()
    smarthost = SimpleNamespace(port=relay)   # listmod sends its copies and notices through Postfix
    d = make_daemon(smarthost, lmtp=True, start=False,
                    members=[*MEMBERS, f"dora@{SIGNING_DOMAIN}"],
                    server_extra=f'authserv_id = "{AUTHSERV}"\nlmtp_rejects = "notice"\n')
    rules = d.dir / "rules"
    for old in rules.glob("*.toml"):
        old.unlink()
    (rules / "10-test.toml").write_text(RULES)
    d.start()
    postfix = Postfix(sink.port, main=f"""\
relay_domains = example.org
recipient_delimiter = +
transport_maps = regexp:{{config}}/transport
smtpd_milters = inet:127.0.0.1:{milter.port}
milter_default_action = tempfail
""", master=f"""\
127.0.0.1:{before} inet n - n - 10 smtpd
  -o smtpd_proxy_filter=127.0.0.1:{d.smtp_port}
  -o smtpd_proxy_options=speed_adjust
127.0.0.1:{after} inet n - n - - smtpd
127.0.0.1:{relay} inet n - n - - smtpd
  -o smtpd_milters=
""")
    postfix.main = postfix.main.replace("{config}", str(postfix.config_dir))
    postfix.config_dir.mkdir(parents=True, exist_ok=True)
    (postfix.config_dir / "transport").write_text(f"{FAMILY} lmtp:inet:127.0.0.1:{d.lmtp_port}\n")
    milter.start()
    try:
        postfix.start()
        yield SimpleNamespace(daemon=d, postfix=postfix, before=before, after=after, sink=sink)
    finally:
        try:
            postfix.cleanup()
        finally:
            milter.cleanup()


def swaks(port: int, message: bytes, sender: str = "alice@example.org", to: str = LIST) -> tuple[int, str]:
    """Send with swaks, as an admin would; its exit code (0 sent, 24 refused at DATA) and transcript."""
    done = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", sender, "--to", to,
                           "--data", "-", "--timeout", "30"],
                          input=message, capture_output=True, timeout=60)
    return done.returncode, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


def signed_post(pem: bytes, subject: str = "signed hello") -> bytes:
    message = post_bytes(sender=f"dora@{SIGNING_DOMAIN}", subject=subject)
    signature = dkim.sign(message, SELECTOR.encode(), SIGNING_DOMAIN.encode(), pem,
                          include_headers=[b"from", b"to", b"subject", b"message-id", b"date"])
    return signature + message


def bounces(sink) -> list:
    return [r for r in sink.handler.received if r.mail_from in ("", "<>")]


def test_before_queue_a_rejected_post_is_refused_to_the_client_and_nothing_bounces(mx):
    code, transcript = swaks(mx.before, post_bytes(subject="buy now, cheap"))
    assert code != 0 and "550 5.7.1" in transcript and "Advertising is not allowed" in transcript
    # Postfix logs the proxy's refusal of a transaction it never queued (NOQUEUE): nothing can bounce
    wait_until(lambda: "proxy-reject: END-OF-MESSAGE: 550 5.7.1" in mx.postfix.log(), 15,
               "Postfix's record of the refusal", state=lambda: mx.postfix.log()[-1500:])
    assert mx.postfix.queued() == [], mx.postfix.log()[-2000:]
    assert bounces(mx.sink) == [] and mx.sink.copies() == []
    assert [p["action"] for p in mx.daemon.cli_json("audit", "--only", "posts")] == ["reject"]


def test_before_queue_an_accepted_post_goes_back_through_postfix_to_every_member(mx):
    message_id = "<through-postfix@test.example>"
    code, transcript = swaks(mx.before, post_bytes(message_id=message_id))
    assert code == 0 and "250 2.0.0 Accepted for dev@example.org" in transcript
    wait_until(lambda: len(mx.sink.copies_for(message_id)) == len(MEMBERS) + 1, 30,
               "copies relayed by Postfix", state=lambda: mx.postfix.log()[-1500:])
    assert "relay=127.0.0.1" in mx.postfix.log()   # the copies did go through Postfix's queue


def test_after_queue_a_rejection_is_mailed_as_listmods_notice_and_postfix_bounces_nothing(mx):
    code, transcript = swaks(mx.after, post_bytes(subject="buy now, cheap"))
    assert code == 0   # Postfix queued it; listmod answers Postfix over LMTP
    notice = wait_until(lambda: [r for r in mx.sink.handler.received if "alice@example.org" in r.rcpt_tos],
                        30, "the rejection notice", state=lambda: mx.postfix.log()[-1500:])[0]
    assert "Advertising is not allowed" in notice.message.get_payload(decode=True).decode()
    assert notice.message["Auto-Submitted"] == "auto-replied"
    time.sleep(1)
    assert bounces(mx.sink) == [] and mx.postfix.queued() == []
    assert "status=sent" in mx.postfix.log() and "lmtp" in mx.postfix.log()


def test_after_queue_the_lists_address_family_reaches_listmod(mx):
    for to in ("dev-bounces@example.org", "dev-bounces+alice=example.org@example.org"):
        code, transcript = swaks(mx.after, post_bytes(subject="a bounce report"), sender="", to=to)
        assert code == 0, transcript
        wait_until(lambda: f"to=<{to}>" in mx.postfix.log() and "status=sent" in mx.postfix.log(),
                   30, f"delivery to {to} over LMTP", state=lambda: mx.postfix.log()[-1500:])
    assert "status=bounced" not in mx.postfix.log()
    assert len(mx.daemon.cli_json("audit", "--only", "posts")) == 2


def test_after_queue_opendkims_result_reaches_the_rules(mx, signing_key):
    code, transcript = swaks(mx.after, signed_post(signing_key[0]), sender=f"dora@{SIGNING_DOMAIN}")
    assert code == 0, transcript
    posts = wait_until(lambda: mx.daemon.cli_json("audit", "--only", "posts"), 30, "the signed post decided")
    assert [p["rule"] for p in posts] == ["dkim-signed"], posts
    with sqlite3.connect(mx.daemon.dir / "var/listmod.sqlite3") as db:
        stored = db.execute("SELECT raw FROM messages").fetchone()[0].decode()
    assert f"Authentication-Results: {AUTHSERV}" in stored and "dkim=pass" in stored


def test_before_queue_milters_see_no_content_so_no_dkim_result_reaches_listmod(mx, signing_key):
    """Postfix's documented limit (MILTER_README): with smtpd_proxy_filter, milters see only the
    SMTP commands. docs/postfix.md says so and points rules that read auth.* to after-queue."""
    code, transcript = swaks(mx.before, signed_post(signing_key[0]), sender=f"dora@{SIGNING_DOMAIN}")
    assert code == 0, transcript
    posts = mx.daemon.cli_json("audit", "--only", "posts")
    assert [p["rule"] for p in posts] == ["everyone-else"], posts
