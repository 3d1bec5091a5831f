"""The moderators' IMAP mailbox, as both sides use it: a login, a folder made when missing, and the
APPEND of one digest (the outbox delivers digests; the moderation worker reads replies)."""

from __future__ import annotations

from imapclient import IMAPClient

from .config import ImapConfig
from .tlsclient import client_tls_context, is_loopback


class ClearTextRefused(ConnectionError):
    """The server offers no TLS and is not on loopback: the password is not sent."""


def connect(cfg: ImapConfig) -> IMAPClient:
    """Logged in: over TLS (ssl = true), else STARTTLS whenever offered; in clear only on loopback."""
    context = client_tls_context(cfg.tls_verify, cfg.tls_ca_file)
    client = IMAPClient(cfg.host, port=cfg.port, ssl=cfg.ssl, ssl_context=context if cfg.ssl else None,
                        timeout=30)
    try:
        if not cfg.ssl:
            if b"STARTTLS" in client.capabilities():
                client.starttls(context)
            elif not is_loopback(cfg.host):
                raise ClearTextRefused(
                    f"the IMAP server {cfg.host}:{cfg.port} offers no STARTTLS, and listmod does not send "
                    "the password in clear off loopback; set [imap] ssl = true (port 993), or enable TLS "
                    "on the server")
        client.login(cfg.username, cfg.password())
    except BaseException:
        try:
            client.shutdown()
        except Exception:
            pass
        raise
    return client


def ensure_folder(client: IMAPClient, folder: str) -> None:
    if not client.folder_exists(folder):
        client.create_folder(folder)


def append_digest(cfg: ImapConfig, folder: str, data: bytes) -> None:
    """APPEND one digest (blocking; run it in a thread). Raises on failure, so the caller retries."""
    client = connect(cfg)
    try:
        ensure_folder(client, folder)
        client.append(folder, data, flags=(), msg_time=None)
    finally:
        try:
            client.logout()
        except Exception:
            pass
