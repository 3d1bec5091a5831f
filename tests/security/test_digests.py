"""Findings 3, 12 and 14: no held post stops the digests of other lists; a digest has a size cap and
shows older posts in one line; a digest waiting for an IMAP server that is down survives a restart."""

import time
from email import message_from_bytes
from email.policy import default

from conftest import LIST, free_port, post_bytes, wait_until
from test_slow_messages import nested

OTHER = "other@example.org"
OTHER_LIST = f'\n[[list]]\naddress = "{OTHER}"\nmoderators = ["mod@example.org"]\n'


def digests(d):
    folder = d.dir / "var" / "moderation-maildir" / "new"
    return [message_from_bytes(p.read_bytes(), policy=default)
            for p in sorted(folder.glob("*"), key=lambda p: p.stat().st_mtime)] if folder.exists() else []


def test_a_300_deep_multipart_held_on_one_list_does_not_stop_another_lists_digest(sink, make_daemon):
    d = make_daemon(None, extra_lists=OTHER_LIST, server_extra="max_mime_depth = 400\n")
    d.send("stranger@example.net", LIST, nested(300, subject="Innocent looking question"))
    wait_until(lambda: any("Innocent" in (x["Subject"] or "") or "held post" in (x["Subject"] or "")
                           for x in digests(d)), 15, "the deep post's digest")
    d.send("stranger@example.net", OTHER, post_bytes(sender="stranger@example.net", to=OTHER, subject="other list"))
    wait_until(lambda: any(x["Subject"].startswith(f"[{OTHER}]") for x in digests(d)), 15,
               "the other list's digest")
    deep = next(x for x in digests(d) if x["Subject"].startswith(f"[{LIST}]"))
    parts = list(deep.iter_parts())
    assert parts[0].get_content_type() == "text/plain" and len(parts) == 2


def test_a_digest_has_a_size_cap_and_later_posts_wait_for_the_next_one(sink, make_daemon):
    d = make_daemon(None, list_extra='digest_max_size = "100KB"\ndigest_every = "5s"\n')
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject="first"))
    wait_until(lambda: digests(d), 15, "a first digest")  # the next one waits for digest_every
    big = "x" * 70 + "\r\n"
    for n in range(6):
        d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject=f"big {n}",
                                                         body=big * 400))  # ~28 KB each
    second = wait_until(lambda: digests(d)[1:], 20, "the second digest")[0]
    assert len(second.as_bytes()) < 130_000
    text = next(second.iter_parts()).get_content()
    assert "3 more new post(s) wait for the next digest" in text
    assert "Still waiting (shown in an earlier digest), 1:" in text  # "first", in one line
    assert len(list(second.iter_parts())) - 1 == 3
    third = wait_until(lambda: digests(d)[2:], 20, "the third digest")[0]
    assert len(list(third.iter_parts())) - 1 == 3
    assert "Still waiting (shown in an earlier digest), 4:" in next(third.iter_parts()).get_content()


def test_a_digest_queued_during_an_imap_outage_survives_a_restart(sink, make_daemon):
    from servers import Dovecot
    from test_imap import folder_messages, imap_daemon

    dovecot = Dovecot(free_port(), "moderation", "s3cret")
    dovecot.start()
    try:
        d = imap_daemon(make_daemon, sink, dovecot)
        dovecot.stop()
        d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject="during outage"))
        wait_until(lambda: d.db().execute("SELECT COUNT(*) FROM outbox WHERE kind = 'digest' AND attempts > 0")
                   .fetchone()[0] == 1, 15, "the digest made and tried while IMAP is down")
        d.stop()
        d.start()
        wait_until(lambda: "the digest is kept and retried" in d.log(), 30, "a try after the restart")
        dovecot.start()
        back = time.monotonic()
        found = wait_until(lambda: folder_messages(dovecot, "Moderation"), 60, "the digest after the outage")
        assert time.monotonic() - back < 60
        assert "during outage" in next(found[0][0].iter_parts()).get_content()
    finally:
        dovecot.cleanup()
