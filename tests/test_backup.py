"""`listmod backup` while the daemon serves, and `listmod restore` into the same or a second state
directory: the store and its key come back together and the audit chain verifies against the head
the backup recorded."""

from __future__ import annotations

import json
import shutil
import stat

from conftest import LIST, post_bytes, wait_until


def test_a_backup_taken_while_serving_restores_and_verifies(sink, make_daemon, tmp_path):
    d = make_daemon(sink)
    d.send("alice@example.org", LIST, post_bytes(message_id="<kept@test>"))
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id="<held@test>"))
    wait_until(lambda: len(d.cli_json("queue")) == 1, what="the held post")
    target = tmp_path / "backup"
    out = d.cli("backup", str(target)).stdout
    manifest = json.loads((target / "manifest.json").read_text())
    head = manifest["audit_head"]
    assert f"audit head {head['seq']} {head['hash']}" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in target.iterdir())
    assert {"listmod.sqlite3", "secret.key", "manifest.json"} <= {p.name for p in target.iterdir()}
    refused = d.cli("restore", str(target), check=False)   # never under a running daemon
    assert refused.returncode == 1 and "needs the daemon stopped" in refused.stderr
    d.stop()
    shutil.rmtree(d.dir / "var")
    restored = d.cli("restore", str(target)).stdout
    assert "restored" in restored
    d.start()
    assert [q["message_id"] for q in d.cli_json("queue")] == ["<held@test>"]
    assert "1 anchor(s) hold" in d.cli("audit", "verify", "--anchor", f"{head['seq']}:{head['hash']}").stdout
    # restoring over a store moves it aside, never deletes it
    d.stop()
    again = d.cli("restore", str(target)).stdout
    assert "the store that was there is kept as" in again
    assert list((d.dir / "var").glob("listmod.sqlite3.before-restore-*"))


def test_a_backup_restores_on_a_second_state_directory_as_a_standby_would(sink, make_daemon, tmp_path):
    primary = make_daemon(sink)
    primary.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id="<s@test>"))
    wait_until(lambda: len(primary.cli_json("queue")) == 1, what="the held post")
    target = tmp_path / "shipped"
    primary.cli("backup", str(target))
    standby = make_daemon(sink, start=False, members=[])
    standby.cli("restore", str(target))
    standby.start()
    assert [q["message_id"] for q in standby.cli_json("queue")] == ["<s@test>"]
    assert "chain intact" in standby.cli("audit", "verify").stdout


def test_a_damaged_backup_is_refused(sink, make_daemon, tmp_path):
    d = make_daemon(sink)
    target = tmp_path / "b"
    d.cli("backup", str(target))
    d.stop()
    with open(target / "listmod.sqlite3", "r+b") as f:
        f.seek(200)
        f.write(b"\xff" * 8)
    result = d.cli("restore", str(target), check=False)
    assert result.returncode == 1 and "changed since the backup was made" in result.stderr
    assert d.cli("backup", str(target), check=False).returncode == 1   # not into a non-empty directory
