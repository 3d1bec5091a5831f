"""`listmod backup DIR` and `listmod restore DIR`: the store, taken with SQLite's online backup while
the daemon serves, together with what lives outside it (the secret key that keys the audit chain,
the tokens and the pseudonyms; the delivery journal), checked, and described by a manifest whose
audit head a restore verifies against."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from . import audit
from .config import Config
from .store import SCHEMA_VERSION, StartupError, check_integrity, hold_serve_lock, private_state_dir, release_serve_lock

MANIFEST = "manifest.json"
KEY = "secret.key"
JOURNAL = "delivered.journal"


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Manifest:
    created_at: float
    schema: int
    audit_head: tuple[int, str]
    files: dict[str, str]          # name -> sha256

    def as_json(self) -> str:
        return json.dumps({"created_at": self.created_at, "schema": self.schema,
                           "audit_head": {"seq": self.audit_head[0], "hash": self.audit_head[1]},
                           "files": self.files}, indent=2) + "\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup(config: Config, target: Path, secret: bytes) -> Manifest:
    """Copy the store (online: the daemon may be serving) and the key into `target` (made 0700; it
    must be empty or new), check the copy and write the manifest."""
    source = config.database_path
    if not source.exists():
        raise BackupError(f"there is no store at {source} to back up")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; give a new or empty directory for the backup")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.chmod(0o700)
    copy = target / source.name
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst, pages=1024, sleep=0.005)  # in steps: the daemon's writer is never held up long
    finally:
        src.close()
        dst.close()
    conn = sqlite3.connect(copy)
    try:  # one self-contained file (the copy inherits WAL mode, which would leave -wal/-shm beside it)
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    os.chmod(copy, 0o600)
    for name in (KEY, JOURNAL):
        path = config.server.state_dir / name
        if path.exists():
            shutil.copyfile(path, target / name)
            os.chmod(target / name, 0o600)
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        check_integrity(conn, copy)
        result = audit.verify(conn, secret)
        if not result.ok:
            raise BackupError(f"the audit chain in the copy does not verify ({result.problems[0]}); run "
                              "`listmod audit verify` on the store")
        manifest = Manifest(time.time(), conn.execute("PRAGMA user_version").fetchone()[0], result.head,
                            {p.name: _sha256(p) for p in sorted(target.iterdir())})
    finally:
        conn.close()
    (target / MANIFEST).write_text(manifest.as_json())
    os.chmod(target / MANIFEST, 0o600)
    return manifest


def read_manifest(source: Path) -> Manifest:
    try:
        data = json.loads((source / MANIFEST).read_text())
        return Manifest(data["created_at"], data["schema"], (data["audit_head"]["seq"], data["audit_head"]["hash"]),
                        dict(data["files"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BackupError(f"{source} holds no readable {MANIFEST} ({err}); is it a `listmod backup` directory?") from None


def restore(config: Config, source: Path) -> tuple[Manifest, Path | None]:
    """Put a backup in place of the store (never while a daemon serves it). A store already there is
    moved aside, not deleted. Returns the manifest and where the old store went."""
    manifest = read_manifest(source)
    for name, digest in manifest.files.items():
        path = source / name
        if not path.exists() or _sha256(path) != digest:
            raise BackupError(f"{path} is missing or changed since the backup was made; it cannot be restored")
    if manifest.schema > SCHEMA_VERSION:
        raise BackupError(f"the backup was made by a newer listmod (schema {manifest.schema}); restore it with that")
    state_dir = config.server.state_dir
    private_state_dir(state_dir)
    try:
        lock = hold_serve_lock(state_dir)
    except StartupError as err:
        raise BackupError(f"{err}; a restore needs the daemon stopped") from None
    try:
        target = config.database_path
        moved = None
        if target.exists():
            moved = target.with_name(f"{target.name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
            target.rename(moved)
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(source / target.name, target)
        os.chmod(target, 0o600)
        for name in (KEY, JOURNAL):
            if (source / name).exists():
                if (state_dir / name).exists() and name == KEY:
                    (state_dir / name).rename(state_dir / f"{name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
                shutil.copyfile(source / name, state_dir / name)
                os.chmod(state_dir / name, 0o600)
    finally:
        release_serve_lock(state_dir, lock)
    return manifest, moved
