"""Every message of the real-world corpus gets a decision through the live daemon; none crashes it."""

import re
import smtplib
from collections import Counter

from conftest import DATA, LIST, wait_until

CORPUS = sorted((DATA / "corpus").glob("*/*.eml"))


def as_sent_by_an_mta(raw: bytes) -> bytes:
    """MTAs hand over CRLF lines; the corpus keeps each file's own line endings."""
    return re.sub(rb"\r?\n", b"\r\n", raw)


def envelope_sender(raw: bytes) -> str:
    """Replay as the MTA received it: a recorded Return-Path is the envelope sender."""
    found = re.search(rb"^Return-Path:\s*<([^>]*)>", raw, re.MULTILINE | re.IGNORECASE)
    return found.group(1).decode("ascii", "replace") if found else "alice@example.org"


def test_the_corpus_is_present():
    kinds = Counter(p.parent.name for p in CORPUS)
    assert len(CORPUS) >= 200, "tests/data/corpus is incomplete"
    assert set(kinds) >= {"mime", "charsets", "broken", "bounces", "autoreplies", "spam", "ham", "large"}


def test_every_corpus_message_gets_a_decision_and_none_crashes_intake(sink, make_daemon):
    # an open list, so that ordinary mail is delivered and odd MIME goes through delivery too
    d = make_daemon(sink, max_message_size="4MB", list_extra='default_nonmember_action = "accept"\n')
    answers = {}
    with d.smtp() as s:
        for path in CORPUS:
            try:
                raw = path.read_bytes()
                s.sendmail(envelope_sender(raw), [LIST], as_sent_by_an_mta(raw))
                answers[path.name] = 250
            except smtplib.SMTPDataError as err:
                answers[path.name] = err.smtp_code
    assert d.proc.poll() is None, d.log()
    assert set(answers.values()) <= {250, 550}, Counter(answers.values())

    conn = d.db()
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == len(CORPUS)
    decisions = Counter(a for (a,) in conn.execute("SELECT action FROM audit WHERE post IS NOT NULL"))
    assert sum(decisions.values()) == len(CORPUS)
    assert all(reason for (reason,) in conn.execute("SELECT reason FROM audit WHERE post IS NOT NULL"))
    assert d.cli("audit", "verify").returncode == 0

    by_name = {}
    for name, (action, rule) in zip([p.name for p in CORPUS], conn.execute(
            "SELECT action, rule FROM audit WHERE post IS NOT NULL ORDER BY seq"), strict=True):
        by_name[name] = (action, rule)
    # what a list admin would expect of some well-known kinds
    assert by_name["203-spamassassin-sample-spam.eml"] == ("discard", "gtube")
    assert by_name["205-sisimai-rfc3834-01.eml"][1] == "auto-reply"
    assert by_name["056-flanker-gmail-invalid-address.eml"][1] == "bounce"
    assert by_name["073-flanker-false-multipart.eml"] == ("hold", "unparseable")
    assert decisions["accept"] > 100  # ordinary mail goes through
    wait_until(lambda: conn.execute("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')")
               .fetchone()[0] == 0, 60, "every accepted corpus message delivered")
    assert conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'failed'").fetchone()[0] == 0
