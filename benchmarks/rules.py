"""decide() speed against the size of the rule set.

    .venv/bin/python benchmarks/rules.py [--runs 300]

For 10, 100, 1,000 and 5,000 rules: half are word-list rules (`body.words`, 10,000 words in all,
split among them), half regex rules on the body (each of the form \\bWORD\\W+WORD\\b, i.e. with a
literal the prefilter can use). The message is ~10 KB of ordinary text that no rule matches, so every
rule is considered (the worst case for first-match evaluation). Compile time is the time to load
and compile the rule files. Baseline in the same run: one plain `re` search of the same body.
A last row shows the cost of regexes that have no literal to filter on (they run on every message).
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from listmod.message import parse  # noqa: E402
from listmod.rules import Context, decide, load_rules  # noqa: E402

rng = random.Random(42)


def pseudo_word() -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 10))) + "x"


def write_rules(directory: Path, count: int, literal_free: int = 0) -> None:
    word_rules = count // 2
    regex_rules = count - word_rules
    per_rule = max(1, 10000 // max(word_rules, 1))
    lines = []
    for i in range(word_rules):
        words = ", ".join(f'"{pseudo_word()}"' for _ in range(per_rule))
        lines.append(f'[[rule]]\nid = "w{i}"\naction = "hold"\nreason = "words {i}"\nmatch.body.words = [{words}]\n')
    for i in range(regex_rules):
        if i < literal_free:
            pattern = r"\b[A-Z]{3}\d{4,}[a-z]{9}\b"
        else:
            pattern = rf"\b{pseudo_word()}\W+{pseudo_word()}\b"
        lines.append(f"[[rule]]\nid = \"r{i}\"\naction = \"hold\"\nreason = \"regex {i}\"\nmatch.body.regex = '{pattern}'\n")
    (directory / "10-bench.toml").write_text("\n".join(lines))


def message() -> bytes:
    sentences = ["The meeting notes are attached below for everyone to review.",
                 "Please send comments on the release plan before Friday.",
                 "I tested the patch on two machines and it works for me.",
                 "Thanks for the quick answer, that solved my problem."]
    body = ""
    while len(body) < 10 * 1024:
        body += rng.choice(sentences) + (" " if rng.random() < 0.8 else "\r\n")
    return (f"From: alice@example.org\r\nTo: dev@example.org\r\nSubject: notes\r\n"
            f"Message-ID: <bench@example.org>\r\n\r\n{body}\r\n").encode()


def measure(count: int, runs: int, literal_free: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "rules"
        directory.mkdir()
        write_rules(directory, count, literal_free)
        started = time.perf_counter()
        ruleset = load_rules(directory)
        compile_s = time.perf_counter() - started
    post = parse(message(), "alice@example.org")
    ctx = Context("dev@example.org", "dev.example.org", sender_is_member=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        decision = decide(post, ctx, ruleset)
        times.append(time.perf_counter() - started)
    assert decision.rule_id == "default-member", decision.rule_id
    times.sort()
    return {"rules": count, "median": statistics.median(times) * 1e3,
            "p99": times[int(len(times) * 0.99) - 1] * 1e3, "compile": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    body = parse(message(), "a@example.org").body
    pattern = re.compile(r"\bnothing\W+here\b")
    started = time.perf_counter()
    for _ in range(args.runs):
        pattern.search(body)
    baseline = (time.perf_counter() - started) / args.runs * 1e3
    print(f"~10 KB message, {args.runs} decide() calls per row; no rule matches (all are considered)")
    print(f"baseline: one `re` search of the body: {baseline:.3f} ms\n")
    print(f"{'rules':>6} {'median ms':>10} {'p99 ms':>8} {'compile s':>10}")
    rows = [measure(n, args.runs) for n in (10, 100, 1000, 5000)]
    for r in rows:
        print(f"{r['rules']:>6} {r['median']:>10.3f} {r['p99']:>8.3f} {r['compile']:>10.2f}")
    growth = rows[3]["median"] / rows[1]["median"]
    print(f"\n100 -> 5,000 rules (50x): median grows {growth:.1f}x")
    r = measure(1000, args.runs, literal_free=50)
    print(f"1,000 rules of which 50 regexes have no literal to filter on: median {r['median']:.3f} ms, "
          f"p99 {r['p99']:.3f} ms")


if __name__ == "__main__":
    main()
