"""Finding a moderator's commands in replies written by real mail clients.

Each reply of the corpus gets an `approve` line where a person would type it (at the top for a
top-poster, after the first quoted block for an inline or bottom poster), and a decoy command inside
the quoted part. Only the typed line may be found."""

import base64
import quopri
import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest
from conftest import DATA

from listmod import tokens
from listmod.moderation.replies import commands_in, own_lines, parse_commands, reply_text, unflow

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "replies"
PERMISSIVE = sorted((DATA / "replies").glob("*.eml"))
GPL = sorted(SHARED.glob("*-redmine-*.eml")) + sorted(SHARED.glob("*-notmuch-*.eml"))
COMMAND = "approve K7Q2-3JQ8M4XZ"
DECOY = "reject ZZZZ-QUOTED99 spam"


def _text_part(msg: Message) -> Message | None:
    for part in msg.walk():
        if not part.is_multipart() and part.get_content_type() in ("text/plain", "text/html") and \
                not str(part.get("Content-Disposition", "")).lower().startswith("attachment"):
            plain = [p for p in msg.walk() if p.get_content_type() == "text/plain"]
            return plain[0] if plain else part
    return None


def _quote_start(line: str) -> bool:
    s = line.strip()
    return s.startswith(">") or bool(re.search(r"(wrote|schrieb|écrit|написал)\s*:\s*$", s, re.I)) \
        or bool(re.match(r"^-+\s*original message", s, re.I)) or bool(re.match(r"^(from|von):", s, re.I))


def insert_plain(text: str, command: str = COMMAND) -> str:
    lines = text.split("\n")
    first_quote = next((i for i, l in enumerate(lines) if _quote_start(l)), None)
    own_before = first_quote is None or any(l.strip() for l in lines[:first_quote])
    if own_before:
        at = 0  # a top-poster types above everything
    else:
        at = first_quote  # an inline or bottom poster types after the first quoted block
        while at < len(lines) and (lines[at].strip().startswith(">") or _quote_start(lines[at])
                                   or re.match(r"^\w+:\s", lines[at]) or not lines[at].strip()):
            at += 1
    lines.insert(at, command)
    # a decoy inside the first quoted block (after its first line)
    quoted = [i for i, l in enumerate(lines) if l.strip().startswith(">")]
    if quoted:
        lines.insert(quoted[0] + 1, "> " + DECOY)
    else:
        original = next((i for i, l in enumerate(lines) if i > at and _quote_start(l)), None)
        if original is not None:
            lines.insert(original + 1, DECOY)
    return "\n".join(lines)


def insert_html(html: str, command: str = COMMAND) -> str:
    body = re.search(r"<body[^>]*>", html, re.I)
    at = body.end() if body else 0
    html = html[:at] + f"<div>{command}</div>" + html[at:]
    quote = re.search(r"<blockquote[^>]*>", html, re.I)
    if quote:
        html = html[:quote.end()] + f"<div>{DECOY}</div>" + html[quote.end():]
    return html


def with_command(raw: bytes, command: str = COMMAND) -> bytes:
    """The same message with the command typed in, re-encoded as its client encoded it."""
    msg = BytesParser(policy=compat32).parsebytes(raw)
    part = _text_part(msg)
    assert part is not None
    charset = part.get_content_charset() or "us-ascii"
    payload = part.get_payload(decode=True) or b""
    try:
        text = payload.decode(charset)
    except (LookupError, UnicodeDecodeError):
        charset, text = "utf-8", payload.decode("utf-8", "replace")
    text = insert_html(text, command) if part.get_content_type() == "text/html" else insert_plain(text, command)
    data = text.encode(charset if charset.lower() != "us-ascii" else "ascii", "replace")
    cte = str(part.get("Content-Transfer-Encoding", "")).lower()
    if cte == "base64":
        encoded = base64.encodebytes(data).decode("ascii")
    elif cte == "quoted-printable":
        encoded = quopri.encodestring(data).decode("ascii")
    else:
        encoded = data.decode("ascii", "surrogateescape")
    part.set_payload(encoded)
    return msg.as_bytes()


@pytest.mark.parametrize("path", PERMISSIVE + GPL, ids=lambda p: p.name)
def test_a_command_typed_into_a_real_reply_is_found_and_quoted_text_is_not(path):
    if not path.exists():
        pytest.skip(f"{path} is not here (the GPL-licensed replies are read from ../shared/corpus)")
    found = commands_in(with_command(path.read_bytes()))
    assert [(c.verb, c.target) for c in found if c.known] == [("approve", "K7Q2-3JQ8M4XZ")], found
    assert not any("ZZZZ" in c.line for c in found)


def test_gpl_replies_are_read_from_the_shared_corpus():
    if not SHARED.exists():
        pytest.skip("../shared/corpus/replies is not here; the GPL-licensed replies are not copied")
    assert len(GPL) >= 30


@pytest.mark.parametrize("path", sorted((DATA / "replies").glob("00[1-9]-talon-*.eml")), ids=lambda p: p.name)
def test_the_new_text_is_what_talons_own_tests_say(path):
    # talon's test_standard_replies: the reply is "Hello" (the iPhone footer is dropped here too)
    assert [l for l in own_lines(reply_text(path.read_bytes())) if l] == ["Hello"]


@pytest.mark.parametrize("path", sorted((DATA / "replies").glob("*.html")), ids=lambda p: p.name)
def test_html_fragments_lose_their_quoted_part(path):
    html = path.read_bytes().decode("utf-8", "replace")
    text = reply_text(b"Content-Type: text/html; charset=utf-8\r\n\r\n" + insert_html(html).encode())
    found = parse_commands(own_lines(text))
    assert [(c.verb, c.target) for c in found if c.known] == [("approve", "K7Q2-3JQ8M4XZ")]
    assert not any("ZZZZ" in c.line for c in found)


def test_command_lines_are_parsed_case_insensitively_with_reasons():
    found = parse_commands(["APPROVE k7q2-abcdefgh", "Reject 9XWD-12345678 off topic; ask on users@",
                            "approve all", "reject all 3JQ7M4XZ not for this list", "ban M3RT-ZZZZZZZZ", "defer 4J2K-AAAAAAAA", "Thanks!",
                            "aprove K7Q2-ABCDEFGH", "withdraw", "publish K7Q2-ABCDEFGH"])
    assert [(c.verb, c.target, c.reason, c.known) for c in found] == [
        ("approve", "k7q2-abcdefgh", "", True),
        ("reject", "9XWD-12345678", "off topic; ask on users@", True),
        ("approve", "all", "", True),
        ("reject", "all", "not for this list", True),
        ("ban", "M3RT-ZZZZZZZZ", "", True),
        ("defer", "4J2K-AAAAAAAA", "", True),
        ("aprove", "K7Q2-ABCDEFGH", "", False),     # mistyped: answered, not guessed
        ("withdraw", "", "", True),
        ("publish", "K7Q2-ABCDEFGH", "", False),    # unknown verb with an id: answered
    ]


def test_format_flowed_lines_are_joined_and_unstuffed():
    flowed = "reject K7Q2-ABCDEFGH this is off \ntopic for the list\n> quoted \n> more\n From here\n"
    assert unflow(flowed).split("\n")[:3] == ["reject K7Q2-ABCDEFGH this is off topic for the list",
                                              ">quoted more", "From here"]


def test_tokens_bind_the_list_and_the_post():
    secret = b"k" * 32
    t = tokens.post_token(secret, "dev@example.org", 7, "K7Q2")
    assert len(t) == 8 and tokens.check(t, t.lower())
    assert not tokens.check(t, tokens.post_token(secret, "other@example.org", 7, "K7Q2"))
    assert not tokens.check(t, tokens.post_token(secret, "dev@example.org", 8, "K7Q2"))
    assert not tokens.check(t, tokens.post_token(b"x" * 32, "dev@example.org", 7, "K7Q2"))
    altered = t[:-1] + ("A" if t[-1] != "A" else "B")
    assert not tokens.check(t, altered) and not tokens.check(t, "")
    assert tokens.split_id("k7q2-" + t.lower()) == ("K7Q2", t)


def test_the_parser_and_the_digest_help_come_from_the_command_registry():
    from listmod.moderation.commands import COMMANDS, REGISTRY, digest_help, lines_under_post
    help_text = "\n".join(digest_help("ABCDEFGH"))
    for command in REGISTRY:
        assert command.name in COMMANDS
        assert (f"{command.name} {command.args}" in help_text) == command.for_moderators, command.name
        found = parse_commands([f"{command.name.upper()} K7Q2-ABCDEFGH"])
        assert [(c.verb, c.known) for c in found] == [(command.name, True)]
    assert "approve all ABCDEFGH" in help_text and "reject all ABCDEFGH reason" in help_text
    assert lines_under_post("K7Q2-ABCDEFGH") == ["    approve K7Q2-ABCDEFGH",
                                                 "    reject K7Q2-ABCDEFGH <reason for the poster>",
                                                 "    discard K7Q2-ABCDEFGH"]
