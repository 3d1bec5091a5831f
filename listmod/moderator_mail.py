"""The daemon's moderation worker: sends due digests (IMAP APPEND, or a local Maildir and mail to the
moderators) and applies expire_after. Like every worker it meets the others only in the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .config import Config
from .delivery import write_maildir
from .digest import Digest, build_digest, digest_due, record_digest
from .moderation import expire_held
from .posts import enqueue_notice
from .store import GroupWriter

log = logging.getLogger("listmod.moderation")


class ModerationWorker:
    def __init__(self, config: Config, writer: GroupWriter, secret: bytes, wake_outbox: Callable[[], None],
                 append: Callable[[Digest], Awaitable[None]] | None = None, tick: float = 1.0):
        self.config = config
        self.writer = writer
        self.secret = secret
        self.wake_outbox = wake_outbox
        self.append = append       # IMAP APPEND when [imap] is configured
        self.tick = tick

    async def _write(self, fn):
        return await asyncio.wrap_future(self.writer.submit(fn))

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.once()
            except Exception:
                log.exception("moderation round failed; trying again")
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.tick)
            except TimeoutError:
                pass

    async def once(self) -> list[Digest]:
        now = time.time()
        expired = await self._write(lambda conn: expire_held(conn, self.secret, self.config, now))
        if expired:
            log.info("%d held post(s) expired", expired)
            self.wake_outbox()
        sent = []
        for mlist in self.config.lists:
            digest = await self._write(lambda conn, m=mlist: self._make(conn, m, now))
            if digest is None:
                continue
            await self._deliver(digest)
            sent.append(digest)
        return sent

    def _make(self, conn, mlist, now: float) -> Digest | None:
        """Build and record a digest in one transaction: it is recorded if and only if it exists."""
        if not digest_due(conn, mlist, now):
            return None
        digest = build_digest(conn, self.secret, mlist, self.config.server.hostname, now)
        if digest is None:
            return None
        record_digest(conn, digest, now)
        if self.append is None and self.config.outbound is not None:
            for moderator in mlist.moderators:
                enqueue_notice(conn, None, mlist, moderator, digest.data, now)
        return digest

    async def _deliver(self, digest: Digest) -> None:
        if self.append is not None:
            await self.append(digest)  # retried by the IMAP side until the server takes it
            return
        name = "digest-" + digest.message_id.strip("<>").split("@")[0]
        await asyncio.to_thread(write_maildir, self.config.digest_maildir_path, name, digest.data)
        self.wake_outbox()
        log.info("digest of %d held post(s) for %s written to %s", len(digest.posts), digest.list,
                 self.config.digest_maildir_path / "new")
