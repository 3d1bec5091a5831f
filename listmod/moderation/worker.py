"""The daemon's moderation worker: applies the replies mailed to LIST-moderation@ (stored by
intake), queues due digests as outbox rows, and applies expire_after. Like every worker it meets
the others only in the store; one reply, one list or one digest that fails is set aside with its
reason and the rest goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .. import memberdigest
from ..config import Config, ListConfig
from ..intake.inbox import pending_replies, settle_reply
from ..ladder import end_sanctions
from ..oplog import event
from ..posts import prune_notice_log
from ..privacy import purge_expired
from ..scheduled import post_due
from ..store import GroupWriter, StoreError
from ..subscriptions import expire_confirmations
from ..supervise import QuietLog
from ..threads import end_cooldowns
from .apply import expire_held, prepare_reply, process_reply, reply_failed
from .digest import Digest, make_digest

log = logging.getLogger("listmod.moderation")


class ModerationWorker:
    def __init__(self, config: Config, writer: GroupWriter, secret: bytes, wake_outbox: Callable[[], None],
                 tick: float = 1.0):
        self.config = config
        self.writer = writer
        self.secret = secret
        self.wake_outbox = wake_outbox
        self.tick = tick
        self.quiet = QuietLog(log)
        self._swept = 0.0

    async def _write(self, fn):
        return await asyncio.wrap_future(self.writer.submit(fn))

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.once()
            except StoreError as err:
                self.quiet("store", logging.WARNING, "moderation round: the store is busy (%s); trying "
                           "again", err)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.tick)
            except TimeoutError:
                pass

    async def once(self) -> list[Digest]:
        now = time.time()
        # expired confirmations and messages past retention: once a minute, or more often when a list
        # keeps its messages for less than two minutes
        retention = [m.retain_messages for m in self.config.lists if m.retain_messages > 0]
        sweep = now - self._swept >= min([60.0, *(max(r / 2, 0.5) for r in retention)])
        if sweep:
            self._swept = now

        def housekeeping(conn) -> int:
            prune_notice_log(conn, now)
            ended = end_sanctions(conn, self.secret, self.config, now)
            if ended:
                log.info("%d sanction(s) ended", ended)
            warmed = end_cooldowns(conn, self.secret, now, self.config)
            if warmed:
                log.info("%d thread cool-down(s) ended", warmed)
            made = 0
            for mlist in self.config.lists:   # members' daily digests and scheduled posts, when due
                memberdigest.send_due(conn, mlist, self.config.server.hostname, now)
                made += len(post_due(conn, self.secret, self.config, mlist, now))
            if sweep:
                expire_confirmations(conn, now)
                purged = purge_expired(conn, self.config, now)
                if purged:
                    log.info("%d raw message(s) past retain_messages blanked", purged)
            return expire_held(conn, self.secret, self.config, now) + made
        expired = await self._write(housekeeping)
        if expired:
            log.info("%d held post(s) expired or scheduled post(s) made", expired)
            self.wake_outbox()
        if await self.apply_replies():
            self.wake_outbox()
        sent = []
        for mlist in self.config.lists:
            try:
                digest = await self._write(lambda conn, m=mlist: self._make(conn, m, now))
            except StoreError:
                raise
            except Exception:  # one list's digest must not hold back the others'
                self.quiet(f"digest:{mlist.address}", logging.ERROR, "the digest for %s could not be "
                           "made; the other lists go on", mlist.address, exc_info=True)
                continue
            if digest is not None:
                sent.append(digest)
                self.wake_outbox()
                event(log, logging.INFO, "digest", list=digest.list, posts=len(digest.posts), bytes=len(digest.data),
                      deferred=digest.deferred or None)
        return sent

    async def apply_replies(self) -> int:
        """Apply the stored replies, each in a transaction of its own; one that fails is marked
        failed with its reason and audited, and the next one is applied."""
        done = 0
        while True:
            rows = await self._write(lambda conn: pending_replies(conn, 20))
            if not rows:
                return done
            for reply_id, list_address, raw in rows:
                via = self.config.list_for(list_address)
                at = time.time()
                try:
                    prepared = await asyncio.to_thread(prepare_reply, raw)  # reading is not for the writer

                    def apply(conn, raw=raw, via=via, reply_id=reply_id, at=at, prepared=prepared):
                        process_reply(conn, self.secret, self.config, raw, via, at, prepared)
                        settle_reply(conn, reply_id, "applied", "", at)
                    await self._write(apply)
                except StoreError:
                    raise
                except Exception as err:
                    why = f"{type(err).__name__}: {err}"[:500]
                    self.quiet("reply", logging.ERROR, "a moderation reply (inbox %d) could not be applied "
                               "and is set aside: %s", reply_id, why, exc_info=True)

                    def set_aside(conn, raw=raw, reply_id=reply_id, why=why, list_address=list_address):
                        try:
                            reply_failed(conn, self.secret, raw, list_address, why, time.time())
                        except Exception:  # the reply is set aside even if its record cannot be made
                            log.exception("could not audit the failed reply %d", reply_id)
                        settle_reply(conn, reply_id, "failed", why, time.time())
                    await self._write(set_aside)
                done += 1

    def _make(self, conn, mlist: ListConfig, now: float) -> Digest | None:
        return make_digest(conn, self.secret, self.config, mlist, now)
