"""The rule language in the running daemon: store counters, trusted auth results, escalation,
explain, replay, a catastrophic regex, and hot reload under load."""

import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

from conftest import LIST, RULES_DIR, post_bytes, wait_until

from listmod.message import parse
from listmod.rules.context import authentication_results

HOLD_MARKER = """
[[rule]]
id = "marker"
action = "hold"
reason = "Marked posts are held."
match.subject.contains = "MARKER"
"""


def rules_dir_with(tmp_path: Path, name: str, extra_files: dict[str, str]) -> Path:
    target = tmp_path / name
    target.mkdir()
    for path, text in extra_files.items():
        (target / path).write_text(text)
    return target


def test_only_the_trusted_servers_authentication_results_count():
    raw = (b"Authentication-Results: evil.example; dkim=pass header.d=example.org\r\n"
           b"Authentication-Results: mx.example.org (our MTA); dkim=fail (bad sig) header.d=example.org;\r\n"
           b"  spf=pass smtp.mailfrom=example.org; dmarc=fail\r\nFrom: a@example.org\r\n\r\nx\r\n")
    post = parse(raw, "a@example.org")
    assert authentication_results(post, "mx.example.org") == (("dkim", "fail"), ("spf", "pass"), ("dmarc", "fail"))
    assert authentication_results(post, "") == ()


def test_counters_come_from_the_store(sink, make_daemon, tmp_path):
    rules = rules_dir_with(tmp_path, "r", {"10.toml": """
        [[rule]]
        id = "busy-thread"
        action = "hold"
        reason = "thread busy"
        match.thread.posts_last_hour.ge = 2

        [[rule]]
        id = "proven"
        action = "tag"
        reason = "has approved posts"
        match.sender.approved_posts.ge = 1
        """.replace("        ", "")})
    d = make_daemon(sink, rules_dir=rules)
    d.send("alice@example.org", LIST, post_bytes(message_id="<root@t>"))
    d.send("bob@example.org", LIST, post_bytes(message_id="<r1@t>", extra="In-Reply-To: <root@t>\r\nReferences: <root@t>\r\n"))
    d.send("carol@example.net", LIST, post_bytes(message_id="<r2@t>", extra="References: <root@t> <r1@t>\r\n"))
    d.send("alice@example.org", LIST, post_bytes(message_id="<other@t>"))
    by_mid = {r["message_id"]: r for r in d.cli_json("audit", "--only", "posts")}
    assert by_mid["<r1@t>"]["action"] == "accept"          # the root only: 1 post in the thread
    assert (by_mid["<r2@t>"]["action"], by_mid["<r2@t>"]["rule"]) == ("hold", "busy-thread")
    tags = dict(d.db().execute("SELECT message_id, tags FROM posts").fetchall())
    assert tags["<root@t>"] == "" and tags["<other@t>"] == "proven"  # alice's first was accepted


def test_escalation_holds_the_post_and_tells_the_escalation_contact_at_once(sink, make_daemon):
    d = make_daemon(sink, list_extra='escalation_contact = "legal@example.org"\n')
    d.send("alice@example.org", LIST, post_bytes(message_id="<esc@t>", body="I know where you live."))
    held = d.cli_json("queue")[0]
    assert held["rule"] == "threats-or-doxxing"
    notice = wait_until(lambda: [r for rcpt, r in sink.copies() if rcpt == "legal@example.org"],
                        what="the escalation notice")[0].message
    summary = notice.get_payload(0).get_payload(decode=True).decode()   # the evidence's summary part
    assert held["id"] in notice["Subject"] and "threats-or-doxxing" in summary
    assert d.db().execute("SELECT escalated FROM posts").fetchone()[0] == 1
    assert sink.copies_for("<esc@t>") == []


def test_explain_names_the_deciding_rule_with_file_and_line_and_changes_nothing(make_daemon, tmp_path):
    d = make_daemon(None)
    eml = tmp_path / "post.eml"
    eml.write_bytes(post_bytes(sender="alice@example.org", body="You are an idiot."))
    out = d.cli("explain", str(eml), "--list", LIST).stdout
    assert "[MATCH] personal-attack" in out and "rules/30-conduct.toml:" in out
    assert "decision: hold by personal-attack (rules/30-conduct.toml:" in out
    assert "the poster would see: 250 (held for moderation): The post appears to insult a participant " \
           "(body has the word 'idiot')" in out
    data = json.loads(d.cli("explain", str(eml), "--list", LIST, "--json").stdout)
    assert data["decision"]["rule"] == "personal-attack" and data["context"]["sender_is_member"] is True
    considered = [t["rule_id"] for t in data["trace"]]
    assert considered[:3] == ["executable-attachment", "large-attachment", "macro-documents"]
    assert d.db().execute("SELECT COUNT(*) FROM audit WHERE post IS NOT NULL").fetchone()[0] == 0


def test_replay_counts_the_transitions_a_rule_change_would_cause(make_daemon, tmp_path):
    d = make_daemon(None)
    for i in range(3):
        d.send("alice@example.org", LIST, post_bytes(subject=f"MARKER {i}"))       # accepted now
    for _ in range(2):
        d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net"))  # held now
    d.send("alice@example.org", LIST, post_bytes(subject="plain"))                 # accepted, stays
    new_rules = tmp_path / "new-rules"
    shutil.copytree(RULES_DIR, new_rules)
    (new_rules / "05-marker.toml").write_text(HOLD_MARKER)
    out = d.cli("replay", "--rules", str(new_rules)).stdout
    assert "6 post(s) judged again" in out and "3 would change" in out
    assert "  accept -> hold: 3" in out
    lines = [json.loads(l) for l in d.cli("replay", "--rules", str(new_rules), "--json").stdout.splitlines()]
    assert lines[-1]["transitions"] == {"accept -> hold": 3}
    assert {l["new"]["rule"] for l in lines[:-1]} == {"marker"}
    assert d.db().execute("SELECT COUNT(*) FROM audit WHERE post IS NOT NULL").fetchone()[0] == 6  # replay wrote nothing


def test_a_catastrophic_regex_holds_its_post_and_delays_others_by_at_most_its_limit(sink, make_daemon, tmp_path):
    rules = rules_dir_with(tmp_path, "r", {"10.toml": '[[rule]]\nid = "redos"\naction = "accept"\n'
                                           'reason = "r"\nmatch.body.regex = "(a+)+$"\n'})
    d = make_daemon(sink, rules_dir=rules)
    latencies = []

    def normal():
        for _ in range(20):
            started = time.monotonic()
            d.send("bob@example.org", LIST, post_bytes(sender="bob@example.org", body="b" * 100))
            latencies.append(time.monotonic() - started)
    other = threading.Thread(target=normal)
    other.start()
    for _ in range(3):
        d.send("alice@example.org", LIST, post_bytes(body="a" * 50000 + "!"))
    other.join()
    held = d.cli_json("queue")
    assert len(held) == 3 and all(h["reason"].startswith("The post took too long to judge: rule redos could not be evaluated in time") for h in held)
    assert max(latencies) < 0.5, latencies  # the limit is 50 ms a regex; never seconds


def test_hot_reload_under_load_switches_whole_sets_and_refuses_a_broken_one(sink, make_daemon, tmp_path):
    rules = tmp_path / "live-rules"
    shutil.copytree(RULES_DIR, rules, ignore=shutil.ignore_patterns("50-newcomers.toml"))
    d = make_daemon(sink, rules_dir=rules, server_extra='reload_every = "0.1s"\n')
    live = d.dir / "rules"
    first = d.cli("check").stdout.split("rule set ")[1].strip()
    sent = []
    stop = threading.Event()

    def load(n):
        with d.smtp() as s:
            for i in range(n):
                if stop.is_set():
                    break
                mid = f"<hot-{threading.get_ident()}-{i}@t>"
                s.sendmail("alice@example.org", [LIST], post_bytes(subject=f"MARKER {i}", message_id=mid))
                sent.append(mid)
    senders = [threading.Thread(target=load, args=(250,)) for _ in range(4)]
    for t in senders:
        t.start()
    wait_until(lambda: len(sent) >= 150, 30, "load to start")
    (live / "05-marker.toml").write_text(HOLD_MARKER)   # a good change: marked posts are held
    wait_until(lambda: "rules reloaded" in d.log(), 10, "the good set to take effect")
    wait_until(lambda: len(sent) >= 600, 30, "more load")
    (live / "06-broken.toml").write_text('[[rule]]\nid = "broken"\naction = "hold"\nmatch.bdy.contains = "x"\n')
    wait_until(lambda: "refused" in d.log(), 10, "the broken set to be refused")
    for t in senders:
        t.join(60)
    assert len(sent) == 1000

    second = d.cli("check", check=False)
    assert second.returncode == 2  # the files on disk are still broken
    records = d.cli_json("audit", "--only", "posts")
    assert len(records) == 1000
    sets = Counter(r["ruleset"] for r in records)
    assert len(sets) == 2, sets   # the original, then the good change; never the broken one
    first = next(s for s in sets if s.startswith(first))
    marked = next(s for s in sets if s != first)
    for r in records:  # every message was judged by one complete set: its action says which
        expected = "hold" if r["ruleset"] == marked else "accept"
        assert r["action"] == expected, r
    seqs = [r["seq"] for r in records if r["ruleset"] == first]
    assert max(seqs) < min(r["seq"] for r in records if r["ruleset"] == marked)  # one switch, in order
    notice = wait_until(lambda: [r for rcpt, r in sink.copies() if rcpt == "owner@example.org"],
                        what="the owner's notice")[0].message
    assert "06-broken.toml:1" in notice.get_payload(decode=True).decode() or \
           "06-broken.toml" in notice.get_payload(decode=True).decode()
    assert len([1 for rcpt, _ in sink.copies() if rcpt == "owner@example.org"]) == 1
