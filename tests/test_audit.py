"""The audit trail: append-only, HMAC-chained with a key outside the store, verifiable against
anchors, keyed pseudonyms instead of addresses, personal text erasable."""

import sqlite3

import pytest

from listmod import audit
from listmod.store import Store

KEY = b"s" * 32


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "db.sqlite3", secret=KEY)


def add(conn, n, sender="alice@example.org"):
    for i in range(n):
        audit.append(conn, b"s" * 32, list="dev@example.org", post=i, message_id=f"<{i}@x>",
                     sha256="0" * 64, sender=sender, action="accept", reason="fine", template="fine", rule="r",
                     source="rules/a.toml:1", actor="rules")


def test_a_fresh_chain_verifies_and_links_each_record_to_the_last(store):
    with store.transaction() as conn:
        add(conn, 5)
    conn = store.connect()
    result = audit.verify(conn, KEY)
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
    conn.execute("DROP TRIGGER audit_erase_only")   # someone with write access to the file
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("UPDATE audit SET action = 'reject' WHERE seq = 2")
    assert audit.verify(conn, KEY).problems == ("record 2: its content does not match its hash; it was altered",)
    conn.execute("UPDATE audit SET action = 'accept' WHERE seq = 2")
    conn.execute("DELETE FROM audit WHERE seq = 3")
    problems = audit.verify(conn, KEY).problems
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
    assert audit.verify(conn, KEY).ok
    assert [r.sender for r in audit.read(conn)] == list(stored) * 3


def test_a_chain_recomputed_without_the_key_does_not_verify(store):
    """Whoever can write the file can drop the triggers and recompute plain hashes; not the HMACs."""
    import hashlib
    import json
    with store.transaction() as conn:
        add(conn, 3)
    conn = store.connect()
    conn.execute("DROP TRIGGER audit_erase_only")
    conn.execute("UPDATE audit SET action = 'reject' WHERE seq = 2")
    prev = audit.GENESIS
    for row in conn.execute(f"SELECT {', '.join(audit.HASHED)} FROM audit ORDER BY seq").fetchall():
        fields = dict(zip(audit.HASHED, row, strict=True))
        fields["prev_hash"] = prev
        digest = hashlib.sha256(json.dumps([fields[k] for k in audit.HASHED]).encode()).hexdigest()
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, fields["seq"]))
        prev = digest
    problems = audit.verify(conn, KEY).problems
    assert all("was altered" in p for p in problems) and len(problems) == 3


def test_an_anchor_catches_a_cut_tail_that_the_chain_alone_cannot(store):
    with store.transaction() as conn:
        add(conn, 5)
    conn = store.connect()
    anchor = audit.head(conn)                     # as a receipt's Audit-Head header carries it
    assert anchor[0] == 5 and audit.parse_anchor(f"{anchor[0]}:{anchor[1]}") == anchor
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE seq >= 4")
    assert audit.verify(conn, KEY).ok             # a shorter chain is still a chain ...
    problems = audit.verify(conn, KEY, (anchor,)).problems
    assert problems == ("anchor 5: the chain has no record 5 (it ends at 3); records were cut from its end",)
    with pytest.raises(ValueError, match="SEQ:HASH"):
        audit.parse_anchor("5:not-a-hash")


def test_personal_text_may_be_blanked_but_not_changed(store):
    with store.transaction() as conn:
        add(conn, 3)
    conn = store.connect()
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET reason = 'something else' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET template = 'other' WHERE seq = 1")
    with store.transaction() as conn:
        assert audit.erase(conn, KEY, [2], actor="admin:root", reason="alice asked to be forgotten") == 1
    conn = store.connect()
    result = audit.verify(conn, KEY)
    assert result.ok and result.erased == 1 and result.records == 4
    records = list(audit.read(conn))
    assert records[1].reason == "" and records[1].erased == ("reason",)
    assert records[3].action == "erased" and records[3].actor == "admin:root"
    # with the trigger gone, an edit of the rendered reason is found (blanking is not)
    conn.execute("DROP TRIGGER audit_erase_only")
    conn.execute("UPDATE audit SET reason = 'approved' WHERE seq = 3")
    assert audit.verify(conn, KEY).problems == (
        "record 3: its reason was changed (only blanking it, to forget a person, is allowed)",)


def test_people_acting_are_pseudonyms_in_the_chain_and_addresses_when_read(store):
    with store.transaction() as conn:
        audit.append(conn, KEY, list="dev@example.org", post=None, message_id="", sha256="", sender="x@example.net",
                     action="refused", reason="a reply from x@example.net", template="a reply from {sender}",
                     rule="", source="mail command", actor="unverified:x@example.net")
    conn = store.connect()
    stored = conn.execute("SELECT actor, sender, template FROM audit").fetchone()
    assert stored[0] == "unverified:" + audit.pseudonym(KEY, "x@example.net") and "example" not in stored[0] + stored[1]
    assert next(audit.read(conn)).actor == "unverified:x@example.net"
    assert audit.verify(conn, b"t" * 32).problems  # another key: nothing verifies
