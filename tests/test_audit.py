"""The audit trail: append-only, hash-chained, verifiable, and keyed pseudonyms instead of addresses."""

import sqlite3

import pytest

from listmod import audit
from listmod.store import Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "db.sqlite3", secret=b"s" * 32)


def add(conn, n, sender="alice@example.org"):
    for i in range(n):
        audit.append(conn, b"s" * 32, list="dev@example.org", post=i, message_id=f"<{i}@x>",
                     sha256="0" * 64, sender=sender, action="accept", reason="fine", rule="r",
                     source="rules/a.toml:1", actor="rules")


def test_a_fresh_chain_verifies_and_links_each_record_to_the_last(store):
    with store.transaction() as conn:
        add(conn, 5)
    conn = store.connect()
    result = audit.verify(conn)
    assert result.ok and result.records == 5
    rows = conn.execute("SELECT prev_hash, hash FROM audit ORDER BY seq").fetchall()
    assert rows[0][0] == audit.GENESIS
    assert all(rows[i][0] == rows[i - 1][1] for i in range(1, 5))


def test_the_table_refuses_updates_and_deletes(store):
    with store.transaction() as conn:
        add(conn, 2)
    conn = store.connect()
    for sql in ("UPDATE audit SET reason = 'other' WHERE seq = 1", "DELETE FROM audit WHERE seq = 2"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)


def test_verify_finds_an_altered_or_removed_record(store):
    with store.transaction() as conn:
        add(conn, 4)
    conn = store.connect()
    conn.execute("DROP TRIGGER audit_no_update")   # someone with write access to the file
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("UPDATE audit SET action = 'reject' WHERE seq = 2")
    assert audit.verify(conn).problems == ("record 2: its content does not match its hash; it was altered",)
    conn.execute("UPDATE audit SET action = 'accept' WHERE seq = 2")
    conn.execute("DELETE FROM audit WHERE seq = 3")
    problems = audit.verify(conn).problems
    assert any("records are missing" in p for p in problems)
    assert any("prev_hash does not match" in p for p in problems)


def test_addresses_stay_out_of_the_chain_and_forgetting_keeps_it_verifiable(store):
    with store.transaction() as conn:
        add(conn, 3, sender="alice@example.org")
    conn = store.connect()
    stored = {s for (s,) in conn.execute("SELECT sender FROM audit")}
    assert stored == {audit.pseudonym(b"s" * 32, "alice@example.org")}
    assert "alice" not in next(iter(stored))
    assert [r.sender for r in audit.read(conn)] == ["alice@example.org"] * 3
    conn.execute("DELETE FROM people")  # forget the person
    assert audit.verify(conn).ok
    assert [r.sender for r in audit.read(conn)] == list(stored) * 3
