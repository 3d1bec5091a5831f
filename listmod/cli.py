"""The `listmod` command: serve, check, members, queue, approve/reject/discard, audit."""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from . import audit as audit_trail
from .config import Config, load_config, normalize_address
from .message import printable
from .posts import AlreadyDecided, PostNotFound, decide_held, find_post, held_posts, is_escalated
from .rules import load_rules
from .standing import add_member, remove_member, set_options
from .store import StartupError, Store, check_integrity, load_or_create_secret, private_state_dir
from .tomlfile import ConfigError, parse_duration


def version() -> str:
    """The installed distribution's version (the source tree's when run from it uninstalled)."""
    try:
        return importlib.metadata.version("listmod")
    except importlib.metadata.PackageNotFoundError:
        from . import __version__
        return __version__


class CommandError(Exception):
    """A failure the user can act on; printed as one line, exit status 1."""


def _open_store(config: Config) -> Store:
    if config.path is None and not config.database_path.exists():
        # the embedded defaults in a directory where listmod never ran: creating an empty store
        # here would answer "0 held posts" about the wrong place
        raise CommandError(f"no listmod.toml found (looked at --config, ./listmod.toml and $LISTMOD_CONFIG) "
                           f"and no store at {config.database_path} (the one `listmod serve` makes without a "
                           "config); run this where listmod runs, or give --config PATH")
    private_state_dir(config.server.state_dir)
    secret = load_or_create_secret(config.server.state_dir)
    return Store(config.database_path, secret, timeout=config.server.commit_timeout)


def _duration(text: str, option: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise CommandError(f"{option} {text!r}: {err}") from None


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False, sort_keys=False), flush=True)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from .daemon import run
    if config.path is None and not config.server.rules_dir.exists():
        # the embedded defaults where no rules were ever written (listmod installed from a wheel):
        # start with the built-in checks and the list's defaults; rules added here load at once
        config.server.rules_dir.mkdir(mode=0o755)
        print(f"listmod: no rules yet; made the empty {config.server.rules_dir} (rules written there are "
              "loaded within a second; the repository's rules/ has a starter set)", file=sys.stderr)
    rules = load_rules(config.server.rules_dir)  # refuse to start on a bad rule set
    return run(config, rules)


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    rules = load_rules(config.server.rules_dir)
    where = config.path or "embedded defaults"
    print(f"ok: {where}: {len(config.lists)} list(s); {len(rules.rules)} rule(s) in "
          f"{len(rules.files)} file(s) under {config.server.rules_dir}; rule set {rules.digest[:12]}")
    for warning in _dkim_warnings(config):
        print(f"warning: {warning}")
    return 0


def _dkim_warnings(config: Config) -> list[str]:
    """Lists without require_dkim whose moderators' replies have carried a passing DKIM signature:
    turning it on costs them nothing and refuses a forged From that comes with a leaked token."""
    if not config.database_path.exists():
        return []
    conn = sqlite3.connect(f"file:{config.database_path}?mode=ro", uri=True)
    try:
        warnings = []
        for mlist in config.lists:
            if mlist.require_dkim or not mlist.moderators:
                continue
            signed = conn.execute(
                f"SELECT COUNT(*) FROM replies WHERE dkim_pass = 1 AND sender IN ({', '.join('?' * len(mlist.moderators))})",
                list(mlist.moderators)).fetchone()[0]
            if signed:
                warnings.append(f"{mlist.address}: require_dkim is off, but {signed} of its moderators' replies "
                                f"carried a passing DKIM signature (Authentication-Results of {config.server.authserv_id}); "
                                "set require_dkim = true so that a forged From with a leaked token is refused")
        return warnings
    except sqlite3.Error:
        return []  # an older store without the column: nothing known yet
    finally:
        conn.close()


def _list(config: Config, address: str):
    mlist = config.list_for(address)
    if mlist is None:
        known = ", ".join(m.address for m in config.lists)
        raise CommandError(f"{address} is not a configured list (configured: {known})")
    return mlist


def _addresses(given: list[str]) -> list[str]:
    try:
        return [normalize_address(a) for a in given]
    except ValueError as err:
        raise CommandError(str(err)) from None


def cmd_members(args: argparse.Namespace, config: Config) -> int:
    mlist = _list(config, args.list)
    store = _open_store(config)
    if args.action == "list":
        conn = store.connect()
        rows = conn.execute("SELECT address, added_at, nomail, metoo, digest FROM members WHERE list = ? "
                            "ORDER BY address", (mlist.address,)).fetchall()
        for address, added, nomail, metoo, digest in rows:
            metoo_now = bool(mlist.metoo if metoo is None else metoo)
            if args.json:
                _print_json({"list": mlist.address, "address": address, "added_at": added,
                             "nomail": bool(nomail), "metoo": metoo_now, "digest": bool(digest)})
            else:
                chosen = {None: "", 1: "metoo", 0: "not_metoo"}[metoo]   # only what the member chose
                options = " ".join(o for o in ("nomail" if nomail else "", chosen, "digest" if digest else "") if o)
                print(f"{address}  ({options})" if options else address)
        return 0
    if not args.addresses:
        raise CommandError(f"give one or more addresses: listmod members {args.action} {mlist.address} ADDR...")
    addresses = _addresses(args.addresses)
    if args.action == "options":
        changes: dict[str, bool | None] = {}
        for name in ("nomail", "metoo", "digest"):
            value = getattr(args, name)
            if value is not None:
                changes[name] = None if value == "default" else value == "on"
        if not changes:
            raise CommandError("say what to set: --nomail on|off, --metoo on|off|default, --digest on|off")
        with store.transaction() as conn:
            for address in addresses:
                try:
                    said = set_options(conn, store.secret, mlist.address, address, changes, actor=_admin())
                except KeyError:
                    raise CommandError(f"{address} is not a member of {mlist.address}") from None
                print(f"{address}: {said or 'unchanged'}")
        return 0
    with store.transaction() as conn:
        for address in addresses:
            if args.action == "add":
                changed = add_member(conn, store.secret, mlist.address, address, actor=_admin(), reason=args.reason or "")
                print(f"{'added' if changed else 'already a member:'} {address}")
            else:
                changed = remove_member(conn, store.secret, mlist.address, address, actor=_admin(),
                                        reason=args.reason or "")
                print(f"{'removed' if changed else 'not a member:'} {address}")
    return 0


def cmd_queue(args: argparse.Namespace, config: Config) -> int:
    store = _open_store(config)
    conn = store.connect()
    list_address = _list(config, args.list).address if args.list else None
    held = held_posts(conn, list_address)
    for p in held:
        escalated = is_escalated(conn, p.id)
        if args.json:
            _print_json({"id": p.label, "list": p.list, "sender": p.sender, "subject": p.subject,
                         "rule": p.rule, "source": p.source, "reason": p.reason,
                         "held_at": p.created_at, "message_id": p.message_id, "escalated": escalated})
        else:  # printable(): a subject stored by an older version may still hold terminal escapes
            print(f"{p.label}{'  ESCALATED' if escalated else ''}  {_when(p.created_at)}  {p.list}  {p.sender or '<>'}  "
                  f"{printable(p.subject) or '(no subject)'}\n      held by {p.rule} ({p.source}): "
                  f"{printable(p.reason)}")
    if not args.json:
        print(f"{len(held)} held post(s)")
    return 0


def _admin() -> str:
    """The actor of a command-line act: admin:USER (the login name, kept as a pseudonym in the chain)."""
    try:
        return f"admin:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"admin:uid{os.geteuid()}"


def _decide(args: argparse.Namespace, config: Config, action: str, reason: str,
            template: str = audit_trail.FREE_TEXT) -> int:
    store = _open_store(config)
    try:
        with store.transaction() as conn:
            record = find_post(conn, args.id)
            done = decide_held(conn, store.secret, config, record, action, reason, actor=_admin(),
                               template=template)
    except (PostNotFound, AlreadyDecided) as err:
        raise CommandError(str(err)) from None
    follow = {"accepted": "it will be delivered to the list now",
              "rejected": "the poster will get a notice with the reason",
              "discarded": "nobody is told"}[done.state]
    print(f"{done.label}: {done.state} ({follow})")
    return 0


def cmd_approve(args: argparse.Namespace, config: Config) -> int:
    return _decide(args, config, "accept", args.reason or "Approved by the list admin.",
                   audit_trail.FREE_TEXT if args.reason else "Approved by the list admin.")


def cmd_reject(args: argparse.Namespace, config: Config) -> int:
    return _decide(args, config, "reject", args.reason)


def cmd_discard(args: argparse.Namespace, config: Config) -> int:
    return _decide(args, config, "discard", args.reason)


def cmd_audit(args: argparse.Namespace, config: Config) -> int:
    store = _open_store(config)
    conn = store.connect()
    if args.action == "head":
        seq, digest = audit_trail.head(conn)
        if args.json:
            _print_json({"seq": seq, "hash": digest})
        else:
            print(f"{seq} {digest}")
        return 0
    if args.action == "verify":
        try:
            check_integrity(conn, store.path)
            anchors = tuple(audit_trail.parse_anchor(a) for a in args.anchor or ())
        except StartupError as err:
            raise CommandError(str(err)) from None
        except ValueError as err:
            raise CommandError(str(err)) from None
        result = audit_trail.verify(conn, store.secret, anchors)
        if args.json:
            _print_json({"ok": result.ok, "records": result.records, "problems": list(result.problems),
                         "erased": result.erased, "head": {"seq": result.head[0], "hash": result.head[1]},
                         "sealed": result.sealed})
        elif result.ok:
            extra = [f"{result.erased} record(s) with personal text erased"] if result.erased else []
            extra += [f"{len(anchors)} anchor(s) hold"] if anchors else []
            extra += [f"records 1-{result.sealed} made before the keyed chain, sealed"] if result.sealed else []
            print(f"ok: {result.records} audit record(s), chain intact{''.join('; ' + e for e in extra)}; "
                  f"head {result.head[0]} {result.head[1]}")
        else:
            for problem in result.problems:
                print(problem)
        if not result.ok:
            raise CommandError(f"the audit chain is broken: {len(result.problems)} problem(s)")
        return 0
    since = time.time() - _duration(args.since, '--since') if args.since else None
    list_address = _list(config, args.list).address if args.list else None
    only = audit_trail.Area(args.only) if args.only else None
    for record in audit_trail.read(conn, since=since, list=list_address, limit=args.last, only=only):
        if args.json:
            _print_json(audit_trail.as_dict(record))
        else:
            reason = printable(record.reason) if record.reason or not record.erased else "(erased)"
            print(f"#{record.seq} {_when(record.time)} {record.list or '-'} {record.action:<7} "
                  f"{record.sender or '<>'} {record.message_id or '-'}\n"
                  f"      by {record.actor}, rule {record.rule or '-'} ({record.source}): {reason}")
    return 0


def cmd_outbox(args: argparse.Namespace, config: Config) -> int:
    from .delivery.outbox import outbox_rows, requeue
    store = _open_store(config)
    if args.action == "retry":
        if not args.ids and not args.failed:
            raise CommandError("name the rows to send again (listmod outbox retry ID...) or give --failed")
        if any(not i.isascii() or not i.isdigit() for i in args.ids):
            raise CommandError("outbox ids are numbers, as `listmod outbox` shows them")
        with store.transaction() as conn:
            changed = requeue(conn, None if args.failed else [int(i) for i in args.ids], time.time())
        print(f"{changed} failed row(s) queued again; the daemon sends them within seconds")
        return 0
    conn = store.connect()
    rows = outbox_rows(conn, failed_only=args.failed)
    for rid, kind, mlist, rcpt, state, attempts, next_at, error, post in rows:
        if args.json:
            _print_json({"id": rid, "kind": kind, "list": mlist, "recipient": rcpt, "state": state,
                         "attempts": attempts, "next_attempt": next_at, "last_error": error, "post": post})
        else:
            when = f"next try {_when(next_at)}" if state == "pending" else state
            print(f"{rid}  {kind:<7} {state:<8} {mlist}  {rcpt}  attempts {attempts}, {when}"
                  + (f"\n      {printable(error)}" if error else ""))
    if not args.json:
        print(f"{len(rows)} row(s) {'failed' if args.failed else 'waiting or failed'}")
    return 0


def cmd_trust(args: argparse.Namespace, config: Config) -> int:
    from .ladder import lift_sanction, set_sanction, set_trust
    mlist = _list(config, args.list)
    if not args.reason.strip():
        raise CommandError("say why with --reason: it goes into the audit trail")
    store = _open_store(config)
    addresses = _addresses(args.addresses)
    reason, actor = args.reason.strip(), _admin()
    with store.transaction() as conn:
        for address in addresses:
            if args.level == "banned":   # the last step of the sanction ladder (`listmod sanction`)
                set_sanction(conn, store.secret, config, mlist, address, "banned", reason=reason, actor=actor)
                changed = True
            elif args.level == "none":
                changed = set_trust(conn, store.secret, config, mlist, address, "", actor=actor, reason=reason)
                changed = lift_sanction(conn, store.secret, config, mlist, address, reason=reason,
                                        actor=actor) or changed
            else:
                changed = set_trust(conn, store.secret, config, mlist, address, args.level, actor=actor,
                                    reason=reason)
            print(f"{address}: {args.level} on {mlist.address}{'' if changed else ' (already)'}")
    return 0


def cmd_sanction(args: argparse.Namespace, config: Config) -> int:
    from .ladder import lift_sanction, set_sanction
    mlist = _list(config, args.list)
    if not (args.reason or "").strip():
        raise CommandError("say why with --reason: the member is told it, and it goes into the audit trail")
    [address] = _addresses([args.address])
    store = _open_store(config)
    until = None
    if args.duration:
        if args.step in ("lift", "note"):
            raise CommandError(f"--for goes with warning, moderated or banned, not {args.step}")
        try:
            until = time.time() + parse_duration(args.duration)
        except ValueError as err:
            raise CommandError(f"--for {args.duration}: {err}") from None
    with store.transaction() as conn:
        if args.step == "lift":
            done = lift_sanction(conn, store.secret, config, mlist, address, reason=args.reason.strip(),
                                 actor=_admin())
            print(f"{address}: {'sanction lifted' if done else 'no sanction was in force'} on {mlist.address}")
        else:
            said = set_sanction(conn, store.secret, config, mlist, address, args.step, until=until,
                                reason=args.reason.strip(), actor=_admin())
            print(f"{address}: {said} on {mlist.address}")
    return 0


def cmd_member(args: argparse.Namespace, config: Config) -> int:
    from .ladder import level_of, standing_of
    mlist = _list(config, args.list)
    [address] = _addresses([args.address])
    store = _open_store(config)
    conn = store.connect()
    try:
        now = time.time()
        row = conn.execute("SELECT added_at, nomail, metoo FROM members WHERE list = ? AND address = ?",
                           (mlist.address, address)).fetchone()
        standing = standing_of(conn, mlist.address, address)
        level = level_of(conn, mlist, address, now, standing)
        sanction = standing.current(now)
        approved = conn.execute("SELECT COUNT(*) FROM posts WHERE list = ? AND sender = ? AND state = 'accepted'",
                                (mlist.address, address)).fetchone()[0]
        alias = audit_trail.pseudonym(store.secret, address)
        history = conn.execute("SELECT time, action, reason, actor FROM audit WHERE list = ? AND sender = ? "
                               "ORDER BY seq", (mlist.address, alias)).fetchall()
    finally:
        conn.close()
    until = (f" until {_when(standing.until)}, then {standing.previous or 'none'}"
             if sanction and standing.until and sanction == standing.sanction else "")
    info = {"list": mlist.address, "address": address, "member": row is not None,
            "member_since": row[0] if row else None, "nomail": bool(row and row[1]), "level": level,
            "trust_by_hand": standing.trust or None, "sanction": sanction or None,
            "sanction_until": standing.until if sanction and sanction == standing.sanction else None,
            "approved_posts": approved,
            "history": [{"time": t, "action": a, "reason": r, "actor": act} for t, a, r, act in history]}
    if args.json:
        _print_json(info)
        return 0
    print(f"{address} on {mlist.address}: {'member since ' + _when(row[0]) if row else 'not a member'}"
          f"{' (nomail)' if row and row[1] else ''}")
    print(f"  trust level: {level}{' (given by hand)' if standing.trust else ''}; {approved} approved post(s)")
    print(f"  sanction:    {sanction or 'none'}{until}")
    print("  history:")
    for t, a, r, _actor in history:
        print(f"    {_when(t)}  {a:<16} {printable(r) if r else '(erased)'}")
    return 0


def cmd_explain(args: argparse.Namespace, config: Config) -> int:
    from .rules.explain import explain, explanation_text
    mlist = _list(config, args.list)
    rules = load_rules(Path(args.rules)) if args.rules else load_rules(config.server.rules_dir)
    try:
        raw = Path(args.message).read_bytes() if args.message != "-" else sys.stdin.buffer.read()
    except OSError as err:
        raise CommandError(f"cannot read {args.message}: {err.strerror}") from None
    store = _open_store(config)
    conn = store.connect()
    sender = normalize_address(args.sender) if args.sender else None
    result = explain(conn, raw, mlist, config, rules, sender)
    if args.json:
        _print_json(result.as_dict())
    else:
        print(explanation_text(result))
    return 0


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    from .rules.explain import replay
    rules = load_rules(Path(args.rules))
    store = _open_store(config)
    conn = store.connect()
    since = time.time() - _duration(args.since, '--since') if args.since else None
    list_address = _list(config, args.list).address if args.list else None
    result = replay(conn, config, rules, since=since, list_address=list_address)
    for c in result.changes:
        if args.json:
            _print_json({"post": c.post, "list": c.list, "sender": c.sender, "subject": c.subject,
                         "received_at": c.at, "old": {"action": c.old_action, "rule": c.old_rule,
                                                      "reason": c.old_reason},
                         "new": {"action": c.new.action, "rule": c.new.rule_id, "source": c.new.source,
                                 "reason": c.new.reason, "evidence": c.new.evidence}})
        else:
            print(f"post {c.post}  {_when(c.at)}  {c.list}  {c.sender or '<>'}  {c.subject or '(no subject)'}\n"
                  f"    was: {c.old_action:<8} {c.old_rule or '-'}: {c.old_reason}\n"
                  f"    now: {c.new.action:<8} {c.new.rule_id} ({c.new.source}): {c.new.reason}")
    if args.json:
        _print_json({"judged": result.judged, "changed": len(result.changes),
                     "transitions": result.transitions, "ruleset": rules.digest})
    else:
        print(f"{result.judged} post(s) judged again with {args.rules} (rule set {rules.digest[:12]}); "
              f"{len(result.changes)} would change")
        for transition, n in result.transitions.items():
            print(f"  {transition}: {n}")
    return 0


def _ago(ts: float | None, now: float) -> str:
    from .tomlfile import format_duration
    return f"{format_duration(now - ts)} ago" if ts else "never"


def status_of(conn: sqlite3.Connection, config: Config, now: float) -> dict[str, Any]:
    """What an operator asks first: is mail coming in, what waits, what fails and why."""
    day = now - 86400
    intake = {"messages": conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0],
              "last_hour": conn.execute("SELECT COUNT(*) FROM messages WHERE received_at >= ?",
                                        (now - 3600,)).fetchone()[0],
              "last_message": conn.execute("SELECT MAX(received_at) FROM messages").fetchone()[0],
              "decisions_24h": dict(conn.execute("SELECT action, COUNT(*) FROM posts WHERE created_at >= ? "
                                                 "GROUP BY action ORDER BY action", (day,)).fetchall())}
    held = {}
    for mlist in config.lists:
        ages = [now - t for (t,) in conn.execute("SELECT created_at FROM posts WHERE list = ? AND state = 'held'",
                                                   (mlist.address,))]
        held[mlist.address] = {
            "held": len(ages), "under_1h": sum(a < 3600 for a in ages),
            "under_1d": sum(3600 <= a < 86400 for a in ages), "older": sum(a >= 86400 for a in ages),
            "escalated": conn.execute("SELECT COUNT(*) FROM posts WHERE list = ? AND state = 'held' AND "
                                      "escalated = 1", (mlist.address,)).fetchone()[0]}
    outbox = {}
    for state, count, oldest in conn.execute(
            "SELECT state, COUNT(*), MIN(created_at) FROM outbox WHERE state != 'sent' GROUP BY state"):
        last_error = conn.execute("SELECT last_error FROM outbox WHERE state = ? AND last_error IS NOT NULL "
                                  "ORDER BY id DESC LIMIT 1", (state,)).fetchone()
        outbox[state] = {"rows": count, "oldest": oldest, "last_error": last_error[0] if last_error else None}
    rules = conn.execute("SELECT ruleset, time FROM audit WHERE action = 'rules-loaded' ORDER BY seq DESC "
                         "LIMIT 1").fetchone()
    return {
        "store": str(config.database_path), "at": now, "intake": intake, "held": held, "outbox": outbox,
        "digests_waiting": conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'digest' AND state IN "
                                        "('pending', 'sending')").fetchone()[0],
        "rules": {"digest": rules[0], "loaded_at": rules[1]} if rules else None,
        "remotes": {r: {"last_ok": ok, "last_failure": bad, "last_error": err or None} for r, ok, bad, err in
                    conn.execute("SELECT remote, last_ok, last_failure, last_error FROM remotes ORDER BY remote")},
    }


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    store = _open_store(config)
    conn = store.connect()
    now = time.time()
    st = status_of(conn, config, now)
    if args.json:
        _print_json(st)
        return 0
    i = st["intake"]
    decisions = ", ".join(f"{a} {n}" for a, n in i["decisions_24h"].items()) or "none"
    print(f"store {st['store']}")
    print(f"intake: {i['messages']:,} message(s), {i['last_hour']} in the last hour, the last "
          f"{_ago(i['last_message'], now)}; decisions in 24h: {decisions}")
    for address, h in st["held"].items():
        print(f"held on {address}: {h['held']} (under 1h {h['under_1h']}, under 1d {h['under_1d']}, older "
              f"{h['older']}; escalated {h['escalated']})")
    if not st["outbox"]:
        print("outbox: nothing waiting, nothing failed")
    for state, o in st["outbox"].items():
        print(f"outbox {state}: {o['rows']} row(s), the oldest queued {_ago(o['oldest'], now)}"
              + (f"\n      last error: {printable(o['last_error'])}" if o["last_error"] else ""))
    print(f"digests waiting to go out: {st['digests_waiting']}")
    r = st["rules"]
    print(f"rules: {r['digest'][:12]} in force since {_when(r['loaded_at'])}" if r else "rules: none recorded yet")
    for remote, v in st["remotes"].items():
        print(f"{remote}: last success {_ago(v['last_ok'], now)}, last failure {_ago(v['last_failure'], now)}"
              + (f"\n      {printable(v['last_error'])}" if v["last_error"] and (v["last_failure"] or 0) >=
                 (v["last_ok"] or 0) else ""))
    return 0


def cmd_digest(args: argparse.Namespace, config: Config) -> int:
    from .moderation.digest import make_digest
    lists = [_list(config, args.list)] if args.list else list(config.lists)
    store = _open_store(config)
    with store.transaction() as conn:
        made = [(m, make_digest(conn, store.secret, config, m, time.time(), force=True)) for m in lists]
    for mlist, digest in made:
        if digest is None:
            print(f"{mlist.address}: nothing is held; no digest")
        else:
            where = config.imap.digest_folder if config.imap else config.digest_maildir_path / "new"
            print(f"{mlist.address}: a digest of {len(digest.posts)} post(s) is queued for {where}; the running "
                  "daemon delivers it within seconds")
    return 0


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    from .backup import BackupError, backup
    store = _open_store(config)
    try:
        manifest = backup(config, Path(args.dir), store.secret)
    except BackupError as err:
        raise CommandError(str(err)) from None
    seq, head = manifest.audit_head
    print(f"backed up {config.database_path} and its key to {args.dir}; audit head {seq} {head} (keep it: "
          f"`listmod audit verify --anchor {seq}:{head}` after a restore)")
    return 0


def cmd_privacy(args: argparse.Namespace, config: Config) -> int:
    from . import privacy
    store = _open_store(config)
    if args.action == "release":
        if not (args.reason or "").strip():
            raise CommandError("say why with --reason: it goes into the audit trail")
        conn = store.connect()
        try:
            record = find_post(conn, args.target)
        except PostNotFound as err:
            raise CommandError(str(err)) from None
        finally:
            conn.close()
        with store.transaction() as conn:
            released = privacy.release_hold(conn, store.secret, record.id, actor=_admin(), reason=args.reason)
        print(f"post {record.label}: {'released from its legal hold' if released else 'was not under a legal hold'}")
        return 0
    [address] = _addresses([args.target])
    if args.action == "export":
        conn = store.connect()
        try:
            text = privacy.export_json(privacy.export(conn, store.secret, address))
        finally:
            conn.close()
        if args.out:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
            os.chmod(args.out, 0o600)
            print(f"everything stored about {address} written to {args.out}")
        else:
            print(text)
        return 0
    if not (args.reason or "").strip():
        raise CommandError("say why with --reason (e.g. \"erasure requested by the person on 2026-11-26\"): "
                           "it goes into the audit trail, without the address")
    with store.transaction() as conn:
        report = privacy.forget(conn, store.secret, address, actor=_admin(), reason=args.reason)
    state = config.server.state_dir
    report.files = privacy.scrub_files([p for p in state.iterdir() if p.is_dir()], address)
    conn = store.connect()
    try:
        report.compacted = privacy.compact(conn)
    except sqlite3.OperationalError:
        report.compacted = False
    finally:
        conn.close()
    print(report.summary())
    return 0


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    from .backup import BackupError, restore
    try:
        manifest, moved = restore(config, Path(args.dir))
    except BackupError as err:
        raise CommandError(str(err)) from None
    seq, head = manifest.audit_head
    print(f"restored {config.database_path} from {args.dir} (made {_when(manifest.created_at)}); "
          + (f"the store that was there is kept as {moved}; " if moved else "")
          + f"check it with `listmod audit verify --anchor {seq}:{head}`")
    return 0


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    from .doctor import examine
    print(f"config: {config.path or 'embedded defaults'}: {len(config.lists)} list(s)")
    problems = 0
    for finding in examine(config):
        print(f"{'ok  ' if finding.ok else 'FAIL'} {finding.part}: {printable(finding.what)}"
              + (f"\n       fix: {finding.fix}" if finding.fix else ""))
        problems += not finding.ok
    print(f"{problems} problem(s)" if problems else "no problems found")
    return 1 if problems else 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                        help="listmod.toml to use (default ./listmod.toml, then $LISTMOD_CONFIG, "
                             "then the embedded defaults)")
    parser = argparse.ArgumentParser(prog="listmod", parents=[common],
                                     description="Moderation daemon for mailing lists: every decision "
                                                 "with a stated, audited reason.")
    parser.add_argument("--version", action="version", version=f"listmod {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    add("serve", cmd_serve, "run the daemon (SMTP/LMTP intake and delivery)")
    add("check", cmd_check, "check the config and the rule files; errors name file:line")
    p = add("members", cmd_members, "add, remove or list a list's members")
    p.add_argument("action", choices=["add", "remove", "list", "options"])
    p.add_argument("list", help="the list's address")
    p.add_argument("addresses", nargs="*", metavar="ADDR")
    p.add_argument("--reason", help="why; recorded in the audit trail")
    p.add_argument("--nomail", choices=["on", "off"], help="options: no copies at all (stays a member)")
    p.add_argument("--metoo", choices=["on", "off", "default"],
                   help="options: a copy of one's own posts (default: the list's metoo)")
    p.add_argument("--digest", choices=["on", "off"], help="options: a digest every member_digest_every "
                                                          "instead of each post")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("queue", cmd_queue, "show the held posts")
    p.add_argument("--list", help="only this list")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("approve", cmd_approve, "approve a held post: it is delivered")
    p.add_argument("id", help="the held post's id, as `listmod queue` shows it")
    p.add_argument("--reason", help="recorded in the audit trail")
    for name, func, what in (("reject", cmd_reject, "reject a held post: the poster gets the reason"),
                             ("discard", cmd_discard, "discard a held post silently")):
        p = add(name, func, what)
        p.add_argument("id", help="the held post's id, as `listmod queue` shows it")
        p.add_argument("--reason", required=True, help="why; recorded, and sent to the poster on reject")
    p = add("outbox", cmd_outbox, "show outgoing mail that waits or failed, or `outbox retry` it")
    p.add_argument("action", nargs="?", choices=["show", "retry"], default="show")
    p.add_argument("ids", nargs="*", metavar="ID", help="with retry: the rows to send again")
    p.add_argument("--failed", action="store_true", help="only failed rows; with retry: all of them")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("trust", cmd_trust, "give trust by hand (trusted, leader), ban, or clear both (none)")
    p.add_argument("list", help="the list's address")
    p.add_argument("addresses", nargs="+", metavar="ADDR")
    p.add_argument("--level", choices=["trusted", "leader", "banned", "none"], default="trusted")
    p.add_argument("--reason", required=True, help="why (required): it goes into the audit trail")
    p = add("sanction", cmd_sanction, "put a member on a step of the ladder (note, warning, moderated, "
                                      "banned), or lift it")
    p.add_argument("list", help="the list's address")
    p.add_argument("address", metavar="ADDR")
    p.add_argument("step", choices=["note", "warning", "moderated", "banned", "lift"])
    p.add_argument("--for", dest="duration", help="an end, such as 14d; then back to the step before")
    p.add_argument("--reason", help="why (required): the member is told it (but of a note)")
    p = add("member", cmd_member, "one person on a list: trust level, sanction, history")
    p.add_argument("action", choices=["show"])
    p.add_argument("list", help="the list's address")
    p.add_argument("address", metavar="ADDR")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p = add("explain", cmd_explain, "show every rule considered for a message and the decision; "
                                    "changes nothing")
    p.add_argument("message", help="the message file (.eml), or - for standard input")
    p.add_argument("--list", required=True, help="the list it is sent to")
    p.add_argument("--sender", help="the envelope sender (default: the From address)")
    p.add_argument("--rules", help="judge with the rules in this directory instead")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p = add("replay", cmd_replay, "judge stored posts again with another rule set and show what would "
                                  "change; changes nothing")
    p.add_argument("--rules", required=True, help="the directory of the rule set to try")
    p.add_argument("--since", help="only posts newer than this, e.g. 30d")
    p.add_argument("--list", help="only this list")
    p.add_argument("--json", action="store_true", help="one JSON object per changed post, then a summary")
    p = add("status", cmd_status, "what comes in, what is held, what waits or fails and why, each remote's "
                                  "last success and failure")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p = add("digest", cmd_digest, "`digest send [LIST]`: make and queue a digest of the held posts now")
    p.add_argument("action", choices=["send"])
    p.add_argument("list", nargs="?", help="only this list (default: every list with held posts)")
    p = add("backup", cmd_backup, "copy the store (online, while serving) and its key to a new directory")
    p.add_argument("dir", help="a new or empty directory")
    p = add("restore", cmd_restore, "put a backup in place of the store (the daemon stopped; the old store "
                                    "is kept aside)")
    p.add_argument("dir", help="a directory made by `listmod backup`")
    p = add("privacy", cmd_privacy, "what is stored about a person: export it, forget it, or release a "
                                    "post from its legal hold")
    p.add_argument("action", choices=["export", "forget", "release"])
    p.add_argument("target", help="an address (export, forget) or a post id (release)")
    p.add_argument("--out", help="export: write the JSON to this file (mode 0600) instead of stdout")
    p.add_argument("--reason", help="forget, release: why; recorded in the audit trail")
    add("doctor", cmd_doctor, "check the config, the rules, state_dir, the key, the store, and reach and log "
                              "in to each server; every problem with its fix")
    from .communitycli import register
    register(add)
    p = add("audit", cmd_audit, "show the audit trail; `audit verify` the chain; `audit head` prints its head")
    p.add_argument("action", nargs="?", choices=["show", "verify", "head"], default="show")
    p.add_argument("--anchor", action="append", metavar="SEQ:HASH",
                   help="with verify: a head taken from a digest's or receipt's Audit-Head header; the "
                        "chain must still hold it (repeatable)")
    p.add_argument("--only", choices=[a.value for a in audit_trail.Area],
                   help="only records about posts, people (members, standing), config or the trail itself")
    p.add_argument("--since", help="only records newer than this, e.g. 1h, 7d")
    p.add_argument("--list", help="only this list")
    p.add_argument("--last", type=int, help="only the last N records")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None))
        return args.func(args, config)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        if args.command == "serve":
            print("listmod: not started; fix the problems above (`listmod check` lists them)",
                  file=sys.stderr)
        return 2
    except (CommandError, StartupError) as err:
        print(f"listmod: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
