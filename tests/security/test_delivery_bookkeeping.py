"""Findings 5, 6 and 7: a full disk never multiplies deliveries, the delivery journal survives torn
writes and stray bytes, and a 5xx from the smarthost is retried, then audited and reported, and can be
requeued with `listmod outbox retry`."""

import os
import subprocess
from collections import Counter

from conftest import LIST, MEMBERS, post_bytes, wait_until
from servers import fill_disk


def test_a_full_disk_during_delivery_delivers_every_copy_exactly_once(sink, make_daemon, tmp_path):
    d = make_daemon(sink, start=False)
    var = d.dir / "var"
    saved = {f.name: f.read_bytes() for f in var.iterdir() if f.name in ("listmod.sqlite3", "secret.key")}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(var)], check=True)
    try:
        for name, data in saved.items():
            (var / name).write_bytes(data)
            os.chmod(var / name, 0o600)
        for rcpt in MEMBERS:  # the smarthost holds every copy back at first
            sink.handler.answers[rcpt] = "451 4.3.0 try later"
        d.start()
        mids = []
        for n in range(6):
            mid = f"<full-{n}@t>"
            d.send("alice@example.org", LIST, post_bytes(message_id=mid))
            mids.append(mid)
        wait_until(lambda: d.db().execute("SELECT COUNT(*) FROM outbox WHERE kind = 'post' AND attempts > 0")
                   .fetchone()[0] == 6 * len(MEMBERS), 15, "every copy tried once")
        filler = var / "filler"
        # the disk fills up just as the smarthost says 250: after the answer, before our record of it
        sink.handler.before_250 = lambda: fill_disk(filler)
        sink.handler.answers.clear()
        wait_until(lambda: filler.exists(), 15, "the disk filled up")
        wait_until(lambda: "could not record the outcome" in d.log(), 15,
                   "the daemon to find it cannot record what the smarthost accepted")
        filler.unlink()
        wait_until(lambda: all(len(sink.copies_for(m)) >= len(MEMBERS) for m in mids), 60, "every copy")
        d.stop()  # and after a restart nothing is sent again
        d.start()
        wait_until(d.outbox_idle, 15, "the outbox idle after the restart")
        counts = Counter((rcpt, r.message["Message-ID"]) for rcpt, r in sink.copies())
        assert set(counts.values()) == {1}, sorted(k for k, v in counts.items() if v > 1)   # notices too
        assert len([k for k in counts if k[1] in mids]) == 6 * len(MEMBERS)
    finally:
        d.stop()
        subprocess.run(["umount", "-l", str(var)])


def test_a_torn_or_garbled_journal_never_counts_as_sent(sink, make_daemon):
    d = make_daemon(sink)
    for rcpt in MEMBERS:
        sink.handler.answers[rcpt] = "451 4.3.0 try later"
    mid = "<torn@t>"
    d.send("alice@example.org", LIST, post_bytes(message_id=mid))
    wait_until(lambda: d.db().execute("SELECT COUNT(*) FROM outbox WHERE attempts > 0").fetchone()[0]
               >= len(MEMBERS), 15, "the copies tried")
    d.kill9()
    ids = [r[0] for r in d.db().execute("SELECT id FROM outbox WHERE kind = 'post' ORDER BY id")]
    journal = d.dir / "var" / "delivered.journal"
    # a torn last record naming the first copy, and bytes that are no text at all
    journal.write_bytes(b"\xff\xfe garbage \x80\n" + str(ids[0]).encode())
    sink.handler.answers.clear()
    d.start()
    wait_until(lambda: len(sink.copies_for(mid)) == len(MEMBERS), 20, "every member's copy")
    d.send("alice@example.org", LIST, post_bytes(message_id="<after@t>"))  # the outbox still runs
    wait_until(lambda: len(sink.copies_for("<after@t>")) == len(MEMBERS), 20, "the next post delivered")


def test_a_5xx_for_the_whole_message_is_retried_then_reported_and_can_be_requeued(sink, make_daemon):
    d = make_daemon(sink, outbound_extra='refused_retry_for = "3s"\n')
    sink.handler.data_answers = ["554 5.7.1 content refused (once)"]
    d.send("alice@example.org", LIST, post_bytes(message_id="<once@t>"))
    wait_until(lambda: len(sink.copies_for("<once@t>")) == len(MEMBERS), 20, "delivery after one 554")
    sink.handler.data_always = "554 5.7.1 content refused"
    d.send("alice@example.org", LIST, post_bytes(message_id="<never@t>"))
    records = wait_until(lambda: [r for r in d.cli_json("audit", "--only", "posts") if r["action"] == "undelivered"], 30,
                         "the copies given up and audited")
    assert "554 5.7.1 content refused" in records[0]["reason"]
    failed = d.cli_json("outbox", "--failed")
    assert len(failed) == len(MEMBERS) and all("554" in f["last_error"] for f in failed)
    notices = lambda: [r for r in sink.copies() if r[0] == "owner@example.org"]  # noqa: E731
    sink.handler.data_always = None
    d.cli("outbox", "retry", "--failed")
    wait_until(lambda: len(sink.copies_for("<never@t>")) == len(MEMBERS), 20, "delivery after requeue")
    wait_until(notices, 20, "the owner's notice")
    assert "not delivered" in notices()[0][1].message["Subject"]
