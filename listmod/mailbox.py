"""The moderators' IMAP mailbox, as both sides use it: a login, a folder made when missing, and the
APPEND of one digest (the outbox delivers digests; the moderation worker reads replies)."""

from __future__ import annotations

from imapclient import IMAPClient

from .config import ImapConfig


def connect(cfg: ImapConfig) -> IMAPClient:
    client = IMAPClient(cfg.host, port=cfg.port, ssl=cfg.ssl, timeout=30)
    client.login(cfg.username, cfg.password())
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
