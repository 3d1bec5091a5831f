"""The append-only, hash-chained record of every decision, with people kept as keyed pseudonyms."""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

GENESIS = "0" * 64

# The fields the hash covers, in this order. Addresses appear only as pseudonyms, and free text
# from the message (subject, evidence) stays out, so forgetting a person never breaks the chain.
HASHED = ("seq", "time", "list", "post", "message_id", "sha256", "sender", "action", "reason",
          "rule", "source", "actor", "ruleset", "prev_hash")


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time: float
    list: str
    post: int | None
    message_id: str
    sha256: str
    sender: str          # as stored: the pseudonym; `read` joins the address back when known
    action: str
    reason: str
    rule: str
    source: str
    actor: str
    ruleset: str
    evidence: str
    prev_hash: str
    hash: str


def pseudonym(secret: bytes, address: str) -> str:
    """A stable keyed stand-in for an address (HMAC-SHA256, 128 bits shown)."""
    if not address:
        return ""
    return hmac.new(secret, address.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def remember_person(conn: sqlite3.Connection, secret: bytes, address: str) -> str:
    alias = pseudonym(secret, address)
    if alias:
        conn.execute("INSERT OR IGNORE INTO people (pseudonym, address) VALUES (?, ?)",
                     (alias, address.strip().lower()))
    return alias


def record_hash(fields: dict) -> str:
    canonical = json.dumps([fields[k] for k in HASHED], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(conn: sqlite3.Connection, secret: bytes, *, list: str, post: int | None,
           message_id: str, sha256: str, sender: str, action: str, reason: str, rule: str,
           source: str, actor: str, ruleset: str = "", evidence: str = "",
           at: float | None = None) -> AuditRecord:
    """Append one record; must run inside the caller's write transaction (which serialises seq)."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    fields: dict[str, Any] = {
        "seq": seq, "time": round(at if at is not None else time.time(), 6), "list": list,
        "post": post, "message_id": message_id, "sha256": sha256,
        "sender": remember_person(conn, secret, sender), "action": action, "reason": reason,
        "rule": rule, "source": source, "actor": actor, "ruleset": ruleset, "prev_hash": prev,
    }
    fields["hash"] = record_hash(fields)
    fields["evidence"] = evidence
    conn.execute(f"INSERT INTO audit ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
                 tuple(fields.values()))
    return AuditRecord(**fields)


@dataclass(frozen=True)
class VerifyResult:
    records: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: sqlite3.Connection) -> VerifyResult:
    """Recompute every hash and every link of the chain."""
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    count = 0
    cursor = conn.execute(f"SELECT {', '.join(HASHED)}, hash FROM audit ORDER BY seq")
    for row in cursor:
        count += 1
        fields = dict(zip(HASHED + ("hash",), row, strict=True))
        seq = fields["seq"]
        if seq != expected_seq:
            problems.append(f"record {seq}: expected sequence number {expected_seq}; records are missing")
        if fields["prev_hash"] != prev:
            problems.append(f"record {seq}: prev_hash does not match the hash of record {seq - 1}")
        if record_hash(fields) != fields["hash"]:
            problems.append(f"record {seq}: its content does not match its hash; it was altered")
        prev = fields["hash"]
        expected_seq = seq + 1
    return VerifyResult(count, tuple(problems))


def read(conn: sqlite3.Connection, since: float | None = None, list: str | None = None,
         limit: int | None = None) -> Iterator[AuditRecord]:
    """Records in order, with each sender's address joined back (the pseudonym if forgotten)."""
    where: builtins.list[str] = []  # (`list` is a parameter here)
    args: builtins.list[Any] = []
    if since is not None:
        where.append("a.time >= ?")
        args.append(since)
    if list:
        where.append("a.list = ?")
        args.append(list)
    sql = ("SELECT a.seq, a.time, a.list, a.post, a.message_id, a.sha256, "
           "COALESCE(p.address, a.sender), a.action, a.reason, a.rule, a.source, a.actor, "
           "a.ruleset, a.evidence, a.prev_hash, a.hash FROM audit a "
           "LEFT JOIN people p ON p.pseudonym = a.sender")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY a.seq"
    if limit:
        sql = f"SELECT * FROM ({sql.replace(' ORDER BY a.seq', ' ORDER BY a.seq DESC')} LIMIT {int(limit)}) ORDER BY 1"
    for row in conn.execute(sql, args):
        yield AuditRecord(*row)


def as_dict(record: AuditRecord) -> dict:
    return asdict(record)
