"""`listmod stats` and `listmod report` on a history built by hand, against figures worked out by
hand; the chart is a real PNG; the HTML report renders in Chromium (Debian's, driven by playwright)
with its figures."""

import json
import time
from pathlib import Path

import pytest
from conftest import LIST

from listmod import audit
from listmod.appeals import decide_appeal
from listmod.config import read_config
from listmod.ladder import set_sanction
from listmod.message import parse
from listmod.posts import Judged, decide_held, record_intake
from listmod.rules import Decision
from listmod.stats import week_start
from listmod.store import Store, load_or_create_secret
from listmod.threads import thread_of

H = 3600.0
DAY = 86400.0
MOD, MOD2 = "mod@example.org", "mod2@example.org"
CHROMIUM = "/usr/bin/chromium"


def _decision(action: str, rule: str) -> Decision:
    actor = "default" if rule.startswith("default-") else "rules"
    reason = f"{rule} says {action}."
    return Decision(action, reason, rule, "default" if actor == "default" else "rules/x.toml:1", actor,
                    template=reason)


class History:
    def __init__(self, d):
        self.config = read_config(d.config_path)
        self.mlist = self.config.list_for(LIST)
        secret = load_or_create_secret(self.config.server.state_dir)
        self.store = Store(self.config.database_path, secret)
        self.secret = secret
        self.n = 0

    def post(self, at: float, sender: str, action: str, rule: str, reply_to: str = ""):
        self.n += 1
        mid = f"<h{self.n}@t>"
        refs = f"In-Reply-To: {reply_to}\r\nReferences: {reply_to}\r\n" if reply_to else ""
        raw = (f"From: {sender}\r\nTo: {LIST}\r\nSubject: topic {self.n}\r\nMessage-ID: {mid}\r\n{refs}\r\n"
               "text\r\n").encode()
        post = parse(raw, sender)
        with self.store.transaction() as conn:
            thread = thread_of(conn, post, LIST, at)
            [record] = record_intake(conn, self.secret, raw=raw, envelope_from=sender, rcpt_tos=[LIST], peer="test",
                                     post=post, judged=[Judged(self.mlist, _decision(action, rule), "", thread,
                                                               verified=True)], at=at, config=self.config)
        return record

    def decide(self, record, action: str, at: float, who: str = MOD):
        with self.store.transaction() as conn:
            decide_held(conn, self.secret, self.config, record, action, f"{who} decided", f"moderator:{who}", at)


@pytest.fixture
def history(sink, make_daemon):
    """Two weeks, worked out by hand (W0 and W1 start on Mondays; W2 is this week, empty):

    W0  h1 alice starts T1 (accepted)          h2 bob replies in T1
        h3 stranger: held (default-nonmember), approved 2 h later
        h4 dave: held (default-nonmember), rejected 4 h later, granted on appeal by mod2
        h5 spammer: discarded by spam-words
    W1  h6 newbie starts T3 (a newcomer)       h7 alice replies in T3 (a reply to a newcomer)
        h8 h9 h10 alice starts three threads nobody answers
        h11 h12 h14 carol: held by link-flood, approved after 1 h, 3 h, 2 h
        h13 bob (accepted), then warned for it
    """
    d = make_daemon(sink, start=False, members=["alice@example.org", "bob@example.org", "carol@example.net",
                                                "newbie@example.net"], moderators=(MOD, MOD2))
    h = History(d)
    now = time.time()
    w0 = week_start(now) - 14 * DAY
    w1 = w0 + 7 * DAY
    p1 = h.post(w0 + 1 * H, "alice@example.org", "accept", "default-member")
    h.post(w0 + 2 * H, "bob@example.org", "accept", "default-member", reply_to=p1.message_id)
    p3 = h.post(w0 + 3 * H, "stranger@example.net", "hold", "default-nonmember")
    p4 = h.post(w0 + 4 * H, "dave@example.net", "hold", "default-nonmember")
    h.decide(p3, "accept", w0 + 5 * H)
    h.post(w0 + 6 * H, "spammer@example.com", "discard", "spam-words")
    h.decide(p4, "reject", w0 + 8 * H)
    with h.store.transaction() as conn:   # dave appeals (as appeals.appeal_command records it); mod2 grants
        appealable = conn.execute("SELECT id FROM appealable WHERE post = ?", (p4.id,)).fetchone()[0]
        conn.execute("INSERT INTO appeals (list, appealable, post, address, text, state, received_at) VALUES "
                     "(?, ?, ?, ?, 'on topic', 'open', ?)", (LIST, appealable, p4.id, "dave@example.net", w0 + 8.5 * H))
        audit.append(conn, h.secret, list=LIST, post=p4.id, message_id="", sha256="", sender="dave@example.net",
                     action="appealed", reason="on topic", template=audit.FREE_TEXT, rule="", source="appeal",
                     actor="poster:dave@example.net", at=w0 + 8.5 * H)
        appeal_id = conn.execute("SELECT MAX(id) FROM appeals").fetchone()[0]
        decide_appeal(conn, h.secret, h.config, h.mlist, appeal_id, True, "fair", f"moderator:{MOD2}", w0 + 9 * H)
    p6 = h.post(w1 + 1 * H, "newbie@example.net", "accept", "default-member")
    h.post(w1 + 2 * H, "alice@example.org", "accept", "default-member", reply_to=p6.message_id)
    for n in range(3):
        h.post(w1 + (3 + n) * H, "alice@example.org", "accept", "default-member")
    p11 = h.post(w1 + 6 * H, "carol@example.net", "hold", "link-flood")
    h.decide(p11, "accept", w1 + 7 * H)
    p12 = h.post(w1 + 8 * H, "carol@example.net", "hold", "link-flood")
    h.decide(p12, "accept", w1 + 11 * H)
    p13 = h.post(w1 + 12 * H, "bob@example.org", "accept", "default-member")
    with h.store.transaction() as conn:
        set_sanction(conn, h.secret, h.config, h.mlist, "bob@example.org", "warning", reason="rude",
                     actor=f"moderator:{MOD}", at=w1 + 13 * H, post=p13.id)
    p14 = h.post(w1 + 14 * H, "carol@example.net", "hold", "link-flood")
    h.decide(p14, "accept", w1 + 16 * H)
    d.since = f"{int(time.time() - w0) - 60}s"   # from just after W0 began
    d.weeks = (w0, w1, w1 + 7 * DAY)
    return d


def test_stats_on_a_constructed_history_match_the_figures_worked_out_by_hand(history):
    d = history
    [h] = d.cli_json("stats", "--list", LIST, "--since", d.since, "--json", "--rules")
    assert (h["posts"], h["posters"], h["new_posters"]) == (14, 7, 7)
    assert (h["hold_rate"], h["reject_rate"], h["discard_rate"]) == (round(5 / 14, 4), 0.0, round(1 / 14, 4))
    assert h["median_decision_seconds"] == 2 * H and h["decided_by_people"] == 5
    weeks = [(w["start"], w["posts"], w["active"], w["new"], w["returning"], w["held"], w["rejected"], w["discarded"])
             for w in h["weeks"]]
    w0, w1, w2 = d.weeks
    assert weeks == [(w0, 5, 5, 5, 0, 2, 0, 1), (w1, 9, 4, 2, 2, 3, 0, 0), (w2, 0, 0, 0, 0, 0, 0, 0)]
    # unanswered: stranger's, dave's, alice's three, carol's three and bob's threads; T1 and T3 got replies
    assert sorted(t["key"] for t in h["unanswered"]) == sorted(
        f"<h{n}@t>" for n in (3, 4, 8, 9, 10, 11, 12, 13, 14))
    assert [(t["key"], t["posts"], t["participants"]) for t in h["hottest"][:2]] == [("<h1@t>", 2, 2), ("<h6@t>", 2, 2)]
    assert h["candidates"] == [{"address": "alice@example.org", "approved": 5, "newcomer_replies": 1}]
    rules = {r["rule"]: (r["hits"], r["overridden"], r["override_rate"]) for r in h["rules"]}
    assert rules == {"link-flood": (3, 3, 1.0), "default-nonmember": (2, 2, 1.0),
                     "default-member": (8, 1, 0.125), "spam-words": (1, 0, 0.0)}
    # the rule moderators overrode most tops `stats --rules`
    assert [r["rule"] for r in h["rules"]][0] == "link-flood"
    text = d.cli("stats", "--list", LIST, "--since", d.since, "--rules").stdout
    table = text[text.index("rule  "):].splitlines()
    assert table[1].split()[0] == "link-flood", text


def test_the_chart_is_a_real_png(history, tmp_path):
    import matplotlib.image
    out = tmp_path / "weekly.png"
    history.cli("stats", "--list", LIST, "--since", history.since, "--chart", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(str(out))
    assert image.shape[0] >= 300 and image.shape[1] >= 600
    assert len({tuple(px) for px in image[::10, ::10].reshape(-1, image.shape[2])}) > 5   # not blank


def test_the_report_matches_the_history_and_verifies_the_chain_first(history):
    report = json.loads(history.cli("report", "--list", LIST, "--since", history.since, "--format", "json").stdout)
    assert report["chain_problems"] == [] and report["chain_records"] > 20
    assert report["by_action"] == {"accept": 13, "hold": 5, "discard": 1, "reject": 1}
    assert report["by_actor"] == {"default": 10, "moderator": 6, "rules": 4}
    assert report["by_rule"] == {"default-member": 8, "link-flood": 3, "default-nonmember": 2, "spam-words": 1}
    assert (report["median_response_seconds"], report["responses"]) == (2 * H, 5)
    assert report["appeals"] == {"received": 1, "granted": 1, "denied": 0} and report["escalations"] == 0
    text = history.cli("report", "--list", LIST, "--since", history.since).stdout
    assert "| accept | 13 |" in text and "verified" in text and report["chain_head"] in text


def test_the_html_report_renders_in_chromium_with_its_figures(history, tmp_path):
    from playwright.sync_api import sync_playwright
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: .ci/install-servers installs Debian's chromium")
    out = tmp_path / "report.html"
    history.cli("report", "--list", LIST, "--since", history.since, "--format", "html", "--out", str(out))
    head = json.loads(history.cli("report", "--list", LIST, "--since", history.since, "--format", "json").stdout
                      )["chain_head"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            body = page.inner_text("body")
            bars = page.locator("#chart svg rect").count()
            box = page.locator("#chart svg").bounding_box()
        finally:
            browser.close()
    assert requests == [out.as_uri()]   # self-contained: nothing else is fetched
    assert "Audit chain:" in body and "verified" in body and head in body
    assert "accept\t13" in body and "link-flood\t3" in body
    assert "Escalations: 0" in body and "1 received, 1 granted, 0 denied" in body
    assert bars == 3 and box is not None and box["width"] > 500 and box["height"] > 150


def test_the_weeks_first_digest_opens_with_the_health_summary_and_the_next_does_not(history):
    d = history
    h = History(d)
    h.post(time.time() - 60, "stranger@example.net", "hold", "default-nonmember")

    def latest_digest() -> str:
        from email import message_from_bytes
        from email.policy import default
        body = d.db().execute("SELECT body FROM outbox WHERE kind = 'digest' ORDER BY id DESC LIMIT 1").fetchone()[0]
        return next(message_from_bytes(body, policy=default).iter_parts()).get_content()
    d.cli("digest", "send", LIST)
    first = latest_digest()
    week = json.loads(d.cli("stats", "--list", LIST, "--since", "7d", "--json").stdout)
    assert f"This week on {LIST}: {week['posts']} posts" in first
    assert first.index("This week on") > first.index(" 1 ")   # after the one-line summary of posts
    d.cli("digest", "send", LIST)
    assert "This week on" not in latest_digest()
