"""The audit trail as an admin and an auditor use it: every human act is a record with its actor and
reason; digests and receipts carry the chain's head, and a head taken from a receipt catches a cut
or rewritten chain; a store made by an earlier version is upgraded in place and still verifies."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3

from conftest import DATA, LIST, post_bytes, wait_until
from test_moderation import MODERATION, command_for, digests, reply, text_of

from listmod.store import SCHEMA_VERSION

OLD_STORE = DATA / "stores" / "3c3613f"


def test_members_standing_and_a_strangers_reply_are_records_with_actor_and_reason(sink, make_daemon):
    d = make_daemon(sink, members=["alice@example.org"])
    d.cli("members", "remove", LIST, "alice@example.org", "--reason", "asked to leave")
    d.cli("trust", LIST, "spam@example.net", "--level", "banned", "--reason", "sold watches twice")
    missing = d.cli("trust", LIST, "bob@example.org", check=False)
    assert missing.returncode == 2 and "--reason" in missing.stderr
    d.send("stranger@example.net", MODERATION, reply("stranger@example.net", "approve K7Q2-ABCDEFGH"))
    refused = wait_until(lambda: [r for r in d.cli_json("audit") if r["action"] == "refused"], what="the refusal")
    people = d.cli_json("audit", "--only", "people")
    me = people[0]["actor"]
    assert me.startswith("admin:")
    assert [(r["action"], r["sender"], r["actor"], r["reason"]) for r in people] == [
        ("member-added", "alice@example.org", me, "A member was added to dev@example.org."),
        ("member-removed", "alice@example.org", me, "asked to leave"),
        ("banned", "spam@example.net", me, "sold watches twice")]
    assert refused[0]["actor"] == "unverified:stranger@example.net"
    assert "not a moderator" in refused[0]["reason"]
    config = d.cli_json("audit", "--only", "config")
    assert [r["action"] for r in config] == ["config-loaded", "moderator-added", "owner-added", "rules-loaded"]
    assert config[1]["sender"] == "mod@example.org" and config[0]["ruleset"] == hashlib.sha256(
        d.config_path.read_bytes()).hexdigest()
    # in the store itself, no address sits in a hashed field
    stored = d.db().execute("SELECT actor, sender, template FROM audit").fetchall()
    assert not any("@" in field for row in stored for field in row)
    assert "chain intact" in d.cli("audit", "verify").stdout


def test_a_head_from_a_receipt_catches_a_cut_tail_and_a_rewritten_record(sink, make_daemon):
    d = make_daemon(sink)
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject="first"))
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    seq, digest_head = str(digest["Audit-Head"]).split()
    assert int(seq) >= 1 and len(digest_head) == 64
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve")))
    receipt = wait_until(lambda: [m.message for r, m in sink.copies() if r == "mod@example.org"
                                  and "sent these commands" in text_of(m.message)], what="the receipt")[0]
    anchor = ":".join(receipt["Audit-Head"].split())
    assert d.cli("audit", "head").stdout.split()[0] >= anchor.split(":")[0]
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject="second"))
    wait_until(lambda: len(d.cli_json("queue")) == 1, what="the second post held")
    assert "anchor(s) hold" in d.cli("audit", "verify", "--anchor", anchor).stdout
    d.stop()
    conn = d.db()
    conn.execute("DROP TRIGGER audit_no_delete")   # someone with write access to the file
    cut = int(anchor.split(":")[0])
    conn.execute("DELETE FROM audit WHERE seq >= ?", (cut,))
    conn.commit()
    assert d.cli("audit", "verify").returncode == 0  # without a witness a shorter chain looks whole
    result = d.cli("audit", "verify", "--anchor", anchor, check=False)
    assert result.returncode == 1 and "records were cut from its end" in result.stdout


def test_an_edited_reason_is_tampering_and_a_blanked_one_is_erasure(sink, make_daemon):
    d = make_daemon(sink)
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net"))
    d.send("alice@example.org", LIST, post_bytes(sender="alice@example.org"))
    wait_until(lambda: len(d.cli_json("audit", "--only", "posts")) == 2, what="two decisions")
    d.stop()
    conn = d.db()
    seq = conn.execute("SELECT seq FROM audit WHERE action = 'hold'").fetchone()[0]
    conn.execute("UPDATE audit SET reason = '' WHERE seq = ?", (seq,))  # the trigger allows this
    conn.commit()
    verified = json.loads(d.cli("audit", "verify", "--json").stdout)
    assert verified["ok"] and verified["erased"] == 1
    assert [r for r in d.cli_json("audit", "--only", "posts") if r["seq"] == seq][0]["erased"] == ["reason"]
    conn.execute("DROP TRIGGER audit_erase_only")
    conn.execute("UPDATE audit SET action = 'accept' WHERE seq = ?", (seq,))
    conn.execute("UPDATE audit SET reason = 'Approved.' WHERE action = 'accept' AND seq != ?", (seq,))
    conn.commit()
    result = d.cli("audit", "verify", check=False)
    assert result.returncode == 1
    assert f"record {seq}: its content does not match its hash" in result.stdout
    assert "its reason was changed" in result.stdout


def _old_store_daemon(make_daemon, sink):
    d = make_daemon(sink, start=False, members=[], extra_lists=(
        '\n[[list]]\naddress = "dev@lists.example.org"\nmoderators = ["mod@example.org"]\n'
        'default_nonmember_action = "hold"\ndigest_every = "1s"\n'))
    var = d.dir / "var"
    var.mkdir(mode=0o700)
    shutil.copy(OLD_STORE / "listmod.sqlite3", var / "listmod.sqlite3")
    shutil.copy(OLD_STORE / "secret.key", var / "secret.key")
    (var / "secret.key").chmod(0o600)
    return d


def test_a_store_made_by_3c3613f_is_upgraded_sealed_and_verifies(sink, make_daemon):
    old = sqlite3.connect(OLD_STORE / "listmod.sqlite3")
    assert old.execute("PRAGMA user_version").fetchone()[0] == 4
    old_head = old.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    old.close()
    d = _old_store_daemon(make_daemon, sink)
    d.start()
    assert "upgraded to the keyed audit chain" in d.log()
    assert d.db().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    verified = json.loads(d.cli("audit", "verify", "--json").stdout)
    assert verified["ok"] and verified["sealed"] == old_head[0] == 8, verified
    records = d.cli_json("audit")
    assert [r["action"] for r in records[:9]] == ["accept", "reject", "hold", "hold", "hold", "accept", "reject",
                                                  "refused", "sealed"]
    assert records[8]["prev_hash"] == old_head[1]          # the new chain starts from the old head
    # the post the old version left held is still there, and deciding it extends the chain
    assert [q["id"] for q in d.cli_json("queue")] == ["UN4W"]
    d.cli("approve", "UN4W")
    assert "chain intact" in d.cli("audit", "verify", "--anchor", f"{old_head[0]}:{old_head[1]}").stdout
    d.stop()
    # someone rewrites an old record and recomputes the whole old sha256 chain: the seal catches it
    conn = d.db()
    conn.execute("DROP TRIGGER audit_erase_only")
    conn.execute("UPDATE audit SET reason = 'nothing to see' WHERE seq = 7")
    prev = "0" * 64
    columns = ("seq", "time", "list", "post", "message_id", "sha256", "sender", "action", "reason", "rule",
               "source", "actor", "ruleset", "prev_hash")
    for row in conn.execute(f"SELECT {', '.join(columns)} FROM audit WHERE seq <= 8 ORDER BY seq").fetchall():
        fields = dict(zip(columns, row, strict=True))
        fields["prev_hash"] = prev
        digest = hashlib.sha256(json.dumps([fields[k] for k in columns], ensure_ascii=False,
                                           separators=(",", ":")).encode()).hexdigest()
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, fields["seq"]))
        prev = digest
    conn.commit()
    result = d.cli("audit", "verify", check=False)
    assert result.returncode == 1 and "no longer end in the sealed head" in result.stdout


def test_a_reply_to_the_upgraded_store_gets_a_receipt_with_the_head(sink, make_daemon):
    d = _old_store_daemon(make_daemon, sink)
    d.start()
    d.send("newcomer@example.net", "dev@lists.example.org",
           post_bytes(sender="newcomer@example.net", to="dev@lists.example.org"))
    digest = wait_until(lambda: [g for g in digests(d) if "newcomer" in next(g.iter_parts()).get_content()],
                        what="a digest after the upgrade")[-1]
    d.send("mod@example.org", "dev-moderation@lists.example.org",
           reply("mod@example.org", command_for(digest, "approve")).replace(
               MODERATION.encode(), b"dev-moderation@lists.example.org"))
    receipt = wait_until(lambda: [m.message for r, m in sink.copies() if r == "mod@example.org"
                                  and "sent these commands" in text_of(m.message)], what="the receipt")[0]
    assert "done" in text_of(receipt)
    anchor = ":".join(receipt["Audit-Head"].split())
    assert "1 anchor(s) hold" in d.cli("audit", "verify", "--anchor", anchor).stdout
