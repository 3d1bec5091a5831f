"""Config and rule-set loads as audit records: which config (its sha256) and which rule set (its
digest) decided from when on, and every change to a list's moderators and owner."""

from __future__ import annotations

import hashlib
import sqlite3
import time

from . import audit
from .config import Config
from .rules import RuleSet


def config_digest(config: Config) -> str:
    """sha256 of the config file's bytes ("embedded" for the embedded defaults)."""
    if config.path is None:
        return hashlib.sha256(b"listmod embedded defaults").hexdigest()
    try:
        return hashlib.sha256(config.path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _last(conn: sqlite3.Connection, action: str) -> str | None:
    row = conn.execute("SELECT ruleset FROM audit WHERE action = ? ORDER BY seq DESC LIMIT 1", (action,)).fetchone()
    return row[0] if row else None


def record_config(conn: sqlite3.Connection, secret: bytes, config: Config, at: float | None = None) -> int:
    """At start: a record when the config differs from the last one recorded, and one per moderator
    or owner added or removed since. Returns how many records were made."""
    at = time.time() if at is None else at
    made = 0
    digest = config_digest(config)
    where = str(config.path) if config.path else "embedded defaults"
    if _last(conn, "config-loaded") != digest:
        audit.append(conn, secret, list="", post=None, message_id="", sha256="", sender="",
                     action="config-loaded", reason=f"{where} loaded: {len(config.lists)} list(s)",
                     template="a config was loaded", rule="", source=where, actor="listmod", ruleset=digest, at=at)
        made += 1
    for mlist in config.lists:
        wanted = {("moderator", a) for a in mlist.moderators} | ({("owner", mlist.owner)} if mlist.owner else set())
        known = set(conn.execute("SELECT role, address FROM staff WHERE list = ?", (mlist.address,)).fetchall())
        for role, address in sorted(wanted - known):
            conn.execute("INSERT INTO staff (list, role, address) VALUES (?, ?, ?)", (mlist.address, role, address))
            made += _staff_record(conn, secret, mlist.address, role, address, "added", where, digest, at)
        for role, address in sorted(known - wanted):
            conn.execute("DELETE FROM staff WHERE list = ? AND role = ? AND address = ?",
                         (mlist.address, role, address))
            made += _staff_record(conn, secret, mlist.address, role, address, "removed", where, digest, at)
    return made


def _staff_record(conn: sqlite3.Connection, secret: bytes, list_address: str, role: str, address: str,
                  change: str, where: str, digest: str, at: float) -> int:
    template = f"{'An' if role[0] in 'aeiou' else 'A'} {role} of {{list}} was {change} in the config."
    audit.append(conn, secret, list=list_address, post=None, message_id="", sha256="", sender=address,
                 action=f"{role}-{change}", reason=template.replace("{list}", list_address), template=template,
                 rule="", source=where, actor="config", ruleset=digest, at=at)
    return 1


def record_rules(conn: sqlite3.Connection, secret: bytes, ruleset: RuleSet, rules_dir: str,
                 at: float | None = None) -> bool:
    """A record when the rule set in force differs from the last one recorded."""
    if _last(conn, "rules-loaded") == ruleset.digest:
        return False
    text = f"rule set {ruleset.digest[:12]} in force: {len(ruleset.rules)} rule(s) in {len(ruleset.files)} file(s)"
    audit.append(conn, secret, list="", post=None, message_id="", sha256="", sender="", action="rules-loaded",
                 reason=text, template="a rule set was put in force", rule="", source=rules_dir,
                 actor="listmod", ruleset=ruleset.digest, at=at)
    return True
