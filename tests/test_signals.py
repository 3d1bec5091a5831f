"""Run as a service would be: SIGTERM finishes the work in flight and exits 0; SIGHUP reloads the
rules at once and a changed config after checking it (a broken one is refused and the running one
stays); `listmod --version` answers."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import time

import pytest
from conftest import LIST, LISTMOD, _env, post_bytes, wait_until


def test_version_names_the_release():
    out = subprocess.run(LISTMOD + ["--version"], capture_output=True, text=True, env=_env(), timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("listmod 0.")


def test_sigterm_lets_the_transaction_in_flight_finish_and_exits_0(sink, make_daemon):
    d = make_daemon(sink)
    with d.smtp() as s:
        s.ehlo()
        s.mail("alice@example.org")
        s.rcpt(LIST)
        d.proc.send_signal(signal.SIGTERM)          # mid-transaction
        wait_until(lambda: "stopping" in d.log(), 10, "the daemon to begin stopping")
        time.sleep(1.5)                             # longer than any of its tasks takes to wind down
        code, _ = s.data(post_bytes(message_id="<inflight@test>"))
    assert code == 250
    assert d.proc.wait(30) == 0
    assert "stopping" in d.log()
    assert d.db().execute("SELECT COUNT(*) FROM posts WHERE message_id = '<inflight@test>'").fetchone()[0] == 1


def test_sigterm_tells_an_idle_kept_connection_421_and_exits_without_waiting_for_it(sink, make_daemon):
    from listmod.daemon import SHUTDOWN_GRACE
    d = make_daemon(sink)
    with d.smtp() as idle, d.smtp() as busy:
        idle.ehlo()
        idle.sendmail("alice@example.org", [LIST], post_bytes(message_id="<before-stop@test>"))
        busy.ehlo()
        busy.mail("alice@example.org")                # a transaction begun before the stop
        busy.rcpt(LIST)
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping" in d.log(), 10, "the daemon to begin stopping")
        code, text = idle.getreply()                  # said unprompted: 421, then the connection closes
        assert (code, text[:5]) == (421, b"4.3.2")
        assert busy.data(post_bytes(message_id="<in-transaction@test>"))[0] == 250
        assert busy.mail("alice@example.org")[0] == 421   # no new transaction once stopping
        with pytest.raises(smtplib.SMTPServerDisconnected):
            busy.noop()                               # and the connection is closed
        assert d.proc.wait(30) == 0
    assert time.monotonic() - started < SHUTDOWN_GRACE
    assert d.db().execute("SELECT COUNT(*) FROM posts WHERE message_id IN ('<before-stop@test>', "
                          "'<in-transaction@test>')").fetchone()[0] == 2


def test_sighup_serves_a_changed_config_and_refuses_a_broken_one(sink, make_daemon):
    d = make_daemon(sink)
    other = "ops@example.org"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        d.send("alice@example.org", other, post_bytes(to=other))
    good = d.config_path.read_text()
    d.config_path.write_text(good + f'\n[[list]]\naddress = "{other}"\nmoderators = ["mod@example.org"]\n'
                                    'default_nonmember_action = "accept"\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.log().count("listmod is running") == 2, 30, "serving again with the new config")
    d.send("alice@example.org", other, post_bytes(to=other, message_id="<after-hup@test>"))
    assert d.db().execute("SELECT list FROM posts WHERE message_id = '<after-hup@test>'").fetchone() == (other,)
    assert [r["action"] for r in d.cli_json("audit", "--only", "config")].count("config-loaded") == 2
    # a broken config: refused with its file:line, and the daemon goes on with the one it has
    d.config_path.write_text(good.replace('hostname = "lists.example.org"', 'hostname = 42'))
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "was not reloaded" in d.log(), 15, "the refusal")
    assert "listmod.toml:" in d.log() and "hostname" in d.log()
    assert d.proc.poll() is None
    d.send("alice@example.org", other, post_bytes(to=other, message_id="<still@test>"))
    assert d.log().count("listmod is running") == 2


def test_sighup_reloads_the_rules_at_once(sink, make_daemon):
    d = make_daemon(sink, server_extra='reload_every = "1h"\n')   # only the signal can reload them
    (d.dir / "rules" / "90-hup.toml").write_text(
        '[[rule]]\nid = "no-hup"\naction = "reject"\nreason = "No hups."\nmatch.subject.contains = "hup"\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "rules reloaded" in d.log(), 15, "the rules reloaded")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        d.send("alice@example.org", LIST, post_bytes(subject="hup hup"))
    assert refused.value.smtp_code == 550 and b"No hups." in refused.value.smtp_error
    assert d.log().count("listmod is running") == 1   # an unchanged config: no restart
