"""TLS with a throwaway CA (trustme): STARTTLS on intake, its certificate renewed by SIGHUP; to the
smarthost, STARTTLS whenever it is offered, the certificate verified (against tls_ca_file) unless
tls_verify = false."""

from __future__ import annotations

import signal
import smtplib
import ssl

import pytest
import trustme
from aiosmtpd.controller import Controller
from conftest import LIST, MEMBERS, Sink, SinkHandler, free_port, post_bytes, wait_until


@pytest.fixture
def ca():
    return trustme.CA()


def write_cert(ca, tmp_path, name):
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key_path))
    with open(cert_path, "wb") as f:
        for pem in cert.cert_chain_pems:
            f.write(pem.bytes())
    return cert_path, key_path


def served_cert(port, ca) -> bytes:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=context)
        s.ehlo()
        s.sendmail("alice@example.org", [LIST], post_bytes())
        return s.sock.getpeercert(binary_form=True)


def test_intake_offers_starttls_and_sighup_renews_its_certificate(sink, make_daemon, ca, tmp_path):
    cert, key = write_cert(ca, tmp_path, "intake")
    d = make_daemon(sink, server_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    first = served_cert(d.smtp_port, ca)
    renewed_cert, renewed_key = write_cert(ca, tmp_path, "renewed")
    cert.write_bytes(renewed_cert.read_bytes())
    key.write_bytes(renewed_key.read_bytes())
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "certificate" in d.log() and "was reloaded" in d.log(), 15, "the certificate reloaded")
    second = served_cert(d.smtp_port, ca)
    assert first != second
    assert d.log().count("listmod is running") == 1      # no restart was needed
    assert len(d.cli_json("audit", "--only", "posts")) == 2


def test_a_half_configured_certificate_is_a_config_error(sink, make_daemon, ca, tmp_path):
    cert, _ = write_cert(ca, tmp_path, "alone")
    d = make_daemon(sink, start=False, members=[], server_extra=f'tls_cert = "{cert}"\n')
    result = d.cli("check", check=False)
    assert result.returncode == 2 and "tls_cert and tls_key go together" in result.stderr


class TlsSinkHandler(SinkHandler):
    def __init__(self):
        super().__init__()
        self.encrypted: list[bool] = []

    async def handle_DATA(self, server, session, envelope):
        self.encrypted.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def tls_sink(ca, tmp_path):
    cert, key = write_cert(ca, tmp_path, "smarthost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = TlsSinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context)
    controller.start()
    try:
        yield Sink(handler, port, controller)
    finally:
        controller.stop()


def test_the_smarthost_gets_starttls_and_its_certificate_is_verified(tls_sink, make_daemon, ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # trusted through tls_ca_file: delivered, encrypted
    d = make_daemon(tls_sink, outbound_extra=f'tls_ca_file = "{ca_file}"\n')
    d.send("alice@example.org", LIST, post_bytes(message_id="<tls@test>"))
    wait_until(lambda: len(tls_sink.copies_for("<tls@test>")) == len(MEMBERS), what="delivery over TLS")
    assert tls_sink.handler.encrypted and all(tls_sink.handler.encrypted)
    # the system's CAs do not know this one: nothing is delivered, and the log says why
    d2 = make_daemon(tls_sink)
    d2.send("alice@example.org", LIST, post_bytes(message_id="<untrusted@test>"))
    wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in d2.log(), 15, "the verification failure logged")
    assert tls_sink.copies_for("<untrusted@test>") == []
    assert "certificate verify failed" in d2.cli("status").stdout.lower()
    # tls_verify = false: encrypted without checking, as the operator chose
    d3 = make_daemon(tls_sink, outbound_extra="tls_verify = false\n")
    d3.send("alice@example.org", LIST, post_bytes(message_id="<unverified@test>"))
    wait_until(lambda: len(tls_sink.copies_for("<unverified@test>")) == len(MEMBERS), what="delivery unverified")


def test_imap_uses_starttls_when_offered_and_verifies_the_certificate(sink, make_daemon, ca, tmp_path):
    from servers import Dovecot
    from test_imap import folder_messages
    cert, key = write_cert(ca, tmp_path, "imap")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    dovecot = Dovecot(free_port(), "moderation", "s3cret", tls=(cert, key))
    dovecot.start()
    try:
        imap = (f'\n[imap]\nhost = "127.0.0.1"\nport = {dovecot.port}\nusername = "moderation"\n'
                f'password_file = "imap.secret"\npoll_every = "1s"\n')
        # without our CA, the certificate cannot be verified: no login, and the log says why
        d = make_daemon(sink, server_extra=imap, files={"imap.secret": "s3cret\n"})
        d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net"))
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in d.log(), 20, "the refused certificate in the log")
        assert folder_messages(dovecot, "Moderation") == []
        d.stop()
        # with it, the digest goes over STARTTLS
        d.config_path.write_text(d.config_path.read_text().replace(
            'poll_every = "1s"\n', f'poll_every = "1s"\ntls_ca_file = "{ca_file}"\n'))
        d.start()
        wait_until(lambda: folder_messages(dovecot, "Moderation"), 20, "the digest in IMAP")
        assert "TLS" in (dovecot.dir / "dovecot.log").read_text()
    finally:
        dovecot.cleanup()


def test_nntp_uses_starttls_when_offered_and_verifies_the_certificate(sink, make_daemon, ca, tmp_path):
    from servers import Inn
    from test_newsgroups import news_daemon, submission

    from listmod.delivery.nntp import NntpClient

    def article(inn, message_id):
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        client = NntpClient("127.0.0.1", inn.port, timeout=10, context=trusting)
        try:
            assert client.encrypted
            return client.article(message_id)
        finally:
            client.close()

    cert, key = write_cert(ca, tmp_path, "news")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    inn = Inn(free_port(), tls=(cert, key))
    inn.start()
    try:
        # without our CA, the certificate cannot be verified: nothing is posted, and the log says why
        d = news_daemon(make_daemon, sink, inn, tmp_path)
        raw, mid = submission()
        d.send("poster@example.net", LIST, raw)
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in d.log(), 20, "the refused certificate in the log")
        assert article(inn, mid) is None
        d.stop()
        # with it, the article is posted over STARTTLS
        d.config_path.write_text(d.config_path.read_text().replace(
            'default_nonmember_action = "accept"\n',
            f'default_nonmember_action = "accept"\nnntp_tls_ca_file = "{ca_file}"\n'))
        d.start()
        wait_until(lambda: article(inn, mid), 20, "the article on the news server")
        assert "CERTIFICATE_VERIFY_FAILED" not in d.log()
    finally:
        inn.cleanup()
