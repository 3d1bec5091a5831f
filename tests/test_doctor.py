"""`listmod doctor` checks a set-up the way the daemon will use it and names each fault with its fix."""

from __future__ import annotations

from conftest import free_port


def test_doctor_names_each_fault_of_a_broken_setup(sink, make_daemon):
    dead_smtp, dead_nntp = free_port(), free_port()
    d = make_daemon(sink, extra_lists=f'\n[[list]]\naddress = "news@example.org"\n'
                                      f'deliver = "nntp://127.0.0.1:{dead_nntp}/test.moderated"\n')
    d.stop()
    d.config_path.write_text(d.config_path.read_text().replace(f"port = {sink.port}", f"port = {dead_smtp}"))
    (d.dir / "var").chmod(0o755)
    (d.dir / "var" / "secret.key").chmod(0o644)
    (d.dir / "rules" / "99-bad.toml").write_text('[[rule]]\nid = "x"\naction = "explode"\n')
    result = d.cli("doctor", check=False)
    out = result.stdout
    assert result.returncode == 1
    assert "FAIL rules" in out and "listmod check" in out
    assert "FAIL state_dir" in out and "chmod 700" in out
    assert "FAIL secret key" in out and "mode 644" in out
    assert f"FAIL smarthost 127.0.0.1:{dead_smtp}" in out and "start the smarthost" in out
    assert f"FAIL news server 127.0.0.1:{dead_nntp}" in out
    assert "ok   store" in out
    assert out.rstrip().endswith("5 problem(s)")


def test_doctor_passes_a_sound_setup(sink, make_daemon):
    d = make_daemon(sink)
    result = d.cli("doctor")
    assert "FAIL" not in result.stdout and f"ok   smarthost 127.0.0.1:{sink.port}" in result.stdout
    assert "no problems found" in result.stdout
