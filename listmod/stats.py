"""The community's health, from the store and the audit trail (docs/community.md): posts per week,
active, new and returning posters, hold/reject/discard rates, how fast held posts are decided,
threads nobody answered, the hottest threads, people who could lead, and how often moderators
overrode each rule. Read-only; every figure is defined in docs/community.md."""

from __future__ import annotations

import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass, field

DAY = 86400.0
WEEK = 7 * DAY
UNANSWERED_AFTER = 2 * DAY
# what is not a person's post: delivery reports and loops, and requests to join a moderated list
_NOT_POSTS = "COALESCE(category, '') != 'subscription' AND COALESCE(rule, '') NOT IN ('bounce', 'loop', 'auto-reply')"
# what intake did with a post (a post held at intake has a short id, whatever was decided later)
_INTAKE = "CASE WHEN short_id IS NOT NULL THEN 'hold' ELSE action END"
PEOPLE = ("moderator", "leader", "contact")


def week_start(at: float) -> float:
    """Monday 00:00 UTC of the week `at` falls in."""
    day = int(at // DAY) * DAY
    return day - ((time.gmtime(day).tm_wday) * DAY)


@dataclass(frozen=True)
class Week:
    start: float
    posts: int = 0
    active: int = 0          # people who posted
    new: int = 0             # of them, posting to the list for the first time
    returning: int = 0       # of them, who had posted before
    held: int = 0            # held at intake (escalated posts included)
    rejected: int = 0        # rejected at intake
    discarded: int = 0       # discarded at intake

    @property
    def label(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self.start))


@dataclass(frozen=True)
class ThreadFigure:
    key: str
    subject: str
    posts: int
    participants: int
    cooled: bool


@dataclass(frozen=True)
class Candidate:
    address: str
    approved: int
    newcomer_replies: int


@dataclass(frozen=True)
class RuleFigure:
    rule: str
    hits: int
    overridden: int
    held_then_approved: int = 0
    accepted_then_sanctioned: int = 0
    rejected_then_appealed: int = 0

    @property
    def override_rate(self) -> float:
        return self.overridden / self.hits if self.hits else 0.0


@dataclass(frozen=True)
class Health:
    list: str
    since: float
    until: float
    weeks: tuple[Week, ...]
    posts: int
    posters: int
    new_posters: int
    hold_rate: float
    reject_rate: float
    discard_rate: float
    median_decision_seconds: float | None
    decided_by_people: int
    unanswered: tuple[ThreadFigure, ...]
    hottest: tuple[ThreadFigure, ...]
    candidates: tuple[Candidate, ...]
    rules: tuple[RuleFigure, ...] = field(default=())

    def as_dict(self) -> dict:
        out = asdict(self)
        for r, figure in zip(out["rules"], self.rules, strict=True):
            r["override_rate"] = round(figure.override_rate, 4)
        return out


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def weeks(conn: sqlite3.Connection, list_address: str, since: float, until: float) -> tuple[Week, ...]:
    """One row per week from the week of `since` to the week of `until`, empty weeks included."""
    first_posts = dict(conn.execute(
        f"SELECT sender, MIN(created_at) FROM posts WHERE list = ? AND sender != '' AND {_NOT_POSTS} "
        "GROUP BY sender", (list_address,)).fetchall())
    buckets: dict[float, dict] = {}
    start = week_start(since)
    while start < until:
        buckets[start] = {"posts": 0, "senders": set(), "held": 0, "rejected": 0, "discarded": 0}
        start += WEEK
    for created, sender, intake in conn.execute(
            f"SELECT created_at, sender, {_INTAKE} FROM posts WHERE list = ? AND created_at >= ? AND created_at < ? "
            f"AND {_NOT_POSTS}", (list_address, since, until)):
        b = buckets.setdefault(week_start(created), {"posts": 0, "senders": set(), "held": 0, "rejected": 0,
                                                     "discarded": 0})
        b["posts"] += 1
        if sender:
            b["senders"].add(sender)
        if intake in ("hold", "escalate"):
            b["held"] += 1
        elif intake == "reject":
            b["rejected"] += 1
        elif intake == "discard":
            b["discarded"] += 1
    out = []
    for start in sorted(buckets):
        b = buckets[start]
        new = sum(1 for s in b["senders"] if start <= first_posts.get(s, 0) < start + WEEK)
        out.append(Week(start, b["posts"], len(b["senders"]), new, len(b["senders"]) - new, b["held"],
                        b["rejected"], b["discarded"]))
    return tuple(out)


def _threads(conn: sqlite3.Connection, list_address: str, since: float, until: float,
             limit: int = 5) -> tuple[ThreadFigure, ...]:
    cooled = {k for (k,) in conn.execute("SELECT DISTINCT message_id FROM audit WHERE list = ? AND action IN "
                                         "('thread-cooled', 'thread-locked') AND time >= ?", (list_address, since))}
    rows = conn.execute(
        f"SELECT thread, COUNT(*), COUNT(DISTINCT sender), MIN(created_at) FROM posts WHERE list = ? AND "
        f"created_at >= ? AND created_at < ? AND thread IS NOT NULL AND thread != '' AND {_NOT_POSTS} "
        "GROUP BY thread ORDER BY COUNT(*) DESC, MIN(created_at) LIMIT ?", (list_address, since, until, limit))
    out = []
    for key, posts, people, _ in rows.fetchall():
        subject = conn.execute("SELECT subject FROM posts WHERE list = ? AND thread = ? ORDER BY created_at LIMIT 1",
                               (list_address, key)).fetchone()[0] or "(no subject)"
        out.append(ThreadFigure(key, subject, posts, people, key in cooled))
    return tuple(out)


def unanswered(conn: sqlite3.Connection, list_address: str, since: float, until: float) -> tuple[ThreadFigure, ...]:
    """Threads started (by an accepted post) in the period, at least 48 h before its end, that got
    no accepted reply from anyone else within 48 h."""
    out = []
    for key, sender, subject, created in conn.execute(
            f"SELECT p.thread, p.sender, p.subject, p.created_at FROM posts p WHERE p.list = ? AND p.state = 'accepted' "
            f"AND p.message_id = p.thread AND p.created_at >= ? AND p.created_at < ? AND {_NOT_POSTS} "
            "ORDER BY p.created_at", (list_address, since, until - UNANSWERED_AFTER)).fetchall():
        answered = conn.execute(
            "SELECT 1 FROM posts WHERE list = ? AND thread = ? AND state = 'accepted' AND sender != ? "
            "AND created_at > ? AND created_at <= ? LIMIT 1",
            (list_address, key, sender, created, created + UNANSWERED_AFTER)).fetchone()
        if not answered:
            out.append(ThreadFigure(key, subject or "(no subject)", 1, 1, False))
    return tuple(out)


def candidates(conn: sqlite3.Connection, list_address: str, since: float, until: float, *,
               min_approved: int = 5, newcomer_days: float = 30 * DAY, limit: int = 10) -> tuple[Candidate, ...]:
    """People who could lead: at least `min_approved` accepted posts in the period, at least one
    accepted reply in a thread a newcomer started (someone whose first post came within
    `newcomer_days` before it), no post flagged under a conduct rule in the period, not a leader."""
    first = dict(conn.execute(f"SELECT sender, MIN(created_at) FROM posts WHERE list = ? AND sender != '' AND "
                              f"{_NOT_POSTS} GROUP BY sender", (list_address,)).fetchall())
    starters = {key: (sender, created) for key, sender, created in conn.execute(
        "SELECT thread, sender, created_at FROM posts WHERE list = ? AND message_id = thread AND created_at >= ? "
        "AND created_at < ?", (list_address, since - newcomer_days, until))}
    newcomer_threads = {k for k, (s, created) in starters.items() if s and created - first.get(s, created) <= newcomer_days}
    conduct = {s for (s,) in conn.execute("SELECT DISTINCT sender FROM posts WHERE list = ? AND category = 'conduct' "
                                          "AND created_at >= ? AND created_at < ?", (list_address, since, until))}
    leaders = {a for (a,) in conn.execute("SELECT address FROM standing WHERE list = ? AND trust = 'leader'",
                                          (list_address,))}
    out = []
    for sender, approved in conn.execute(
            f"SELECT sender, COUNT(*) FROM posts WHERE list = ? AND state = 'accepted' AND sender != '' AND "
            f"created_at >= ? AND created_at < ? AND {_NOT_POSTS} GROUP BY sender HAVING COUNT(*) >= ?",
            (list_address, since, until, min_approved)).fetchall():
        if sender in conduct or sender in leaders:
            continue
        replies = sum(1 for (thread,) in conn.execute(
            "SELECT thread FROM posts WHERE list = ? AND sender = ? AND state = 'accepted' AND created_at >= ? "
            "AND created_at < ? AND message_id != thread", (list_address, sender, since, until))
            if thread in newcomer_threads and starters[thread][0] != sender)
        if replies:
            out.append(Candidate(sender, approved, replies))
    out.sort(key=lambda c: (-c.newcomer_replies, -c.approved, c.address))
    return tuple(out[:limit])


def rule_figures(conn: sqlite3.Connection, list_address: str, since: float, until: float) -> tuple[RuleFigure, ...]:
    """Per rule: the posts it decided at intake, and how often people overrode it (a post it held
    that a person approved; a post it accepted whose sender was then warned, moderated or banned
    for it; a post it rejected that was accepted on appeal). Ranked by override rate."""
    intake: dict[int, tuple[str, str]] = {}
    for post, rule, action in conn.execute(
            "SELECT post, rule, action FROM audit WHERE list = ? AND post IS NOT NULL AND actor IN ('rules', 'default') "
            "AND action IN ('accept', 'hold', 'reject', 'discard', 'escalate') AND time >= ? AND time < ? "
            "AND rule NOT IN ('bounce', 'loop', 'auto-reply', '') ORDER BY seq",
            (list_address, since, until)):
        intake.setdefault(post, (rule, action))
    overridden: dict[int, str] = {}
    for post, action, actor in conn.execute(
            "SELECT post, action, actor FROM audit WHERE list = ? AND post IS NOT NULL AND time >= ? AND action IN "
            "('accept', 'warned', 'moderated', 'banned') ORDER BY seq", (list_address, since)):
        first = intake.get(post)
        if first is None or post in overridden:
            continue
        person = actor.partition(":")[0] in PEOPLE
        if action == "accept" and person and first[1] in ("hold", "escalate"):
            overridden[post] = "held"
        elif action == "accept" and actor.startswith(PEOPLE) and first[1] == "reject":
            overridden[post] = "appeal"
        elif action in ("warned", "moderated", "banned") and first[1] == "accept":
            overridden[post] = "sanctioned"
    figures: dict[str, dict[str, int]] = {}
    for post, (rule, _) in intake.items():
        f = figures.setdefault(rule, {"hits": 0, "held": 0, "sanctioned": 0, "appeal": 0})
        f["hits"] += 1
        if post in overridden:
            f[overridden[post]] += 1
    out = [RuleFigure(rule, f["hits"], f["held"] + f["sanctioned"] + f["appeal"], f["held"], f["sanctioned"],
                      f["appeal"]) for rule, f in figures.items()]
    out.sort(key=lambda r: (-r.override_rate, -r.hits, r.rule))
    return tuple(out)


def median_decision(conn: sqlite3.Connection, list_address: str, since: float, until: float) -> tuple[float | None, int]:
    """The median time from a hold at intake to the first decision a person made on the post, over
    posts held in the period (from the audit trail: later decisions, such as an appeal, do not
    move it; posts nobody decided are left out), and how many there were."""
    held: dict[int, float] = {}
    spans: list[float] = []
    for post, at, action, actor in conn.execute(
            "SELECT post, time, action, actor FROM audit WHERE list = ? AND post IS NOT NULL AND time >= ? "
            "AND action IN ('hold', 'escalate', 'accept', 'reject', 'discard') ORDER BY seq", (list_address, since)):
        role = actor.partition(":")[0]
        if role in ("rules", "default"):
            if action in ("hold", "escalate") and at < until:
                held.setdefault(post, at)
        elif post in held and role not in ("expiry", "poster", "schedule"):
            spans.append(at - held.pop(post))
    return (statistics.median(spans) if spans else None), len(spans)


def health(conn: sqlite3.Connection, list_address: str, since: float, until: float,
           with_rules: bool = False) -> Health:
    totals = conn.execute(
        f"SELECT COUNT(*), COUNT(DISTINCT NULLIF(sender, '')), COALESCE(SUM({_INTAKE} IN ('hold', 'escalate')), 0), "
        f"COALESCE(SUM({_INTAKE} = 'reject'), 0), COALESCE(SUM({_INTAKE} = 'discard'), 0) FROM posts "
        f"WHERE list = ? AND created_at >= ? AND created_at < ? AND {_NOT_POSTS}", (list_address, since, until)).fetchone()
    posts, posters, held, rejected, discarded = totals
    series = weeks(conn, list_address, since, until)
    median, decided = median_decision(conn, list_address, since, until)
    new_posters = conn.execute(
        f"SELECT COUNT(*) FROM (SELECT sender FROM posts WHERE list = ? AND sender != '' AND {_NOT_POSTS} "
        "GROUP BY sender HAVING MIN(created_at) >= ? AND MIN(created_at) < ?)", (list_address, since, until)).fetchone()[0]
    return Health(list_address, since, until, series, posts, posters, new_posters, _rate(held, posts),
                  _rate(rejected, posts), _rate(discarded, posts), median, decided,
                  unanswered(conn, list_address, since, until), _threads(conn, list_address, since, until),
                  candidates(conn, list_address, since, until),
                  rule_figures(conn, list_address, since, until) if with_rules else ())


def chart(figures: Health, path: str) -> None:
    """The weekly series as a PNG (matplotlib, imported only here: `pip install listmod[charts]`)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--chart needs matplotlib: .venv/bin/pip install 'listmod[charts]'") from None
    labels = [w.label for w in figures.weeks]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    ax.plot(labels, [w.posts for w in figures.weeks], marker="o", label="posts")
    ax.plot(labels, [w.active for w in figures.weeks], marker="s", label="active posters")
    ax.plot(labels, [w.new for w in figures.weeks], marker="^", label="new posters")
    ax.plot(labels, [w.held for w in figures.weeks], marker="x", label="held at intake")
    ax.set_title(f"{figures.list}: posts per week")
    ax.set_xlabel("week starting (UTC)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from .tomlfile import format_duration
    return format_duration(seconds)


def text_report(h: Health) -> str:
    """`listmod stats` for a person at a terminal."""
    lines = [f"{h.list}: {time.strftime('%Y-%m-%d', time.gmtime(h.since))} to "
             f"{time.strftime('%Y-%m-%d', time.gmtime(h.until))}",
             f"  posts {h.posts}, posters {h.posters} ({h.new_posters} new); held {h.hold_rate:.0%}, rejected "
             f"{h.reject_rate:.0%}, discarded {h.discard_rate:.0%} at intake",
             f"  median time from hold to a decision: {_duration(h.median_decision_seconds)} "
             f"({h.decided_by_people} decided)", "",
             "  week starting  posts  active  new  returning  held  rejected  discarded"]
    for w in h.weeks:
        lines.append(f"  {w.label}     {w.posts:>5}  {w.active:>6}  {w.new:>3}  {w.returning:>9}  {w.held:>4}  "
                     f"{w.rejected:>8}  {w.discarded:>9}")
    lines += ["", f"  unanswered threads (no reply within 48 h): {len(h.unanswered)}"]
    lines += [f"    {t.subject[:70]}" for t in h.unanswered[:10]]
    lines += ["  hottest threads:"] + [f"    {t.posts:>4} posts, {t.participants} people{' (cooled)' if t.cooled else ''}"
                                       f"  {t.subject[:50]}" for t in h.hottest]
    lines += ["  leadership candidates (approved posts, replies to newcomers, no conduct flags):"]
    lines += [f"    {c.address}  {c.approved} approved, {c.newcomer_replies} replies to newcomers"
              for c in h.candidates] or ["    (none yet)"]
    if h.rules:
        lines += ["", "  rule                       hits  overridden  rate   (held->approved, accepted->sanctioned, "
                  "rejected->appeal)"]
        lines += [f"  {r.rule[:26]:<26} {r.hits:>5}  {r.overridden:>10}  {r.override_rate:>4.0%}   "
                  f"({r.held_then_approved}, {r.accepted_then_sanctioned}, {r.rejected_then_appealed})" for r in h.rules]
    return "\n".join(lines) + "\n"


def weekly_summary(conn: sqlite3.Connection, list_address: str, at: float) -> list[str]:
    """The few lines that open the week's first digest: the last seven days against the seven before."""
    this = health(conn, list_address, at - WEEK, at)
    before = conn.execute(f"SELECT COUNT(*) FROM posts WHERE list = ? AND created_at >= ? AND created_at < ? AND "
                          f"{_NOT_POSTS}", (list_address, at - 2 * WEEK, at - WEEK)).fetchone()[0]
    change = f"{this.posts - before:+d} on the week before" if before else "no posts the week before"
    hottest = this.hottest[0] if this.hottest else None
    return [f"This week on {list_address}: {this.posts} posts ({change}), {this.posters} posters, "
            f"{this.new_posters} new;",
            f"  held {this.hold_rate:.0%}, median decision {_duration(this.median_decision_seconds)}, "
            f"{len(this.unanswered)} thread(s) unanswered after 48 h"
            + (f", hottest: {hottest.subject[:30]} ({hottest.posts})" if hottest else "") + ".",
            "  (`listmod stats` has the rest.)", ""]
