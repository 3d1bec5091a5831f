"""A list's own wording for the notices listmod writes (`templates = "templates/dev"` in its
[[list]]): one file per notice — welcome, goodbye, confirm, held, approved, rejected — with an
optional first line `Subject: ...` and a blank line, then the text, with {placeholders} filled in
(unknown ones are left as written). Without a file, listmod's English wording is used."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import ListConfig

log = logging.getLogger("listmod.templates")

NAMES = ("welcome", "goodbye", "confirm", "held", "approved", "rejected")
MAX_TEMPLATE = 64 * 1024


class _Keep(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(mlist: ListConfig, name: str, subject: str, body: str, /, **values: str) -> tuple[str, str]:
    """(subject, body): the list's template for `name` if it has one, else the defaults given
    (positional, so that a template's {subject} can be a value)."""
    if mlist.templates is None:
        return subject, body
    path = Path(mlist.templates) / f"{name}.txt"
    try:
        text = path.read_text(encoding="utf-8")[:MAX_TEMPLATE]
    except FileNotFoundError:
        return subject, body
    except (OSError, UnicodeDecodeError) as err:
        log.warning("template %s cannot be read (%s); the default wording is used", path, err)
        return subject, body
    fields = _Keep(list=mlist.address, request=mlist.request_address, owner=mlist.owner_alias, **values)
    if text.startswith("Subject:"):
        first, _, text = text.partition("\n")
        subject = first[len("Subject:"):].strip().format_map(fields) or subject
        text = text.lstrip("\n")
    try:
        return subject, text.format_map(fields)
    except (ValueError, IndexError) as err:   # a stray brace: the text as written, unfilled
        log.warning("template %s has a brace that is not a placeholder (%s); sent as written", path, err)
        return subject, text
