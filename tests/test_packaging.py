"""The wheel: it builds without warnings, installs into a fresh venv, and `listmod --version` and
`listmod serve` work from it (with no source tree anywhere near)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import ROOT, free_port, post_bytes, wait_until


@pytest.mark.slow
def test_the_wheel_builds_without_warnings_and_runs_from_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    output = built.stdout + built.stderr
    warnings = [line for line in output.splitlines()
                if re.search(r"(Deprecation|BuildBackend|Setuptools)Warning|deprecated", line)]
    assert not warnings, "\n".join(warnings)
    wheel = next(dist.glob("listmod-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    installed = subprocess.run([str(env_dir / "bin" / "pip"), "install", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LISTMOD_CONFIG")}
    listmod = str(env_dir / "bin" / "listmod")
    version = subprocess.run([listmod, "--version"], capture_output=True, text=True, env=clean_env, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("listmod 0."), version
    run_dir = tmp_path / "site"
    run_dir.mkdir()
    port = free_port()
    (run_dir / "listmod.toml").write_text(
        f'[server]\nsmtp = "127.0.0.1:{port}"\nhostname = "lists.example.org"\n\n'
        '[[list]]\naddress = "dev@example.org"\nmoderators = ["mod@example.org"]\n'
        'default_nonmember_action = "accept"\n')
    (run_dir / "rules").mkdir()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([listmod, "serve"], cwd=run_dir, env=clean_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        import smtplib
        wait_until(lambda: _listening(port) or proc.poll() is not None, 30, "the installed daemon to listen")
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("someone@example.net", ["dev@example.org"], post_bytes(sender="someone@example.net",
                                                                               to="dev@example.org"))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert Path(run_dir / "var" / "listmod.sqlite3").exists()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def _listening(port: int) -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_the_service_unit_is_hardened_reloads_with_sighup_and_verifies(tmp_path):
    unit = (ROOT / "contrib" / "listmod.service").read_text()
    settings = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines()
                if "=" in line and not line.startswith("#")}
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID" and settings["KillSignal"] == "SIGTERM"
    for key, value in (("ProtectSystem", "strict"), ("NoNewPrivileges", "true"), ("StateDirectory", "listmod"),
                       ("StateDirectoryMode", "0700"), ("CapabilityBoundingSet", ""), ("ProtectHome", "true")):
        assert settings.get(key) == value, key
    analyze = subprocess.run(["sh", "-c", "command -v systemd-analyze"], capture_output=True, text=True)
    if analyze.returncode == 0:   # where systemd is installed, it must accept the unit as written
        fake = tmp_path / "listmod.service"
        fake.write_text(unit.replace("/opt/listmod/bin/listmod", sys.executable.replace("python", "listmod")
                                     if Path(sys.executable.replace("python", "listmod")).exists() else "/bin/true"))
        result = subprocess.run(["systemd-analyze", "verify", str(fake)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
