"""Tokens that make moderation commands unforgeable: an HMAC (the daemon's secret key) bound to the
list and the held post, printed with the post's short id in digests, e.g. `approve K7Q2-3JQ8M4XZ`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

TOKEN_LENGTH = 8  # 40 bits, base32: enough that guessing is hopeless, short enough to copy


def _mac(secret: bytes, *parts: str) -> str:
    digest = hmac.new(secret, "\0".join(parts).encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii")[:TOKEN_LENGTH]


def post_token(secret: bytes, list_address: str, post_id: int, short_id: str) -> str:
    """The token a moderator's command for this held post must carry."""
    return _mac(secret, "moderate", list_address.lower(), str(post_id), short_id.upper())


def poster_token(secret: bytes, list_address: str, post_id: int) -> str:
    """The token in a held-post notice that lets the poster withdraw the post."""
    return _mac(secret, "withdraw", list_address.lower(), str(post_id))


def digest_token(secret: bytes, list_address: str, digest_message_id: str) -> str:
    """The token of one digest: `approve all TOKEN` acts on the posts that digest lists. It is
    written on the command line, never taken from In-Reply-To (which forwards and quotes leak)."""
    return _mac(secret, "digest", list_address.lower(), digest_message_id)


def command_id(short_id: str, token: str) -> str:
    return f"{short_id}-{token}"


def split_id(text: str) -> tuple[str, str]:
    """'K7Q2-3JQ8M4XZ' -> ('K7Q2', '3JQ8M4XZ'); 'K7Q2' -> ('K7Q2', '')."""
    short, _, token = text.strip().partition("-")
    return short.upper(), token.upper()


def check(expected: str, given: str) -> bool:
    """Constant-time comparison; any text may be given (compare_digest refuses non-ASCII str)."""
    return bool(given) and hmac.compare_digest(expected.upper().encode("utf-8"), given.upper().encode("utf-8"))


_HELD_NOTICE = re.compile(r"<held\.(\d+)\.([0-9A-Z]+)@")


def held_notice_id(secret: bytes, list_address: str, post_id: int, hostname: str) -> str:
    """The Message-ID of the notice that a post is held: it carries the poster's withdraw token,
    so a reply to the notice proves who may withdraw which post."""
    return f"<held.{post_id}.{poster_token(secret, list_address, post_id)}@{hostname}>"


def parse_held_notice_id(message_id: str) -> tuple[int, str] | None:
    """(post id, token) from a held notice's Message-ID, or None for any other id."""
    found = _HELD_NOTICE.match(message_id)
    return (int(found.group(1)), found.group(2)) if found else None


_APPEALABLE = re.compile(r"<appeal\.(\d+)\.([0-9A-Z]+)@")


def appealable_notice_id(secret: bytes, appealable_id: int, hostname: str) -> str:
    """The Message-ID of a rejection or sanction notice: a reply to it saying `appeal` proves which
    decision the poster appeals (and that they received the notice)."""
    return f"<appeal.{appealable_id}.{_mac(secret, 'appealable', str(appealable_id))}@{hostname}>"


def parse_appealable_id(secret: bytes, message_id: str) -> int | None:
    """The appealable decision a notice's Message-ID names, when its token checks out."""
    found = _APPEALABLE.match(message_id.strip())
    if not found or not check(_mac(secret, "appealable", found.group(1)), found.group(2)):
        return None
    return int(found.group(1))


def appeal_token(secret: bytes, list_address: str, appeal_id: int) -> str:
    """The token a moderator's `grant` or `deny` of an appeal must carry (AP12-TOKEN)."""
    return _mac(secret, "appeal", list_address.lower(), str(appeal_id))
