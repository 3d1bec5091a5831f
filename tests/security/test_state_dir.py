"""Findings 9, 10 and 15: start-up refuses a weak or exposed secret key, a damaged store, world-
writable config or rules and rules links out of rules_dir, each in one line; state is private."""

import os
import stat
import subprocess

import pytest
from conftest import LISTMOD, _env


def serve_refuses(d) -> str:
    """Start the daemon and expect it to refuse: its one-line reason."""
    proc = subprocess.run(LISTMOD + ["serve", "--config", str(d.config_path)], cwd=d.dir, env=_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("key,mode,expect", [(b"", 0o600, "0 bytes"), (b"k" * 16, 0o600, "16 bytes"),
                                             (b"k" * 32, 0o644, "chmod 600")])
def test_a_weak_or_exposed_secret_key_is_refused(sink, make_daemon, key, mode, expect):
    d = make_daemon(sink, start=False)
    path = d.dir / "var" / "secret.key"
    path.write_bytes(key)
    path.chmod(mode)
    assert expect in serve_refuses(d)


def test_state_is_private(sink, make_daemon):
    d = make_daemon(sink)
    var = d.dir / "var"
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    for name in ("listmod.sqlite3", "secret.key"):
        assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name


def test_a_damaged_store_is_refused_and_audit_verify_says_so(sink, make_daemon):
    d = make_daemon(sink, start=False)
    db = d.dir / "var" / "listmod.sqlite3"
    conn = d.db()
    conn.execute("CREATE TABLE filler (x)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(500),) for _ in range(400)])
    conn.execute("CREATE INDEX filler_x ON filler (x)")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for at in range(len(data) - 3 * page, len(data) - page, 97):  # scribble over index pages
        data[at] ^= 0x5A
    db.write_bytes(bytes(data))
    assert "damaged" in serve_refuses(d) or "not a usable" in serve_refuses(d)
    verify = d.cli("audit", "verify", check=False)
    assert verify.returncode != 0 and "Traceback" not in verify.stderr


def test_a_store_with_a_destroyed_header_gets_one_line_not_a_traceback(sink, make_daemon):
    d = make_daemon(sink, start=False)
    db = d.dir / "var" / "listmod.sqlite3"
    db.write_bytes(b"\0" * 100 + db.read_bytes()[100:])
    assert "restore it from a backup" in serve_refuses(d)
    queue = d.cli("queue", check=False)
    assert queue.returncode != 0 and "Traceback" not in queue.stderr and len(queue.stderr.splitlines()) == 1


def test_world_writable_config_and_rules_and_links_out_of_rules_are_refused(sink, make_daemon, tmp_path):
    d = make_daemon(sink, start=False)
    d.config_path.chmod(0o666)
    assert "chmod o-w" in serve_refuses(d)
    d.config_path.chmod(0o644)
    rules = d.dir / "rules"
    rules.chmod(0o777)
    assert "chmod o-w" in serve_refuses(d)
    rules.chmod(0o755)
    outside = tmp_path / "elsewhere.toml"
    outside.write_text('[[rule]]\nid = "x"\naction = "accept"\nreason = "r"\nmatch.subject.contains = "x"\n')
    outside.chmod(0o666)
    (rules / "99-link.toml").symlink_to(outside)
    assert "outside" in serve_refuses(d)
    (rules / "99-link.toml").unlink()
    d.start()
