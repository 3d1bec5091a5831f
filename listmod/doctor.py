"""`listmod doctor`: every part of a set-up checked the way the daemon will use it, read-only —
the config and the rules, the state directory and the key, the store and its audit chain, and the
smarthost, IMAP and news servers reached and logged into — each problem said with its fix."""

from __future__ import annotations

import functools
import os
import smtplib
import socket
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import audit
from .config import Config, ListConfig
from .delivery.nntp import NntpClient, NntpError
from .rules import load_rules
from .store import KEY_LENGTH
from .tlsclient import client_tls_context
from .tomlfile import ConfigError

TIMEOUT = 10.0


@dataclass(frozen=True)
class Finding:
    part: str
    ok: bool
    what: str
    fix: str = ""


def _check(part: str, probe: Callable[[], str], fix: Callable[[Exception], str]) -> Finding:
    try:
        return Finding(part, True, probe())
    except Exception as err:  # every failure is a finding, never a traceback
        return Finding(part, False, f"{type(err).__name__}: {err}", fix(err))


def examine(config: Config) -> Iterator[Finding]:
    server = config.server
    yield _check("rules", lambda: f"{len(load_rules(server.rules_dir).rules)} rule(s) in {server.rules_dir}",
                 lambda err: "fix the rule files at the places named above (`listmod check`)"
                 if isinstance(err, ConfigError) else "make rules_dir readable")
    yield from _state(config)
    if config.outbound is not None:
        yield _check(f"smarthost {config.outbound.host}:{config.outbound.port}", lambda: _smarthost(config),
                     lambda err: "start the smarthost or fix [outbound] host/port" if isinstance(err, OSError)
                     and not isinstance(err, smtplib.SMTPException) else
                     "check [outbound] username and password_file (the smarthost refused them)"
                     if isinstance(err, smtplib.SMTPAuthenticationError) else "see the smarthost's answer above")
    if config.imap is not None:
        imap = config.imap
        yield _check(f"IMAP {imap.host}:{imap.port}", lambda: _imap(config),
                     lambda err: "start the IMAP server or fix [imap] host/port/ssl" if isinstance(err, OSError)
                     else "check [imap] username and password_file (the server refused the login)")
    for mlist in config.lists:
        if mlist.dmarc_mitigation != "none":
            yield _check(f"DMARC lookups for {mlist.address}", functools.partial(_dmarc, config, mlist),
                         lambda err: "fix [server] nameservers (or /etc/resolv.conf): without answers every "
                         "post is mitigated as if its domain were strict")
        if mlist.dkim_key is not None and mlist.dkim_selector:
            yield _check(f"DKIM key of {mlist.address}", functools.partial(_dkim, config, mlist),
                         lambda err: f"publish the public key as a TXT record at {mlist.dkim_selector}._domainkey."
                         f"{mlist.domain} (openssl rsa -in KEY -pubout, base64 as p=), or fix dkim_key")
        news = mlist.news_server
        if news is not None:
            yield _check(f"news server {news.endpoint} for {mlist.address}", functools.partial(_news, mlist),
                         lambda err: "start the news server or fix the list's deliver URL"
                         if isinstance(err, OSError) else "check nntp_username/nntp_password_file and that "
                         "the groups exist and are moderated")


def _state(config: Config) -> Iterator[Finding]:
    state_dir = config.server.state_dir
    if not state_dir.exists():
        yield Finding("state_dir", True, f"{state_dir} does not exist yet (`listmod serve` makes it, 0700)")
        return
    mode = state_dir.stat().st_mode & 0o777
    yield Finding("state_dir", not mode & 0o077, f"{state_dir} has mode {mode:o}",
                  "" if not mode & 0o077 else f"chmod 700 {state_dir} (it holds raw mail and the key)")
    key = state_dir / "secret.key"
    if key.exists():
        st = key.stat()
        problems = []
        if st.st_size != KEY_LENGTH:
            problems.append(f"is {st.st_size} bytes, not {KEY_LENGTH}")
        if st.st_mode & 0o077:
            problems.append(f"has mode {st.st_mode & 0o777:o}")
        if st.st_uid != os.geteuid():
            problems.append(f"belongs to uid {st.st_uid}")
        yield Finding("secret key", not problems, f"{key} " + ("; ".join(problems) or "is 32 bytes, 0600, ours"),
                      f"chmod 600 {key}; it must be {KEY_LENGTH} random bytes owned by the daemon's user"
                      if problems else "")
    if config.database_path.exists():
        yield _check("store", lambda: _store(config, key), lambda err: "restore the store from a backup "
                     "(`listmod restore DIR`), then `listmod audit verify`")


def _store(config: Config, key: Path) -> str:
    conn = sqlite3.connect(f"file:{config.database_path}?mode=ro", uri=True, timeout=5)
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check") if r[0] != "ok"]
        if problems:
            raise ValueError(f"PRAGMA quick_check: {problems[0]}")
        if not key.exists():
            return "readable (no key to verify the audit chain with)"
        result = audit.verify(conn, key.read_bytes())
        if not result.ok:
            raise ValueError(f"the audit chain is broken: {result.problems[0]}")
        return f"intact; {result.records} audit record(s), head {result.head[0]}"
    finally:
        conn.close()


def _smarthost(config: Config) -> str:
    o = config.outbound
    assert o is not None
    with smtplib.SMTP(o.host, o.port, timeout=min(o.timeout, TIMEOUT)) as conn:
        code, _ = conn.ehlo()
        done = [f"EHLO {code}"]
        if o.starttls or conn.has_extn("starttls"):   # as the outbox does: whenever offered
            conn.starttls(context=client_tls_context(o.tls_verify, o.tls_ca_file))
            conn.ehlo()
            done.append("STARTTLS" + ("" if o.tls_verify else " (certificate not verified: tls_verify = false)"))
        if o.username:
            conn.login(o.username, o.password() or "")
            done.append(f"logged in as {o.username}")
    return ", ".join(done)


def _imap(config: Config) -> str:
    from .mailbox import connect
    imap = config.imap
    assert imap is not None
    socket.setdefaulttimeout(TIMEOUT)
    try:
        client = connect(imap)
        try:
            missing = [f for f in (imap.digest_folder, imap.replies_folder) if not client.folder_exists(f)]
        finally:
            client.logout()
    finally:
        socket.setdefaulttimeout(None)
    return f"logged in as {imap.username}" + (f"; {', '.join(missing)} will be made at start" if missing else "")


def _dmarc(config: Config, mlist: ListConfig) -> str:
    from .delivery.dmarc import PolicyLookup
    policy = PolicyLookup(config.server.nameservers, timeout=TIMEOUT).policy_for(mlist.domain)
    if policy.error:
        raise ConnectionError(policy.describe())
    return f"DNS answers ({policy.describe()})"


def _dkim(config: Config, mlist: ListConfig) -> str:
    """Sign a test message with the list's key and verify it against the key published in DNS."""
    import dkim

    from .delivery.dkimsign import Signer
    from .delivery.dmarc import PolicyLookup
    assert mlist.dkim_key is not None
    resolver = PolicyLookup(config.server.nameservers, timeout=TIMEOUT).resolver

    def txt(name: bytes, timeout: float = TIMEOUT) -> bytes | None:
        answer = resolver.resolve(name.decode(), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    message = (f"From: {mlist.address}\r\nTo: {mlist.address}\r\nSubject: listmod doctor\r\n"
               "Message-ID: <doctor@listmod>\r\n\r\nA DKIM test.\r\n").encode()
    signed = Signer(mlist.domain, mlist.dkim_selector, mlist.dkim_key).sign(message)
    if not signed.startswith(b"DKIM-Signature"):
        raise ValueError(f"dkim_key {mlist.dkim_key} could not sign (see the warning above)")
    if not dkim.verify(signed, dnsfunc=txt):
        raise ValueError(f"a copy signed with dkim_key does not verify against {mlist.dkim_selector}._domainkey."
                         f"{mlist.domain}: the published key is another, or missing")
    return f"signs as d={mlist.domain} s={mlist.dkim_selector}, and the published key verifies it"


def _news(mlist: ListConfig) -> str:
    server = mlist.news_server
    assert server is not None
    client = NntpClient(server.host, server.port, tls=server.tls, timeout=TIMEOUT,
                        context=client_tls_context(mlist.nntp_tls_verify, mlist.nntp_tls_ca_file),
                        username=mlist.nntp_username, password=mlist.nntp_password())
    try:
        groups = []
        for group in server.groups:
            reply = client.command(f"GROUP {group}")
            if reply.code != 211:
                raise NntpError(f"GROUP {group}", reply.code, reply.text)
            groups.append(group)
        return f"connected; {', '.join(groups)} found"
    finally:
        client.close()
