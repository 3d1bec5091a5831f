"""IMAP: replies read from the moderators' folder (IDLE, with polling as the fallback); digests are
APPENDed by the outbox (listmod/mailbox.py). A reply is applied, then flagged and moved to
the processed folder; one that cannot be applied is audited and moved to the failed folder. The
last UID handled is kept in the store, so a restart never applies a reply twice."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from ..config import Config
from ..mailbox import connect as _connect
from ..mailbox import ensure_folder as _ensure
from ..store import GroupWriter, StoreError
from ..supervise import QuietLog
from .apply import PreparedReply, prepare_reply, process_reply, reply_failed

log = logging.getLogger("listmod.imap")


def _state(conn: sqlite3.Connection, folder: str) -> tuple[int, int]:
    row = conn.execute("SELECT uidvalidity, last_uid FROM imap_state WHERE folder = ?", (folder,)).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def _save_state(conn: sqlite3.Connection, folder: str, uidvalidity: int, last_uid: int) -> None:
    conn.execute("INSERT OR REPLACE INTO imap_state (folder, uidvalidity, last_uid) VALUES (?, ?, ?)",
                 (folder, uidvalidity, last_uid))


class ImapWorker:
    """Applies the replies the moderators leave in their folder."""

    def __init__(self, config: Config, writer: GroupWriter, secret: bytes, wake_outbox: Callable[[], None]):
        assert config.imap is not None
        self.config = config
        self.cfg = config.imap
        self.writer = writer
        self.secret = secret
        self.wake_outbox = wake_outbox
        self.quiet = QuietLog(log)

    async def run(self, stopping: asyncio.Event) -> None:
        delay = 1.0
        while not stopping.is_set():
            try:
                await asyncio.to_thread(self._session, stopping)
                delay = 1.0
            except IMAPClientError as err:
                self.quiet("imap", logging.WARNING, "IMAP replies: the server refused: %s; trying again "
                           "in %.0fs", err, delay)
            except (OSError, StoreError) as err:
                self.quiet("imap", logging.WARNING, "IMAP replies: %s; trying again in %.0fs", err, delay)
            except Exception:
                self.quiet("imap-bug", logging.ERROR, "IMAP replies failed unexpectedly; trying again in "
                           "%.0fs", delay, exc_info=True)
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
            _ensure(client, self.cfg.failed_folder)
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
            target = self.cfg.processed_folder
            try:
                prepared = prepare_reply(raw)  # in this thread, not in the store's writer
                self.writer.submit(functools.partial(self._apply, raw=raw, folder=folder, uidvalidity=uidvalidity,
                                                     uid=uid, prepared=prepared)).result(timeout=60)
            except StoreError:
                raise
            except Exception as err:  # this reply only: set it aside, with its reason, and go on
                why = f"{type(err).__name__}: {err}"[:500]
                self.quiet("reply", logging.ERROR, "the reply with UID %d could not be applied; it is "
                           "moved to %s: %s", uid, self.cfg.failed_folder, why, exc_info=True)
                self.writer.submit(functools.partial(self._set_aside, raw=raw, folder=folder,
                                                     uidvalidity=uidvalidity, uid=uid, why=why)).result(timeout=60)
                target = self.cfg.failed_folder
            client.add_flags([uid], [b"\\Seen", b"\\Flagged"])
            try:
                client.move([uid], target)
            except IMAPClientError:
                client.copy([uid], target)
                client.delete_messages([uid])
                client.expunge()
            done += 1
        if done:
            self.wake_outbox()
        return done

    def _apply(self, conn: sqlite3.Connection, raw: bytes, folder: str, uidvalidity: int, uid: int,
               prepared: PreparedReply) -> None:
        process_reply(conn, self.secret, self.config, raw, None, time.time(), prepared)
        _save_state(conn, folder, uidvalidity, uid)

    def _set_aside(self, conn: sqlite3.Connection, raw: bytes, folder: str, uidvalidity: int, uid: int,
                   why: str) -> None:
        try:
            reply_failed(conn, self.secret, raw, "", f"IMAP UID {uid}: {why}", time.time())
        except Exception:
            log.exception("could not audit the failed reply with UID %d", uid)
        _save_state(conn, folder, uidvalidity, uid)
