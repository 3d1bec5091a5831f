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


def test_bad_durations_and_a_misplaced_state_dir_get_one_line_not_a_traceback(sink, make_daemon):
    d = make_daemon(sink, start=False, members=[])
    for since in ("5 parsecs", "５m", "9" * 30 + "d"):
        result = d.cli("audit", "--since", since, check=False)
        assert result.returncode == 1, since
        assert "is not a duration" in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    text = d.config_path.read_text()
    d.config_path.write_text(text.replace('state_dir = "var"', 'state_dir = "blocker/var"'))
    (d.dir / "blocker").write_text("a file where a directory is expected")
    for command in (["queue"], ["serve"]):
        result = d.cli(*command, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "cannot make state_dir" in result.stderr and "Not a directory" in result.stderr
    d.config_path.write_text(text.replace('state_dir = "var"', 'state_dir = "blocker"'))
    result = d.cli("serve", check=False)
    assert result.returncode == 1 and "is a file, not a directory" in result.stderr
    d.config_path.write_text(text.replace('[outbound]', '[outbound]\ngive_up_after = "1 fortnight"'))
    result = d.cli("check", check=False)
    assert result.returncode == 2 and "give_up_after: '1 fortnight' is not a duration" in result.stderr
    assert len(result.stderr.splitlines()) == 1
