"""The transparency report (`listmod report`): what was decided, by which rule and by whom (as roles,
never names or addresses), how fast, what was escalated and appealed, from the audit trail alone,
after the chain is verified, with its head printed so that readers can hold the publisher to it."""

from __future__ import annotations

import html
import json
import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass

from . import audit
from .stats import WEEK, week_start

DECISIONS = ("accept", "hold", "reject", "discard", "escalate")


@dataclass(frozen=True)
class Report:
    since: float
    until: float
    list_address: str                # "" for every list
    chain_records: int
    chain_head: str                  # "SEQ HASH"
    chain_problems: tuple[str, ...]
    by_action: dict[str, int]
    by_rule: dict[str, int]
    by_actor: dict[str, int]         # roles: rules, default, moderator, leader, contact, expiry, poster
    median_response_seconds: float | None
    responses: int
    escalations: int
    appeals: dict[str, int]          # received, granted, denied
    cooldowns: int
    weekly: list[tuple[str, int]]    # decisions per week

    def as_dict(self) -> dict:
        return asdict(self)


def build(conn: sqlite3.Connection, secret: bytes, since: float, until: float, list_address: str = "") -> Report:
    checked = audit.verify(conn, secret)
    where = "time >= ? AND time < ?"
    args: list[object] = [since, until]
    if list_address:
        where += " AND list = ?"
        args.append(list_address)
    by_action: dict[str, int] = {}
    by_rule: dict[str, int] = {}
    by_actor: dict[str, int] = {}
    weekly: dict[float, int] = {}
    held_at: dict[int, float] = {}
    responses: list[float] = []
    escalations, cooldowns = 0, 0
    appeals = {"received": 0, "granted": 0, "denied": 0}
    start = week_start(since)
    while start < until:
        weekly[start] = 0
        start += WEEK
    for at, post, action, rule, actor in conn.execute(
            f"SELECT time, post, action, rule, actor FROM audit WHERE {where} ORDER BY seq", args):
        role = actor.partition(":")[0]
        if action in DECISIONS:
            by_action[action] = by_action.get(action, 0) + 1
            by_actor[role] = by_actor.get(role, 0) + 1
            weekly[week_start(at)] = weekly.get(week_start(at), 0) + 1
            if role in ("rules", "default") and rule:
                by_rule[rule] = by_rule.get(rule, 0) + 1
            if action in ("hold", "escalate") and role in ("rules", "default") and post is not None:
                held_at.setdefault(post, at)
            elif post in held_at and role in ("moderator", "leader", "contact"):
                responses.append(at - held_at.pop(post))
        if action == "escalate":
            escalations += 1
        elif action == "appealed":
            appeals["received"] += 1
        elif action == "appeal-granted":
            appeals["granted"] += 1
        elif action == "appeal-denied":
            appeals["denied"] += 1
        elif action in ("thread-cooled", "thread-locked"):
            cooldowns += 1
    seq, head = checked.head
    return Report(since, until, list_address, checked.records, f"{seq} {head}", checked.problems,
                  dict(sorted(by_action.items(), key=lambda kv: -kv[1])),
                  dict(sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))),
                  dict(sorted(by_actor.items(), key=lambda kv: -kv[1])),
                  statistics.median(responses) if responses else None, len(responses), escalations, appeals,
                  cooldowns, [(time.strftime("%Y-%m-%d", time.gmtime(w)), n) for w, n in sorted(weekly.items())])


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "no held post was decided by a person"
    from .tomlfile import format_duration
    return format_duration(seconds)


def markdown(r: Report) -> str:
    scope = r.list_address or "all lists"
    out = [f"# Moderation report: {scope}, {_day(r.since)} to {_day(r.until)}", "",
           f"Audit chain: {r.chain_records} records, " + ("verified" if not r.chain_problems else
                                                           f"NOT verified ({len(r.chain_problems)} problems)")
           + f"; head `{r.chain_head}`", ""]
    out += [f"- {p}" for p in r.chain_problems] + ([""] if r.chain_problems else [])
    out += ["## Decisions by action", "", "| action | count |", "|---|---:|"]
    out += [f"| {a} | {n} |" for a, n in r.by_action.items()]
    out += ["", "## Decisions by who made them", "", "| by | count |", "|---|---:|"]
    out += [f"| {a} | {n} |" for a, n in r.by_actor.items()]
    out += ["", "## Decisions at intake by rule", "", "| rule | count |", "|---|---:|"]
    out += [f"| {a} | {n} |" for a, n in r.by_rule.items()]
    out += ["", "## Response, escalations and appeals", "",
            f"- median time from hold to a person's decision: {_span(r.median_response_seconds)} "
            f"({r.responses} decisions)",
            f"- escalations: {r.escalations}",
            f"- appeals: {r.appeals['received']} received, {r.appeals['granted']} granted, {r.appeals['denied']} denied",
            f"- threads cooled down or locked: {r.cooldowns}", "", "## Decisions per week", "",
            "| week starting | decisions |", "|---|---:|"]
    out += [f"| {w} | {n} |" for w, n in r.weekly]
    return "\n".join(out) + "\n"


def _svg_chart(weekly: list[tuple[str, int]]) -> str:
    """A bar chart of decisions per week, drawn as inline SVG (no script, no fetch)."""
    width, height, pad = 640, 220, 30
    top = max((n for _, n in weekly), default=0) or 1
    bar = (width - 2 * pad) / max(len(weekly), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="decisions per week">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#555"/>']
    for i, (label, n) in enumerate(weekly):
        h = (height - 2 * pad) * n / top
        x = pad + i * bar
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - pad - h:.1f}" width="{max(bar - 4, 1):.1f}" '
                     f'height="{h:.1f}" fill="#3a6ea5"><title>{html.escape(label)}: {n}</title></rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - pad - h - 4:.1f}" font-size="11" '
                     f'text-anchor="middle">{n}</text>')
        if len(weekly) <= 16 or i % max(len(weekly) // 8, 1) == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - pad + 14:.1f}" font-size="9" '
                         f'text-anchor="middle">{html.escape(label[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(r: Report) -> str:
    """One self-contained page: inline style and chart, nothing fetched."""
    def table(title: str, rows: dict[str, int], head: str) -> str:
        body = "".join(f"<tr><td>{html.escape(k)}</td><td class=n>{v}</td></tr>" for k, v in rows.items())
        return f"<h2>{title}</h2><table><tr><th>{head}</th><th>count</th></tr>{body}</table>"
    scope = html.escape(r.list_address or "all lists")
    status = ("verified" if not r.chain_problems else f"NOT verified: {len(r.chain_problems)} problem(s)")
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in r.chain_problems)
    svg = _svg_chart(r.weekly)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Moderation report: {scope}</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;color:#222}}table{{border-collapse:collapse;
margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .6em}}.n{{text-align:right}}code{{word-break:break-all}}
</style></head><body>
<h1>Moderation report: {scope}</h1>
<p id="period">{_day(r.since)} to {_day(r.until)}</p>
<p id="chain">Audit chain: {r.chain_records} records, {status}; head <code>{html.escape(r.chain_head)}</code></p>
<ul>{problems}</ul>
<h2>Decisions per week</h2>
<figure id="chart">{svg}</figure>
{table("Decisions by action", r.by_action, "action")}
{table("Decisions by who made them", r.by_actor, "by")}
{table("Decisions at intake by rule", r.by_rule, "rule")}
<h2>Response, escalations and appeals</h2>
<ul id="figures">
<li>Median time from hold to a person's decision: <span id="median">{html.escape(_span(r.median_response_seconds))}</span>
({r.responses} decisions)</li>
<li>Escalations: <span id="escalations">{r.escalations}</span></li>
<li>Appeals: <span id="appeals">{r.appeals['received']} received, {r.appeals['granted']} granted,
{r.appeals['denied']} denied</span></li>
<li>Threads cooled down or locked: {r.cooldowns}</li>
</ul>
</body></html>
"""


def render(r: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(r.as_dict(), indent=1) + "\n"
    if fmt == "html":
        return html_page(r)
    return markdown(r)
