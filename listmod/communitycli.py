"""The community commands of `listmod`: stats, report, evidence, thread and appeals
(docs/community.md). Registered on the parser by cli.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from .config import Config


def _since(args: argparse.Namespace, default: str) -> tuple[float, float]:
    from .cli import _duration
    until = time.time()
    return until - _duration(args.since or default, "--since"), until


def cmd_stats(args: argparse.Namespace, config: Config) -> int:
    from .cli import CommandError, _list, _open_store
    from .stats import chart, health, text_report
    lists = [_list(config, args.list)] if args.list else list(config.lists)
    since, until = _since(args, "90d")
    conn = _open_store(config).connect()
    figures = [health(conn, m.address, since, until, with_rules=args.rules) for m in lists]
    if args.chart:
        if len(figures) != 1:
            raise CommandError("--chart draws one list: add --list ADDRESS")
        chart(figures[0], args.chart)
    for h in figures:
        if args.json:
            print(json.dumps(h.as_dict(), ensure_ascii=False), flush=True)
        else:
            print(text_report(h), end="")
    if args.chart:
        print(f"chart written to {args.chart}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from .cli import _list, _open_store
    from .report import build, render
    list_address = _list(config, args.list).address if args.list else ""
    since, until = _since(args, "90d")
    store = _open_store(config)
    report = build(store.connect(), store.secret, since, until, list_address)
    text = render(report, args.format)
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"report written to {args.out}; audit chain head {report.chain_head}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if report.chain_problems:
        print(f"listmod: the audit chain did NOT verify ({len(report.chain_problems)} problem(s)); do not "
              "publish this report before `listmod audit verify` is clean", file=sys.stderr)
        return 1
    return 0


def _post_and_list(conn, config: Config, ident: str):
    """The post an id names and its list, or a one-line CommandError."""
    from .cli import CommandError
    from .posts import PostNotFound, find_post
    try:
        post = find_post(conn, ident)
    except PostNotFound as err:
        raise CommandError(str(err)) from None
    mlist = config.list_for(post.list)
    if mlist is None:
        raise CommandError(f"post {post.label} belongs to {post.list}, which is no longer configured")
    return post, mlist


def cmd_evidence(args: argparse.Namespace, config: Config) -> int:
    from .cli import _open_store
    from .evidence import bundle
    store = _open_store(config)
    conn = store.connect()
    post, mlist = _post_and_list(conn, config, args.id)
    data = bundle(conn, store.secret, mlist, post.id, config.server.hostname, note=args.note or "")
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        print(f"evidence for {post.label} written to {args.out} ({len(data):,} bytes)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_thread(args: argparse.Namespace, config: Config) -> int:
    from .cli import _duration, _open_store
    from .threads import set_state
    store = _open_store(config)
    user = os.environ.get("USER") or "admin"
    with store.transaction() as conn:
        post, mlist = _post_and_list(conn, config, args.id)
        key = conn.execute("SELECT COALESCE(thread, '') FROM posts WHERE id = ?", (post.id,)).fetchone()[0] \
            or post.message_id
        now = time.time()
        until = now + (_duration(args.duration, "--for") if args.duration else mlist.cooldown) \
            if args.action == "cool" else None
        state = {"cool": "cooling", "lock": "locked", "unlock": ""}[args.action]
        set_state(conn, store.secret, config, mlist, key, state, until=until, actor=f"admin:{user}",
                  reason=args.reason or "", source="command line", post_id=post.id, at=now)
    print(f"the thread of {post.label} on {mlist.address}: "
          + {"cool": f"cooling down until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(until or 0))}",
             "lock": "locked", "unlock": "open"}[args.action])
    return 0


def cmd_appeals(args: argparse.Namespace, config: Config) -> int:
    from .appeals import open_appeals
    from .cli import _list, _open_store
    lists = [_list(config, args.list)] if args.list else list(config.lists)
    conn = _open_store(config).connect()
    for mlist in lists:
        for a in open_appeals(conn, mlist.address):
            if args.json:
                print(json.dumps({"id": f"AP{a.id}", "list": a.list, "kind": a.kind, "post": a.post,
                                  "address": a.address, "appeal": a.text, "decided_by": a.decided_by,
                                  "reason": a.reason, "received_at": a.received_at}, ensure_ascii=False))
            else:
                print(f"AP{a.id}  {a.list}  {a.address} appeals the {a.kind} by {a.decided_by}: {a.text}")
    return 0


def register(add: Callable[[str, Callable, str], argparse.ArgumentParser]) -> None:
    p = add("stats", cmd_stats, "the community's health: posts per week, posters, rates, response times, "
                                "unanswered and hot threads, leadership candidates")
    p.add_argument("--list", help="only this list")
    p.add_argument("--since", help="the period, e.g. 90d (default)")
    p.add_argument("--json", action="store_true", help="one JSON object per list")
    p.add_argument("--chart", metavar="FILE.png", help="draw the weekly series (needs listmod[charts])")
    p.add_argument("--rules", action="store_true", help="also each rule's hits and how often moderators "
                                                        "overrode it, highest override rate first")
    p = add("report", cmd_report, "a transparency report from the audit trail (chain verified first), "
                                  "fit to publish: no names or addresses")
    p.add_argument("--list", help="only this list")
    p.add_argument("--since", help="the period, e.g. 90d (default)")
    p.add_argument("--format", choices=["md", "json", "html"], default="md")
    p.add_argument("--out", help="write it to this file")
    p = add("evidence", cmd_evidence, "the evidence bundle of a post (original, sha256, audit records, "
                                      "chain head), as the escalation contact gets it")
    p.add_argument("id", help="the post's id, as `listmod queue` or `listmod audit` shows it")
    p.add_argument("--out", help="write it to this file (mode 0600) instead of standard output")
    p.add_argument("--note", help="a note for the reader")
    p = add("thread", cmd_thread, "cool down, lock or unlock the thread of a post")
    p.add_argument("action", choices=["cool", "lock", "unlock"])
    p.add_argument("id", help="a post in the thread, by its id")
    p.add_argument("--for", dest="duration", help="cool: how long (default: the list's cooldown)")
    p.add_argument("--reason", help="why; recorded in the audit trail")
    p = add("appeals", cmd_appeals, "the appeals that wait for a moderator")
    p.add_argument("--list", help="only this list")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
