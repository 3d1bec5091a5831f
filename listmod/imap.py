"""IMAP: digests APPENDed to the moderators' folder, and replies read from theirs (IDLE, with polling
as the fallback). A reply is applied, then flagged and moved to the processed folder; the last UID
handled is kept in the store, so a restart never applies a reply twice."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from .config import Config, ImapConfig
from .digest import Digest
from .moderation import apply_reply, send_receipts
from .store import GroupWriter

log = logging.getLogger("listmod.imap")


def _connect(cfg: ImapConfig) -> IMAPClient:
    client = IMAPClient(cfg.host, port=cfg.port, ssl=cfg.ssl, timeout=30)
    client.login(cfg.username, cfg.password())
    return client


def _ensure(client: IMAPClient, folder: str) -> None:
    if not client.folder_exists(folder):
        client.create_folder(folder)


def append_digest(cfg: ImapConfig, digest: Digest) -> None:
    """APPEND one digest (blocking; run it in a thread). Raises on failure, so the caller retries."""
    client = _connect(cfg)
    try:
        _ensure(client, cfg.digest_folder)
        client.append(cfg.digest_folder, digest.data, flags=(), msg_time=None)
    finally:
        try:
            client.logout()
        except Exception:
            pass


def _state(conn: sqlite3.Connection, folder: str) -> tuple[int, int]:
    row = conn.execute("SELECT uidvalidity, last_uid FROM imap_state WHERE folder = ?", (folder,)).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def _save_state(conn: sqlite3.Connection, folder: str, uidvalidity: int, last_uid: int) -> None:
    conn.execute("INSERT OR REPLACE INTO imap_state (folder, uidvalidity, last_uid) VALUES (?, ?, ?)",
                 (folder, uidvalidity, last_uid))


class ImapWorker:
    """Delivers digests (with retries while the server is away) and applies replies."""

    def __init__(self, config: Config, writer: GroupWriter, secret: bytes, wake_outbox: Callable[[], None]):
        assert config.imap is not None
        self.config = config
        self.cfg = config.imap
        self.writer = writer
        self.secret = secret
        self.wake_outbox = wake_outbox
        self.pending: asyncio.Queue[Digest] = asyncio.Queue()
        self.new_mail = asyncio.Event()

    async def append(self, digest: Digest) -> None:
        """Called by the moderation worker: the digest is recorded; it is appended in order, retried."""
        await self.pending.put(digest)

    async def run_appends(self, stopping: asyncio.Event) -> None:
        delay = 1.0
        while not stopping.is_set():
            try:
                digest = await asyncio.wait_for(self.pending.get(), timeout=1.0)
            except TimeoutError:
                continue
            while not stopping.is_set():
                try:
                    await asyncio.to_thread(append_digest, self.cfg, digest)
                    log.info("digest %s appended to %s", digest.message_id, self.cfg.digest_folder)
                    delay = 1.0
                    break
                except (OSError, IMAPClientError) as err:
                    log.warning("IMAP server unreachable (%s); the digest is kept and retried in %.0fs",
                                err, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)

    async def run_replies(self, stopping: asyncio.Event) -> None:
        delay = 1.0
        while not stopping.is_set():
            try:
                await asyncio.to_thread(self._session, stopping)
                delay = 1.0
            except (OSError, IMAPClientError) as err:
                log.warning("IMAP replies: %s; trying again in %.0fs", err, delay)
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)

    def _session(self, stopping: asyncio.Event) -> None:
        """One connection: process what is there, then IDLE (or poll) until stopping or an error."""
        client = _connect(self.cfg)
        try:
            _ensure(client, self.cfg.replies_folder)
            _ensure(client, self.cfg.processed_folder)
            idle = b"IDLE" in client.capabilities()
            while not stopping.is_set():
                self._process(client)
                if idle:
                    client.idle()
                    try:
                        client.idle_check(timeout=min(self.cfg.poll_every, 5.0))
                    finally:
                        client.idle_done()
                else:
                    time.sleep(min(self.cfg.poll_every, 5.0))
        finally:
            try:
                client.logout()
            except Exception:
                pass

    def _process(self, client: IMAPClient) -> int:
        info = client.select_folder(self.cfg.replies_folder)
        uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        folder = self.cfg.replies_folder
        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            return _state(conn, folder)
        stored_validity, last_uid = self.writer.submit(read).result(timeout=60)
        if stored_validity != uidvalidity:
            last_uid = 0
        uids = [u for u in client.search(["UID", f"{last_uid + 1}:*", "NOT", "DELETED"]) if u > last_uid]
        done = 0
        for uid in sorted(uids):
            fetched = client.fetch([uid], ["RFC822"]).get(uid)
            if not fetched:
                continue
            raw = fetched[b"RFC822"]
            # apply, receipt and remember the UID in one transaction: a crash before the commit
            # leaves the reply to be applied again; after it, the UID says it was done
            self.writer.submit(functools.partial(self._apply, raw=raw, folder=folder,
                                                 uidvalidity=uidvalidity, uid=uid)).result(timeout=60)
            client.add_flags([uid], [b"\\Seen", b"\\Flagged"])
            try:
                client.move([uid], self.cfg.processed_folder)
            except IMAPClientError:
                client.copy([uid], self.cfg.processed_folder)
                client.delete_messages([uid])
                client.expunge()
            done += 1
        if done:
            self.wake_outbox()
        return done

    def _apply(self, conn: sqlite3.Connection, raw: bytes, folder: str, uidvalidity: int, uid: int) -> None:
        at = time.time()
        receipt = apply_reply(conn, self.secret, self.config, raw, via_list=None, at=at)
        send_receipts(conn, receipt, self.config, raw, at)
        _save_state(conn, folder, uidvalidity, uid)

    async def run(self, stopping: asyncio.Event) -> None:
        await asyncio.gather(self.run_appends(stopping), self.run_replies(stopping))
