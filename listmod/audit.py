"""The append-only record of every decision: an HMAC chain keyed outside the database, people as
keyed pseudonyms, and personal text in erasable columns (docs/design.md, "The audit trail").

Hashed (chained) fields: seq, time, list, post, message_id, the raw message's sha256, the sender's
pseudonym, action, the unrendered reason template, rule, source, the actor (a role, or
role:PSEUDONYM for a person), the rule set's digest, and a keyed digest of each erasable column.
Erasable columns: the rendered reason and the evidence of what matched; addresses live only in
the `people` table. Blanking an erasable column is allowed (and reported as erased); changing it
is tampering. The chain key is derived from state_dir/secret.key, never stored in the store, so
whoever can write the database cannot recompute the chain; the head (`Audit-Head: SEQ HASH`) goes
out in every digest and receipt, so a cut tail is caught against a moderator's copy.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

GENESIS = "0" * 64

# The fields the HMAC covers, in this order.
HASHED = ("seq", "time", "list", "post", "message_id", "sha256", "sender", "action", "template",
          "rule", "source", "actor", "ruleset", "reason_mac", "evidence_mac", "prev_hash")
ERASABLE = ("reason", "evidence")
# Records made before the keyed chain (schema 5 and earlier): a bare sha256 over these, sealed
# at the upgrade (table audit_seals) so that their head is bound to the key as well.
LEGACY_HASHED = ("seq", "time", "list", "post", "message_id", "sha256", "sender", "action", "reason",
                 "rule", "source", "actor", "ruleset", "prev_hash")

FREE_TEXT = "(free text)"   # the template of a reason a person wrote in their own words


class Area(StrEnum):
    """What a record is about (`listmod audit --only AREA`)."""

    POSTS = "posts"
    PEOPLE = "people"
    CONFIG = "config"
    TRAIL = "trail"


POST_ACTIONS = ("accept", "hold", "reject", "discard", "escalate", "refused", "undelivered",
                "reply-failed", "dmarc-mitigated", "hold-released", "claimed", "kept", "thread-cooled",
                "thread-locked", "thread-unlocked", "thread-warmed", "appealed", "appeal-granted", "appeal-denied")
PEOPLE_ACTIONS = ("member-added", "member-removed", "member-options", "trusted", "banned",
                  "standing-cleared", "outbox-retry", "made-leader", "trust-cleared", "promoted", "demoted",
                  "noted", "warned", "moderated", "sanction-lifted", "sanction-ended", "bounce",
                  "member-disabled", "member-enabled", "complaint")
CONFIG_ACTIONS = ("config-loaded", "rules-loaded", "moderator-added", "moderator-removed",
                  "owner-added", "owner-removed")
TRAIL_ACTIONS = ("erased", "sealed")


def area_of(action: str) -> Area:
    if action in PEOPLE_ACTIONS:
        return Area.PEOPLE
    if action in CONFIG_ACTIONS:
        return Area.CONFIG
    if action in TRAIL_ACTIONS:
        return Area.TRAIL
    return Area.POSTS


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
    reason: str          # rendered; "" once erased
    template: str
    rule: str
    source: str
    actor: str           # a role ("rules", "expiry") or role:PSEUDONYM; `read` joins the address
    ruleset: str
    evidence: str
    prev_hash: str
    hash: str
    erased: tuple[str, ...] = ()


@functools.lru_cache(maxsize=8)
def chain_key(secret: bytes) -> bytes:
    """The chain's own key, derived from the daemon's secret (state_dir/secret.key)."""
    return hmac.new(secret, b"listmod audit chain v2", hashlib.sha256).digest()


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


def actor_field(conn: sqlite3.Connection, secret: bytes, actor: str) -> str:
    """"moderator:ADDR" -> "moderator:PSEUDONYM"; a bare role ("rules", "expiry") stays."""
    role, sep, who = actor.partition(":")
    if not sep or not who:
        return actor
    return f"{role}:{remember_person(conn, secret, who)}"


def _mac(key: bytes, seq: int, column: str, value: str) -> str:
    if not value:
        return ""
    return hmac.new(key, f"{seq}:{column}:".encode() + value.encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()


def record_hash(key: bytes, fields: dict) -> str:
    canonical = json.dumps([fields[k] for k in HASHED], ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, canonical.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def legacy_hash(fields: dict) -> str:
    canonical = json.dumps([fields[k] for k in LEGACY_HASHED], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _seal_mac(key: bytes, seq: int, head: str) -> str:
    return hmac.new(key, f"seal:{seq}:{head}".encode(), hashlib.sha256).hexdigest()


def append(conn: sqlite3.Connection, secret: bytes, *, list: str, post: int | None,
           message_id: str, sha256: str, sender: str, action: str, reason: str, template: str,
           rule: str, source: str, actor: str, ruleset: str = "", evidence: str = "",
           at: float | None = None) -> AuditRecord:
    """Append one record; must run inside the caller's write transaction (which serialises seq).
    `template` is the reason before people's data was filled in (FREE_TEXT for a person's words)."""
    key = chain_key(secret)
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    fields: dict[str, Any] = {
        "seq": seq, "time": round(at if at is not None else time.time(), 6), "list": list,
        "post": post, "message_id": message_id, "sha256": sha256,
        "sender": remember_person(conn, secret, sender), "action": action, "template": template,
        "rule": rule, "source": source, "actor": actor_field(conn, secret, actor), "ruleset": ruleset,
        "reason_mac": _mac(key, seq, "reason", reason), "evidence_mac": _mac(key, seq, "evidence", evidence),
        "prev_hash": prev,
    }
    fields["hash"] = record_hash(key, fields)
    fields["reason"] = reason
    fields["evidence"] = evidence
    conn.execute(f"INSERT INTO audit ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
                 tuple(fields.values()))
    return AuditRecord(**{k: fields[k] for k in AuditRecord.__dataclass_fields__ if k != "erased"})


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """(seq, hash) of the last record: (0, GENESIS) for an empty trail."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (last[0], last[1]) if last else (0, GENESIS)


def head_header(conn: sqlite3.Connection) -> str:
    """The value of the Audit-Head header that digests and receipts carry."""
    seq, digest = head(conn)
    return f"{seq} {digest}"


def parse_anchor(text: str) -> tuple[int, str]:
    """"SEQ:HASH" or "SEQ HASH" (as the Audit-Head header has it) -> (seq, hash)."""
    seq, sep, digest = " ".join(text.split()).replace(" ", ":", 1).partition(":")  # a folded header too
    digest = digest.strip().lower()
    if not sep or not seq.isascii() or not seq.isdigit() or len(digest) != 64 or \
            any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"an anchor is SEQ:HASH as a digest's or receipt's Audit-Head header shows it "
                         f"(a number, then 64 hex digits); got {text!r}")
    return int(seq), digest


def seal_legacy(conn: sqlite3.Connection, secret: bytes, at: float) -> tuple[int, str, tuple[str, ...]] | None:
    """At the upgrade to the keyed chain: verify the old sha256 chain and seal its head with the
    key (table audit_seals); the next record links to that head. None when there is nothing to seal."""
    if conn.execute("SELECT 1 FROM audit_seals").fetchone():
        return None
    rows = conn.execute(f"SELECT {', '.join(LEGACY_HASHED)}, hash FROM audit ORDER BY seq").fetchall()
    if not rows:
        return None
    problems, last = _verify_legacy([dict(zip(LEGACY_HASHED + ("hash",), r, strict=True)) for r in rows])
    seq, digest = rows[-1][0], rows[-1][-1]
    conn.execute("INSERT INTO audit_seals (seq, head, records, problems, sealed_at, mac) VALUES (?, ?, ?, ?, ?, ?)",
                 (seq, digest, len(rows), "\n".join(problems), at, _seal_mac(chain_key(secret), seq, digest)))
    state = f"{len(problems)} problem(s) found in it" if problems else "it verified"
    append(conn, secret, list="", post=None, message_id="", sha256="", sender="", action="sealed",
           reason=f"The {len(rows)} record(s) made before the keyed chain end at {seq} {digest}; {state}. "
                  "This record starts the keyed chain from that head.",
           template="the chain made before the upgrade was checked and sealed at its head",
           rule="", source="upgrade", actor="listmod", evidence="\n".join(problems), at=at)
    return seq, digest, tuple(problems)


def _verify_legacy(rows: builtins.list[dict]) -> tuple[builtins.list[str], str]:
    problems: builtins.list[str] = []
    prev, expected = GENESIS, 1
    for fields in rows:
        seq = fields["seq"]
        if seq != expected:
            problems.append(f"record {seq}: expected sequence number {expected}; records are missing")
        if fields["prev_hash"] != prev:
            problems.append(f"record {seq}: prev_hash does not match the hash of record {seq - 1}")
        if legacy_hash(fields) != fields["hash"]:
            problems.append(f"record {seq} (made before the keyed chain): its content does not match its "
                            "hash; it was altered")
        prev, expected = fields["hash"], seq + 1
    return problems, prev


@dataclass(frozen=True)
class VerifyResult:
    records: int
    problems: tuple[str, ...]
    erased: int = 0                 # records whose personal text was blanked (allowed)
    head: tuple[int, str] = (0, GENESIS)
    sealed: int = 0                 # records of the chain before the upgrade, checked against its seal

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: sqlite3.Connection, secret: bytes,
           anchors: tuple[tuple[int, str], ...] = ()) -> VerifyResult:
    """Recompute every link and HMAC of the chain; check each anchor (seq, hash) taken from a
    digest or receipt: the chain must still hold that hash at that place."""
    key = chain_key(secret)
    problems: builtins.list[str] = []
    seal = conn.execute("SELECT seq, head, records, problems, mac FROM audit_seals ORDER BY seq LIMIT 1").fetchone()
    sealed_seq = 0
    prev, expected, count, erased = GENESIS, 1, 0, 0
    hashes: dict[int, str] = {}
    if seal is not None:
        sealed_seq, sealed_head, _, old_problems, mac = seal
        if not hmac.compare_digest(mac.encode(), _seal_mac(key, sealed_seq, sealed_head).encode()):
            problems.append("the seal of the records made before the keyed chain was altered")
        if old_problems:
            problems += [f"at the upgrade: {p}" for p in old_problems.splitlines()]
        legacy = [dict(zip(LEGACY_HASHED + ("hash",), r, strict=True)) for r in conn.execute(
            f"SELECT {', '.join(LEGACY_HASHED)}, hash FROM audit WHERE seq <= ? ORDER BY seq", (sealed_seq,))]
        count = len(legacy)
        for fields in legacy:
            hashes[fields["seq"]] = fields["hash"]
        found, last = _verify_legacy(legacy)
        if not old_problems:
            problems += found
        if not legacy or legacy[-1]["seq"] != sealed_seq or last != sealed_head:
            problems.append(f"the records before the keyed chain no longer end in the sealed head "
                            f"(record {sealed_seq}); records were removed or rewritten")
        prev, expected = sealed_head, sealed_seq + 1
    cursor = conn.execute(f"SELECT {', '.join(HASHED)}, hash, reason, evidence FROM audit WHERE seq > ? "
                          "ORDER BY seq", (sealed_seq,))
    for row in cursor:
        count += 1
        fields = dict(zip(HASHED + ("hash",) + ERASABLE, row, strict=True))
        seq = fields["seq"]
        hashes[seq] = fields["hash"]
        if seq != expected:
            problems.append(f"record {seq}: expected sequence number {expected}; records are missing")
        if fields["prev_hash"] != prev:
            problems.append(f"record {seq}: prev_hash does not match the hash of record {seq - 1}")
        if not hmac.compare_digest(record_hash(key, fields).encode(), str(fields["hash"]).encode()):
            problems.append(f"record {seq}: its content does not match its hash; it was altered")
        blanked = False
        for column in ERASABLE:
            value, mac = fields[column] or "", fields[f"{column}_mac"] or ""
            if not value and mac:
                blanked = True
            elif value and not hmac.compare_digest(_mac(key, seq, column, value).encode(), mac.encode()):
                problems.append(f"record {seq}: its {column} was changed (only blanking it, to forget "
                                "a person, is allowed)")
        erased += blanked
        prev, expected = fields["hash"], seq + 1
    for seq, digest in anchors:
        if seq not in hashes:
            problems.append(f"anchor {seq}: the chain has no record {seq} (it ends at {expected - 1}); "
                            "records were cut from its end")
        elif not hmac.compare_digest(hashes[seq].encode(), digest.encode()):
            problems.append(f"anchor {seq}: record {seq} no longer has the hash a moderator was sent; "
                            "the chain was rewritten")
    return VerifyResult(count, tuple(problems), erased, (expected - 1, prev), sealed_seq)


def erase(conn: sqlite3.Connection, secret: bytes, seqs: builtins.list[int], actor: str, reason: str,
          at: float | None = None) -> int:
    """Blank the erasable columns of these records (what forgetting a person does) and record that
    it was done. Records made before the keyed chain keep their reason (it is inside their hash)."""
    sealed = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_seals").fetchone()[0]
    changed = 0
    for seq in seqs:
        changed += conn.execute("UPDATE audit SET reason = CASE WHEN seq > ? THEN '' ELSE reason END, "
                                "evidence = '' WHERE seq = ?", (sealed, seq)).rowcount
    append(conn, secret, list="", post=None, message_id="", sha256="", sender="", action="erased",
           reason=reason, template=f"the personal text of {changed} record(s) was erased", rule="",
           source="audit", actor=actor, at=at)
    return changed


def read(conn: sqlite3.Connection, since: float | None = None, list: str | None = None,
         limit: int | None = None, only: Area | None = None) -> Iterator[AuditRecord]:
    """Records in order, with people's addresses joined back (the pseudonym once forgotten)."""
    where: builtins.list[str] = []  # (`list` is a parameter here)
    args: builtins.list[Any] = []
    if since is not None:
        where.append("a.time >= ?")
        args.append(since)
    if list:
        where.append("a.list = ?")
        args.append(list)
    if only is not None:
        actions = {Area.POSTS: POST_ACTIONS, Area.PEOPLE: PEOPLE_ACTIONS, Area.CONFIG: CONFIG_ACTIONS,
                   Area.TRAIL: TRAIL_ACTIONS}[only]
        where.append(f"a.action IN ({', '.join('?' * len(actions))})")
        args += actions
    sql = ("SELECT a.seq, a.time, a.list, a.post, a.message_id, a.sha256, "
           "COALESCE(p.address, a.sender), a.action, COALESCE(a.reason, ''), COALESCE(a.template, ''), "
           "a.rule, a.source, a.actor, a.ruleset, COALESCE(a.evidence, ''), a.prev_hash, a.hash, "
           "COALESCE(a.reason_mac, ''), COALESCE(a.evidence_mac, ''), q.address FROM audit a "
           "LEFT JOIN people p ON p.pseudonym = a.sender "
           "LEFT JOIN people q ON instr(a.actor, ':') > 0 AND q.pseudonym = substr(a.actor, instr(a.actor, ':') + 1)")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY a.seq"
    if limit:
        sql = f"SELECT * FROM ({sql.replace(' ORDER BY a.seq', ' ORDER BY a.seq DESC')} LIMIT {int(limit)}) ORDER BY 1"
    for row in conn.execute(sql, args):
        fields = builtins.list(row[:17])
        reason_mac, evidence_mac, actor_address = row[17:]
        if actor_address:  # role:PSEUDONYM -> role:ADDRESS while the person is remembered
            fields[12] = f"{fields[12].partition(':')[0]}:{actor_address}"
        erased = tuple(c for c, v, m in (("reason", fields[8], reason_mac), ("evidence", fields[14], evidence_mac))
                       if m and not v)
        yield AuditRecord(*fields, erased=erased)  # type: ignore[misc]


def as_dict(record: AuditRecord) -> dict:
    out = asdict(record)
    out["erased"] = list(record.erased)
    out["area"] = area_of(record.action).value
    return out
