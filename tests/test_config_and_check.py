"""listmod.toml and `listmod check`/`serve`: bad files are refused with file:line and a hint."""

import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import LISTMOD, ROOT, _env, free_port

from listmod.config import read_config
from listmod.tomlfile import ConfigError


def write(tmp_path, text):
    path = tmp_path / "listmod.toml"
    path.write_text(textwrap.dedent(text))
    (tmp_path / "rules").mkdir(exist_ok=True)
    return path


def test_a_good_config_reads_into_typed_values(tmp_path):
    config = read_config(write(tmp_path, """
        [server]
        smtp = "127.0.0.1:2525"
        max_message_size = "2MB"

        [outbound]
        host = "127.0.0.1"
        port = 2526
        retry_after = "30s"

        [[list]]
        address = "Dev@Example.org"
        moderators = ["mod@example.org"]
        deliver = "relay:up@example.com"
        """))
    assert config.server.smtp.port == 2525 and config.server.max_message_size == 2 * 1024 * 1024
    assert config.server.state_dir == (tmp_path / "var").resolve()
    assert config.outbound.retry_after == 30.0
    mlist = config.lists[0]
    assert mlist.address == "dev@example.org" and mlist.relay_to == "up@example.com"
    assert (mlist.bounce_address, mlist.list_id) == ("dev-bounces@example.org", "dev.example.org")


@pytest.mark.parametrize("text, line, words", [
    ('[server]\nsmtp = "127.0.0.1"\n[[list]]\naddress = "a@example.org"\n', 2, "write it as HOST:PORT"),
    ('[server]\nmax_mesage_size = "1MB"\n[[list]]\naddress = "a@example.org"\n', 2,
     "did you mean 'max_message_size'?"),
    ('[[list]]\naddress = "not an address"\n', 2, "is not a mail address"),
    ('[[list]]\naddress = "a@example.org"\ndeliver = "everyone"\n', 3, '"members", "relay:ADDRESS" or "nntp://'),
    ('[[list]]\naddress = "a@example.org"\ndeliver = "nntp://news.example.org"\n', 3, "names no newsgroup"),
    ('[[list]]\naddress = "a@example.org"\ndeliver = "nntp://n.example.org/comp..lang"\n', 3,
     "is not a newsgroup name"),
    ('[[list]]\naddress = "a@example.org"\ndeliver = "nntp://me:pw@n.example.org/comp.lang"\n', 3,
     "use nntp_username and nntp_password_file"),
    ('[[list]]\naddress = "a@example.org"\napproved_by = "mods@example.org"\n', 3,
     "applies only to a list whose deliver is"),
    ('[[list]]\naddress = "a@example.org"\ndeliver = "nntp://n.example.org/a.b"\nnntp_username = "u"\n'
     'nntp_password_file = "missing.txt"\n', 5, "does not exist"),
    ('[[list]]\naddress = "a@example.org"\ndefault_member_action = "allow"\n', 3, '"accept", "hold"'),
    ('[[list]]\naddress = "a@example.org"\n[[list]]\naddress = "a@example.org"\n', 4, "configured twice"),
    ('[outbound]\nport = 99999\n[[list]]\naddress = "a@example.org"\n', 2, "a port number"),
    ('[server\n', 1, "TOML syntax error"),
])
def test_config_errors_name_file_line_and_what_was_expected(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        read_config(path)
    assert str(err.value).startswith(f"{path}:{line}: "), str(err.value)
    assert words in str(err.value)


def run(tmp_path, *args):
    return subprocess.run(LISTMOD + list(args), capture_output=True, text=True, cwd=tmp_path,
                          env=_env(), timeout=60)


BROKEN_RULE = '[[rule]]\nid = "x"\naction = "hold"\nreason = "r"\nmatch.bdy.contains = "x"\n'


def test_check_reports_a_broken_rule_file_and_exits_non_zero(tmp_path):
    path = write(tmp_path, f'[server]\nsmtp = "127.0.0.1:{free_port()}"\n[[list]]\naddress = "a@example.org"\n')
    (tmp_path / "rules" / "10-bad.toml").write_text(BROKEN_RULE)
    result = run(tmp_path, "check", "--config", str(path))
    assert result.returncode == 2
    assert "rules/10-bad.toml:5: 'bdy' is not a field (did you mean 'body'?)" in result.stderr


def test_serve_refuses_to_start_on_a_broken_rule_file_with_the_same_message(tmp_path):
    port = free_port()
    path = write(tmp_path, f'[server]\nsmtp = "127.0.0.1:{port}"\n[[list]]\naddress = "a@example.org"\n')
    (tmp_path / "rules" / "10-bad.toml").write_text(BROKEN_RULE)
    result = run(tmp_path, "serve", "--config", str(path))
    assert result.returncode == 2
    assert "rules/10-bad.toml:5: 'bdy' is not a field (did you mean 'body'?)" in result.stderr
    assert "not started" in result.stderr


def test_check_passes_on_the_shipped_example_config_and_rules(tmp_path):
    result = subprocess.run(LISTMOD + ["check", "--config", str(ROOT / "listmod.toml.example")],
                            capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_without_a_config_file_the_embedded_defaults_are_used(tmp_path):
    (tmp_path / "rules").mkdir()
    result = run(tmp_path, "check")
    assert result.returncode == 0, result.stderr
    assert "embedded defaults: 1 list(s)" in result.stdout


def test_a_missing_config_file_is_named(tmp_path):
    result = run(tmp_path, "check", "--config", "nope.toml")
    assert result.returncode == 2 and "nope.toml: no such config file" in result.stderr


def test_every_key_is_declared_once_and_shown_in_the_example_config():
    """A key is one key() field (default, parser, hint); the reader, the unknown-key check and the
    example config all follow from it, so the example must show every key with its default."""
    from listmod.config import (
        IMAP_KEYS,
        LIST_KEYS,
        OUTBOUND_KEYS,
        SERVER_KEYS,
        ImapConfig,
        ListConfig,
        OutboundConfig,
        ServerConfig,
        keys_of,
    )
    assert (SERVER_KEYS, OUTBOUND_KEYS, LIST_KEYS, IMAP_KEYS) == tuple(
        keys_of(c) for c in (ServerConfig, OutboundConfig, ListConfig, ImapConfig))
    example = (Path(__file__).resolve().parent.parent / "listmod.toml.example").read_text()
    shown = {line.lstrip("# ").split("=", 1)[0].strip() for line in example.splitlines() if "=" in line}
    for keys in (SERVER_KEYS, OUTBOUND_KEYS, LIST_KEYS, IMAP_KEYS):
        assert set(keys) <= shown, sorted(set(keys) - shown)
