"""kill -9 under load: nothing that got 250 is lost, and nobody gets a post twice."""

import smtplib
import threading
import time
from collections import Counter

import pytest
from conftest import LIST, MEMBERS, load_test_rules, post_bytes, wait_until

POSTS = 2000
CLIENTS = 8


class Client(threading.Thread):
    """Sends its share of posts over one connection; reconnects (bounded) when the daemon dies."""

    def __init__(self, number: int, daemon, acked: set, unknown: set, lock: threading.Lock):
        super().__init__(daemon=True)
        self.number, self.d, self.acked, self.unknown, self.lock = number, daemon, acked, unknown, lock

    def connect(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.d.smtp()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def run(self):
        s = self.connect()
        for i in range(POSTS // CLIENTS):
            mid = f"<crash-{self.number}-{i}@test>"
            # every tenth post is from a non-member: it must be held, never delivered
            sender = "stranger@example.net" if i % 10 == 9 else MEMBERS[i % len(MEMBERS)]
            try:
                s.sendmail(sender, [LIST], post_bytes(sender=sender, message_id=mid, body="x" * 800))
                with self.lock:
                    self.acked.add(mid)
            except (smtplib.SMTPException, OSError):
                with self.lock:
                    self.unknown.add(mid)  # no 250 seen: the sender's MTA would retry; we don't
                try:
                    s.close()
                except Exception:
                    pass
                s = self.connect()
        s.quit()


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_that_got_250_and_delivers_each_post_once(sink, make_daemon,
                                                                                 tmp_path):
    d = make_daemon(sink, rules_dir=load_test_rules(tmp_path))
    acked, unknown, lock = set(), set(), threading.Lock()
    clients = [Client(n, d, acked, unknown, lock) for n in range(CLIENTS)]
    for c in clients:
        c.start()

    wait_until(lambda: len(acked) >= POSTS // 3, 60, "a third of the posts acknowledged")
    d.kill9()
    killed_at_acked = len(acked)
    # what was on its way to the sink when the daemon died: the only copies allowed twice
    # (less those the delivery journal shows the sink had already accepted)
    from listmod.delivery.outbox import DeliveryJournal
    journaled = set(DeliveryJournal.read(d.dir / "var" / "delivered.journal"))
    in_flight = {(mid, rcpt) for copy, mid, rcpt in d.db().execute(
        "SELECT o.id, p.message_id, o.recipient FROM outbox o JOIN posts p ON p.id = o.post "
        "WHERE o.state = 'sending'").fetchall() if copy not in journaled}
    d.start()
    for c in clients:
        c.join(120)
        assert not c.is_alive(), "a client did not finish"
    assert killed_at_acked < len(acked) < POSTS + 1, "the kill did not land in the middle of the load"

    conn = d.db()
    wait_until(lambda: conn.execute("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')")
               .fetchone()[0] == 0, 120, "the outbox to drain")

    # 1. every message that got 250 is stored with a decision and an audit record
    decided = dict(conn.execute("SELECT message_id, state FROM posts").fetchall())
    audited = {m for (m,) in conn.execute("SELECT message_id FROM audit")}
    missing = acked - set(decided)
    assert not missing, f"{len(missing)} acknowledged messages are not in the store: {sorted(missing)[:5]}"
    assert acked <= audited
    for mid in acked:
        expected = "held" if mid.endswith(tuple(f"-{i}@test>" for i in range(9, 250, 10))) else "accepted"
        assert decided[mid] == expected, (mid, decided[mid])

    # 2. every accepted post reached every member exactly once (but for copies in flight at the kill)
    # (members' copies only: the moderators also receive digests of the held posts, and the poster
    # a notice when her approved posts promote her)
    copies = Counter((r.message["Message-ID"], rcpt) for rcpt, r in sink.copies()
                     if rcpt in MEMBERS and not r.message["Auto-Submitted"])
    accepted = [m for m, state in decided.items() if state == "accepted"]
    for mid in accepted:
        for member in MEMBERS:
            n = copies[(mid, member)]
            assert n >= 1, f"{mid} never reached {member}"
            if n > 1:
                assert (mid, member) in in_flight and n == 2, f"{mid} reached {member} {n} times"
    # 3. nothing that was not accepted reached anyone
    assert {mid for mid, _ in copies} <= set(accepted)

    # 4. the audit chain survived the crash
    assert "chain intact" in d.cli("audit", "verify").stdout
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    print(f"\nacked {len(acked)}, unknown {len(unknown)}, accepted {len(accepted)}, "
          f"copies {sum(copies.values())}, in flight at kill {len(in_flight)}, duplicates {duplicates}")
