"""The SQLite store (the queue, as in Postfix): schema, connections, transactions and group commit."""

from __future__ import annotations

import concurrent.futures
import fcntl
import os
import queue
import secrets
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .audit import seal_legacy

if TYPE_CHECKING:
    import sqlite_utils


def _import_sqlite_utils():
    """sqlite-utils imports numpy and pandas whenever they are installed (for column types listmod
    never uses); hidden while it is imported, so that the daemon does not carry their ~10 MiB
    (matplotlib, for `listmod stats --chart`, brings numpy into the venv)."""
    hidden = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import sqlite_utils as module
    finally:
        for name in hidden:
            if sys.modules.get(name) is None:
                del sys.modules[name]
    return module

T = TypeVar("T")

SCHEMA_VERSION = 19
# What each version added: 2 threads/escalation/tags/context; 3 members, standing, people;
# 4 replies, digests, imap_state; 5 inbox, notice_log, excerpts, digest_items; 6 the keyed audit
# chain (template, reason_mac, evidence_mac, audit_seals; the old chain sealed, see audit.seal_legacy);
# 7 remotes (each server's last success and failure, for `listmod status`); 8 posts.dmarc (the
# DMARC mitigation chosen for a post's copies: NULL not yet, '' none, 'munge' or 'wrap'); 9
# confirmations (subscribe and unsubscribe requests waiting for the address to confirm) and
# request_log (requests per client address in the last hour); 10 members.nomail and members.metoo
# (a member's delivery options); 11 posts.hold_released (when the owner let an escalated post go
# from its legal hold); 12 posts.verified (the poster may be told what became of the post);
# 17 threads and thread_alias (mediation), posts.claimed_by/claimed_at, member_notes, appealable and
# appeals, scheduled_runs, digests.health (the week's health summary went out with it); 18 a
# partial index of each sender's accepted posts (trust levels read it for every post judged); 19
# posts.digested (when a digest first listed it) and partial indexes of the held queue
KEY_LENGTH = 32


class StoreError(Exception):
    """The store could not commit; the SMTP answer is 451 so that the sender retries."""


class StartupError(Exception):
    """Something in state_dir is unsafe or broken; the daemon refuses to start and says what."""


def private_state_dir(state_dir: Path) -> None:
    """state_dir holds raw mail and the key: made 0700, and everything created in it 0600.
    A state_dir that is a file, sits under a file, or is not ours to write is refused in one line."""
    if state_dir.exists() and not state_dir.is_dir():
        raise StartupError(f"state_dir {state_dir} is a file, not a directory; point [server] state_dir at a "
                           "directory (it is made if missing)")
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise StartupError(f"cannot make state_dir {state_dir}: {err.strerror}; point [server] state_dir at a "
                           "directory this user can create and write") from None
    if not os.access(state_dir, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"state_dir {state_dir} is not readable and writable by this user (uid "
                           f"{os.geteuid()}); chown it to the user that runs listmod, or choose another")
    os.umask(0o077)
    if state_dir.stat().st_mode & 0o077:
        state_dir.chmod(0o700)
    for path in state_dir.iterdir():  # made by an older version, or by hand
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and path.name != "secret.key":
            path.chmod(0o600)


_HELD_LOCKS: dict[Path, int] = {}


def hold_serve_lock(state_dir: Path) -> int:
    """One `listmod serve` per store: an exclusive lock on state_dir/serve.lock, held (by the
    returned descriptor) for the life of the process; the kernel drops it even after kill -9.
    Asked again by the same process (serving again after a reload), it is the same lock."""
    held = _HELD_LOCKS.get(state_dir.resolve())
    if held is not None:
        return held
    fd = os.open(state_dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise StartupError(f"another `listmod serve` (pid {holder}) already uses {state_dir}; stop it first, "
                           "or give this one a state_dir of its own") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD_LOCKS[state_dir.resolve()] = fd
    return fd


def release_serve_lock(state_dir: Path, fd: int) -> None:
    """Give the lock back (a restore holds it only while it puts the store in place)."""
    _HELD_LOCKS.pop(state_dir.resolve(), None)
    os.close(fd)


def load_or_create_secret(state_dir: Path) -> bytes:
    """The daemon's secret key (pseudonyms, moderator tokens): made on first start, mode 0600.
    An existing key must be exactly 32 bytes, mode 0600 and owned by this user, or nothing starts:
    a short key makes tokens guessable, a readable one lets others forge them."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "secret.key"
    if not path.exists():
        tmp = state_dir / f".secret.key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_LENGTH))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # never replaces a key another process made a moment ago
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    st = path.stat()
    if st.st_size != KEY_LENGTH:
        raise StartupError(f"{path} is {st.st_size} bytes; it must be {KEY_LENGTH} random bytes. Move it "
                           "away and start again to have a new one made (tokens in digests already sent "
                           "then stop working)")
    if st.st_uid != os.geteuid():
        raise StartupError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()}); "
                           f"chown it to the user that runs listmod")
    if st.st_mode & 0o077:
        raise StartupError(f"{path} has mode {st.st_mode & 0o777:o}; others could read the key and forge "
                           f"moderators' tokens: chmod 600 {path}")
    return path.read_bytes()


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """PRAGMA quick_check: a damaged store is refused with one line, never served."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as err:
        raise StartupError(f"{path} is not a usable SQLite database ({err}); restore it from a backup") from None
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        raise StartupError(f"{path} is damaged (PRAGMA quick_check: {problems[0]}"
                           f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); "
                           "restore it from a backup")


def _schema(db: sqlite_utils.Database) -> None:
    db.table("messages").create({
        "id": int, "received_at": float, "envelope_from": str, "rcpt_tos": str, "sha256": str,
        "size": int, "peer": str, "raw": bytes,
    }, pk="id", if_not_exists=True)
    db.table("posts").create({
        "id": int, "message": int, "list": str, "short_id": str, "state": str, "action": str,
        "rule": str, "source": str, "actor": str, "reason": str, "evidence": str, "ruleset": str,
        "sender": str, "subject": str, "message_id": str, "created_at": float, "decided_at": float,
    }, pk="id", if_not_exists=True)
    db.table("outbox").create({
        "id": int, "post": int, "kind": str, "list": str, "recipient": str, "envelope_from": str,
        "body": bytes, "state": str, "attempts": int, "next_attempt": float, "last_error": str,
        "created_at": float, "done_at": float,
    }, pk="id", if_not_exists=True)
    for column, kind in (("thread", str), ("escalated", int), ("tags", str), ("context", str),
                         ("excerpt", str), ("parsed", int), ("dmarc", str), ("hold_released", float),
                         ("verified", int), ("category", str)):
        if column not in db.table("posts").columns_dict:  # version 1 stores had no such column
            db.table("posts").add_column(column, kind)
    backfill_digested = "digested" not in db.table("posts").columns_dict
    if backfill_digested:  # when a digest first listed the post (filled in below, once the digests exist)
        db.table("posts").add_column("digested", float)
    db.table("members").create({"list": str, "address": str, "added_at": float},
                         pk=("list", "address"), if_not_exists=True)
    if "nomail" not in db.table("members").columns_dict:   # a member's options: no copies at all, and
        db.table("members").add_column("nomail", int, not_null_default=0)
    if "metoo" not in db.table("members").columns_dict:    # a copy of one's own posts (NULL: the list's metoo)
        db.table("members").add_column("metoo", int)
    if "digest" not in db.table("members").columns_dict:   # a daily digest instead of each post
        db.table("members").add_column("digest", int, not_null_default=0)
    db.table("member_digests").create({"list": str, "sent_at": float, "last_post": int}, pk="list",
                                      if_not_exists=True)
    for column, kind in (("bounce_score", int), ("last_bounce", float), ("disabled_at", float)):
        if column not in db.table("members").columns_dict:
            db.table("members").add_column(column, kind)
    db.table("replies").create({"message_id": str, "sender": str, "received_at": float, "summary": str},
                         pk="message_id", if_not_exists=True)
    db.table("digests").create({"id": int, "list": str, "message_id": str, "sent_at": float, "items": int},
                         pk="id", if_not_exists=True)
    if "dkim_pass" not in db.table("replies").columns_dict:  # 6: did the moderator's domain sign it
        db.table("replies").add_column("dkim_pass", int)
    db.table("imap_state").create({"folder": str, "uidvalidity": int, "last_uid": int}, pk="folder",
                            if_not_exists=True)
    db.table("inbox").create({
        "id": int, "list": str, "received_at": float, "envelope_from": str, "peer": str, "raw": bytes,
        "state": str, "error": str, "done_at": float,
    }, pk="id", if_not_exists=True)
    db.table("notice_log").create({"recipient": str, "at": float}, if_not_exists=True)
    db.table("confirmations").create({"token": str, "list": str, "address": str, "action": str,
                                      "created_at": float, "expires_at": float}, pk="token", if_not_exists=True)
    db.table("request_log").create({"ip": str, "at": float}, if_not_exists=True)
    db.table("request_log").create_index(["ip", "at"], if_not_exists=True)
    db.table("notice_log").create_index(["recipient", "at"], if_not_exists=True)
    db.table("inbox").create_index(["state"], if_not_exists=True)
    if "deferred" not in db.table("digests").columns_dict:
        db.table("digests").add_column("deferred", int)
    db.table("digest_items").create({"digest": int, "post": int}, pk=("digest", "post"), if_not_exists=True)
    db.table("standing").create({"list": str, "address": str, "trust": str, "set_by": str, "set_at": float},
                          pk=("list", "address"), if_not_exists=True)
    for column, kind in (("sanction", str), ("sanction_until", float), ("sanction_prev", str),
                         ("sanction_reason", str), ("told_level", str), ("last_conduct", float)):
        if column not in db.table("standing").columns_dict:
            db.table("standing").add_column(column, kind)
    # before 13, a ban was a trust value; now it is the last step of the sanction ladder
    db.execute("UPDATE standing SET sanction = 'banned', trust = NULL WHERE trust = 'banned'")
    db.table("people").create({"pseudonym": str, "address": str}, pk="pseudonym", if_not_exists=True)
    db.table("remotes").create({"remote": str, "last_ok": float, "last_failure": float, "last_error": str},
                               pk="remote", if_not_exists=True)
    db.table("staff").create({"list": str, "role": str, "address": str}, pk=("list", "role", "address"),
                             if_not_exists=True)
    db.table("audit").create({
        "seq": int, "time": float, "list": str, "post": int, "message_id": str, "sha256": str,
        "sender": str, "action": str, "reason": str, "rule": str, "source": str, "actor": str,
        "ruleset": str, "evidence": str, "prev_hash": str, "hash": str,
    }, pk="seq", if_not_exists=True)
    for column in ("template", "reason_mac", "evidence_mac"):
        if column not in db.table("audit").columns_dict:  # schema 5 and earlier: the bare sha256 chain
            db.table("audit").add_column(column, str)
    db.table("audit_seals").create({"seq": int, "head": str, "records": int, "problems": str,
                                    "sealed_at": float, "mac": str}, pk="seq", if_not_exists=True)
    for column, kind in (("claimed_by", str), ("claimed_at", float)):
        if column not in db.table("posts").columns_dict:
            db.table("posts").add_column(column, kind)
    if "health" not in db.table("digests").columns_dict:
        db.table("digests").add_column("health", float)
    db.table("threads").create({"list": str, "key": str, "subject": str, "started_at": float, "last_at": float,
                                "state": str, "until": float, "reason": str, "changed_by": str},
                               pk=("list", "key"), if_not_exists=True)
    db.table("threads").create_index(["list", "subject"], if_not_exists=True)
    db.table("thread_alias").create({"list": str, "message_id": str, "thread": str}, pk=("list", "message_id"),
                                    if_not_exists=True)
    db.table("member_notes").create({"id": int, "list": str, "address": str, "note": str, "author": str,
                                     "at": float}, pk="id", if_not_exists=True)
    db.table("member_notes").create_index(["list", "address"], if_not_exists=True)
    db.table("appealable").create({"id": int, "list": str, "post": int, "address": str, "kind": str,
                                   "actor": str, "reason": str, "at": float}, pk="id", if_not_exists=True)
    db.table("appeals").create({"id": int, "list": str, "appealable": int, "post": int, "address": str,
                                "text": str, "state": str, "received_at": float, "decided_by": str,
                                "decided_at": float, "outcome": str}, pk="id", if_not_exists=True)
    db.table("scheduled_runs").create({"list": str, "name": str, "last_at": float}, pk=("list", "name"),
                                      if_not_exists=True)
    db.table("posts").create_index(["short_id"], unique=True, if_not_exists=True)
    db.table("posts").create_index(["state", "list"], if_not_exists=True)
    db.table("posts").create_index(["message"], if_not_exists=True)
    db.table("posts").create_index(["list", "sender", "created_at"], if_not_exists=True)
    db.table("posts").create_index(["list", "thread", "created_at"], if_not_exists=True)
    # a sender's accepted posts (trust levels, for every post judged): without it a sender with
    # thousands of held posts made each of their next posts scan them all
    db.execute("CREATE INDEX IF NOT EXISTS idx_posts_accepted_by_sender ON posts (list, sender, created_at) "
               "WHERE state = 'accepted'")
    if backfill_digested:
        db.execute("UPDATE posts SET digested = (SELECT MIN(g.sent_at) FROM digest_items i JOIN digests g "
                   "ON g.id = i.digest WHERE i.post = posts.id) WHERE id IN (SELECT post FROM digest_items)")
    # the held queue, read by every digest: bounded reads however long it grows
    db.execute("CREATE INDEX IF NOT EXISTS idx_posts_held ON posts (list, created_at) WHERE state = 'held'")
    db.execute("CREATE INDEX IF NOT EXISTS idx_posts_held_new ON posts (list, created_at) "
               "WHERE state = 'held' AND digested IS NULL")
    db.execute("CREATE INDEX IF NOT EXISTS idx_posts_held_escalated ON posts (list, created_at) "
               "WHERE state = 'held' AND escalated = 1")
    db.execute("CREATE INDEX IF NOT EXISTS idx_threads_flagged ON threads (list, until) "
               "WHERE state IN ('cooling', 'locked')")   # the digest's threads block
    # what moderators decided since the last digest (only posts once held have a short id)
    db.execute("CREATE INDEX IF NOT EXISTS idx_posts_decided_held ON posts (list, decided_at) "
               "WHERE short_id IS NOT NULL")
    db.table("outbox").create_index(["state", "next_attempt"], if_not_exists=True)
    db.table("outbox").create_index(["post"], if_not_exists=True)
    db.table("audit").create_index(["post"], if_not_exists=True)
    db.table("digests").create_index(["message_id"], unique=True, if_not_exists=True)
    db.table("digest_items").create_index(["post"], if_not_exists=True)
    db.table("digests").create_index(["list", "sent_at"], if_not_exists=True)
    # Append-only, except that an erasable column may be blanked (forgetting a person)
    db.execute("DROP TRIGGER IF EXISTS audit_no_update")
    kept = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in (
        "seq", "time", "list", "post", "message_id", "sha256", "sender", "action", "template", "rule",
        "source", "actor", "ruleset", "reason_mac", "evidence_mac", "prev_hash", "hash"))
    db.execute(f"""CREATE TRIGGER IF NOT EXISTS audit_erase_only BEFORE UPDATE ON audit
                   WHEN {kept} OR (NEW.reason IS NOT OLD.reason AND NEW.reason != '')
                        OR (NEW.evidence IS NOT OLD.evidence AND NEW.evidence != '')
                   BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only (only its erasable columns may be blanked)'); END""")
    db.execute("""CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
                  BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""")
    for verb in ("UPDATE", "DELETE"):
        db.execute(f"""CREATE TRIGGER IF NOT EXISTS audit_seals_no_{verb.lower()} BEFORE {verb} ON audit_seals
                       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class Store:
    """Opens connections to one database file with the settings durability needs."""

    def __init__(self, path: Path, secret: bytes, timeout: float = 5.0, check: bool = False):
        """`check`: run PRAGMA quick_check first (the daemon at start-up; it reads every page)."""
        self.path = path
        self.secret = secret
        self.timeout = timeout
        self.sealed: tuple[int, str, tuple[str, ...]] | None = None  # set when this open upgraded the chain
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self.connect()
        except sqlite3.DatabaseError as err:
            raise StartupError(f"{path} is not a usable SQLite database ({err}); restore it from a "
                               "backup") from None
        try:
            if check:
                check_integrity(conn, path)
            with immediate(conn):
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StartupError(f"{path} was made by a newer listmod (schema {version}; this one "
                                       f"knows {SCHEMA_VERSION}); run that version, or restore a backup")
                if version < SCHEMA_VERSION:
                    _schema(_import_sqlite_utils().Database(conn))
                    if version and version < 6:
                        self.sealed = seal_legacy(conn, secret, time.time())
        finally:
            conn.close()

    def connect(self, synchronous: str = "FULL") -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit).

        FULL (the default) fsyncs at every commit: a 250 must survive a power cut, not just
        kill -9. NORMAL is for the delivery threads' bookkeeping: it survives a crash of the
        process, and what a power cut could lose is covered by the delivery journal or is a retry."""
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction on a fresh connection (for the command line)."""
        conn = self.connect()
        try:
            with immediate(conn):
                yield conn
        finally:
            conn.close()


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error) on a connection in autocommit mode."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]):
        self.fn = fn
        self.future: concurrent.futures.Future = concurrent.futures.Future()


_STOP = object()


class GroupWriter:
    """The daemon's one writer: a thread that commits every queued job in one transaction.

    Each job runs inside its own savepoint, so a job that fails is rolled back alone; the batch
    then commits once (one fsync for all of them). A job's future resolves only after COMMIT
    returned, which is what lets intake answer 250.
    """

    def __init__(self, store: Store, max_batch: int = 512):
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="listmod-writer", daemon=True)
        self.batches = 0
        self.jobs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        job = _Job(fn)
        self._queue.put(job)
        return job.future

    def _run(self) -> None:
        conn = self.store.connect()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [first]
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[_Job, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            for job in batch:
                job.future.set_exception(StoreError(f"cannot start a transaction: {err}"))
            return
        for job in batch:
            try:
                conn.execute("SAVEPOINT job")
                value = job.fn(conn)
                conn.execute("RELEASE job")
                results.append((job, True, value))
            except Exception as err:  # one bad job must not sink the batch
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlite3.Error:
                    pass
                results.append((job, False, err))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for job in batch:
                job.future.set_exception(StoreError(f"commit failed: {err}"))
            return
        self.batches += 1
        self.jobs += len(batch)
        for job, ok, value in results:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)


def insert(conn: sqlite3.Connection, sql: str, args: tuple) -> int:
    """Run an INSERT and return the new row's id."""
    rowid = conn.execute(sql, args).lastrowid
    assert rowid is not None
    return rowid
