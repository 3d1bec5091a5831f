"""Generated input (hypothesis) through the parts that read what strangers and admins write: a
message through parse() and decide(), a reply through the command parser, rule files through the
loader, config files through the config reader, and the small parsers of ids, durations, anchors and
subjects. Never an exception that escapes (but the documented ConfigError and ValueError), never a
stall past the time budget. Each run is seeded by hypothesis and printed on failure; `make test`
tries 120 examples of each, LISTMOD_FUZZ_EXAMPLES=5000 tries more."""

import json
import os
import tempfile
import time
from pathlib import Path

from conftest import RULES_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listmod import audit, tokens
from listmod.config import LIST_KEYS, SERVER_KEYS, read_config
from listmod.message import parse
from listmod.moderation.commands import NAMES
from listmod.moderation.replies import commands_in
from listmod.rules import Context, decide, load_rules
from listmod.rules.fields import FIELDS
from listmod.threads import normalise_subject
from listmod.tomlfile import ConfigError, parse_duration

BUDGET = 2.0   # seconds for any one input, far above what a normal one takes
FUZZ = settings(max_examples=int(os.environ.get("LISTMOD_FUZZ_EXAMPLES", "120")), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
STARTER = load_rules(RULES_DIR)
CTX = Context(list_address="dev@example.org", list_id="dev.example.org", sender_is_member=True,
              thread_posts_last_hour=3, thread_participants=2, thread_heat=50, approved_posts=2,
              posts_last_hour=1)

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
odd_text = st.one_of(text, st.sampled_from(["=?utf-8?b?w6nDqA==?=", "=?x-unknown?q?=FF=FE?=", "\x1b[31mred",
                                            "١٢٣", "９h", "\u202e" + "gnp.exe", "a" * 5000, "<>", "\r\n\t",
                                            "=?utf-8?q?" + "=E2=80" * 300 + "?="]))
header_names = st.one_of(st.sampled_from(["Subject", "From", "To", "Cc", "Message-ID", "In-Reply-To", "References",
                                          "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                                          "Auto-Submitted", "List-Id", "X-Loop", "Authentication-Results",
                                          "X-Spam-Score", "Date", "MIME-Version", "Precedence"]),
                         st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,30}", fullmatch=True))
content_types = st.sampled_from(["text/plain", "text/html", "multipart/mixed", "multipart/alternative",
                                 "message/rfc822", "application/octet-stream", "text/plain; charset=x-bogus",
                                 "multipart/mixed; boundary=", "application/pdf; name=\"a.exe\"", "image/png"])


@st.composite
def messages(draw, depth: int = 0) -> bytes:
    headers = draw(st.lists(st.tuples(header_names, odd_text), max_size=12))
    ctype = draw(content_types)
    lines = [f"{name}: {value}" for name, value in headers]
    if ctype.startswith("multipart") and depth < 4:
        boundary = draw(st.sampled_from(["b1", "==x==", "", "a" * 80]))
        parts = draw(st.lists(messages(depth + 1), max_size=3))
        lines.append(f'Content-Type: {ctype.split(";")[0]}; boundary="{boundary}"')
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
        body += draw(st.sampled_from([b"--" + boundary.encode() + b"--\r\n", b"", b"--\r\n"]))
    else:
        lines.append(f"Content-Type: {ctype}")
        body = draw(st.one_of(st.binary(max_size=2000), text.map(lambda t: t.encode("utf-8", "surrogatepass"))))
    head = "\r\n".join(lines).encode("utf-8", "surrogatepass")
    return head + draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n"])) + body


def timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    spent = time.monotonic() - started
    assert spent < BUDGET, f"{fn.__name__} took {spent:.2f}s"
    return result


@FUZZ
@given(messages(), st.sampled_from(["alice@example.org", "", "stranger@example.net", "x@y"]))
def test_any_message_parses_and_is_judged_without_an_escaping_exception(raw, sender):
    post = timed(parse, raw, sender)
    decision = timed(decide, post, CTX, STARTER, time.monotonic() + BUDGET)
    assert decision.action in ("accept", "hold", "reject", "discard", "escalate") and decision.reason


@FUZZ
@given(st.binary(max_size=5000))
def test_any_bytes_parse(raw):
    timed(parse, raw, "alice@example.org")


reply_lines = st.one_of(
    text,
    st.builds(lambda verb, target, rest: f"{verb} {target} {rest}", st.sampled_from(NAMES + ("aprove", "APPROVE")),
              st.one_of(st.from_regex(r"[2-9A-Z]{4,6}-[A-Z2-7]{8}", fullmatch=True), st.just("all"), text),
              text),
    st.builds(lambda t: "> " + t, text),
    st.sampled_from(["On Mon, Bob wrote:", "-- ", "Sent from my phone", "<blockquote>approve K7Q2</blockquote>"]))


@FUZZ
@given(st.lists(reply_lines, max_size=30), st.sampled_from(["text/plain", "text/html",
                                                            "text/plain; format=flowed; delsp=yes"]))
def test_any_reply_text_yields_command_lines_or_none(lines, ctype):
    raw = (f"From: mod@example.org\r\nSubject: Re: x\r\nContent-Type: {ctype}; charset=utf-8\r\n\r\n"
           + "\r\n".join(lines)).encode("utf-8", "surrogatepass")
    for command in timed(commands_in, raw):
        assert command.line and command.verb


toml_values = st.recursive(
    st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=False), st.booleans(), odd_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["a", "gt", "words"]),
                                                                         inner, max_size=3)),
    max_leaves=8)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if value == value and abs(value) != float("inf") else "0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)   # JSON's escapes are TOML's (a DEL is refused: fine)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"


rule_tables = st.lists(st.tuples(
    st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), odd_text),
    st.sampled_from(["accept", "hold", "reject", "discard", "escalate", "tag", "explode"]),
    odd_text,
    st.lists(st.tuples(st.one_of(st.sampled_from(sorted(FIELDS) + ['header."X-Spam"']), text),
                       st.sampled_from(["contains", "words", "regex", "gt", "ge", "lt", "equals", "matches", "nope"]),
                       st.one_of(toml_values, st.sampled_from(["(a+)+$", "[", "(?i)x{1,99999}", "\\p{L}+"]))),
             max_size=3)), max_size=4)


@FUZZ
@given(rule_tables, st.binary(max_size=300))
def test_any_rule_file_loads_or_is_refused_with_file_and_line(rules, junk):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        text_rules = []
        for rule_id, action, reason, conditions in rules:
            body = ["[[rule]]", f"id = {toml_value(rule_id)}", f"action = {toml_value(action)}",
                    f"reason = {toml_value(reason)}"]
            body += [f"match.{field}.{test} = {toml_value(value)}" for field, test, value in conditions]
            text_rules.append("\n".join(body))
        (folder / "10-fuzz.toml").write_text("\n\n".join(text_rules), encoding="utf-8", errors="surrogatepass")
        (folder / "20-junk.toml").write_bytes(junk)
        try:
            timed(load_rules, folder)
        except ConfigError as err:
            assert all(":" in p for p in err.problems), err.problems


config_keys = st.one_of(st.sampled_from(SERVER_KEYS), text)
list_keys = st.one_of(st.sampled_from(LIST_KEYS), text)


@FUZZ
@given(st.dictionaries(config_keys, toml_values, max_size=6), st.dictionaries(list_keys, toml_values, max_size=8),
       st.booleans())
def test_any_config_file_loads_or_is_refused_with_its_problems(server, mlist, with_address):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "listmod.toml"
        lines = ["[server]"] + [f"{toml_value(k)} = {toml_value(v)}" for k, v in server.items()]
        lines += ["", "[[list]]"]
        if with_address:
            lines.append('address = "dev@example.org"')
        lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in mlist.items() if k != "address"]
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        path.chmod(0o600)
        try:
            timed(read_config, path)
        except ConfigError as err:
            assert err.problems and all(p.strip() for p in err.problems)


@FUZZ
@given(odd_text)
def test_the_small_parsers_answer_or_raise_value_error(value):
    for fn in (parse_duration, audit.parse_anchor):
        try:
            fn(value)
        except ValueError:
            pass
    assert tokens.split_id(value) is not None
    assert len(timed(normalise_subject, value)) <= 200
