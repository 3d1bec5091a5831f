"""The command line finds its store or says why not, and one `listmod serve` owns a store."""

import subprocess

from conftest import LISTMOD, _env


def test_a_data_command_without_config_or_store_refuses_and_creates_nothing(tmp_path):
    for command in (["queue"], ["audit"], ["approve", "K7Q2"], ["outbox"]):
        result = subprocess.run(LISTMOD + command, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode != 0, command
        assert "no listmod.toml found" in result.stderr and len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_second_serve_on_the_same_store_is_refused(sink, make_daemon):
    d = make_daemon(sink)
    second = subprocess.run(LISTMOD + ["serve", "--config", str(d.config_path)], cwd=d.dir, env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert "already uses" in second.stderr and "Traceback" not in second.stderr
    assert d.proc.poll() is None  # the first one goes on
    d.send("alice@example.org", "dev@example.org", b"Subject: still here\r\n\r\nhello\r\n")
