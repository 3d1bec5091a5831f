"""HTML read in one linear pass: text and tags, for the rules (the text of an HTML body) and for
moderators' HTML replies (what is quoted). html.parser rescans an unclosed construct from every
position after it: 64 KB of '<a b="' took 20 s and 64 KB of '<!--' 3.5 s, so it never sees our input."""

from __future__ import annotations

import html as entities
import re
from collections.abc import Iterator
from dataclasses import dataclass

# A tag, or the start of a comment, or a declaration / processing instruction. No part may cross a
# '<', so a search that fails at one '<' stops at the next: each character is looked at a bounded
# number of times.
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:_-]*)([^<>]*)>|<!--|<[!?][^<>]*>")
_ATTR = re.compile(r"""([A-Za-z_:][-\w:.]*)(?:\s*=\s*("[^"<>]*"|'[^'<>]*'|[^\s"'=<>`]+))?""")
ATTR_LIMIT = 2048  # characters of one tag's attributes that are read


@dataclass(frozen=True)
class Tag:
    name: str                    # lower-cased
    closing: bool
    attrs: tuple[tuple[str, str], ...]
    text: str                    # the tag as written

    def attr(self, name: str) -> str:
        return next((v for k, v in self.attrs if k == name), "")


def tokens(html: str) -> Iterator[str | Tag]:
    """Text (entities still encoded) and tags, in order; comments, declarations and processing
    instructions are dropped; an unclosed comment runs to the end."""
    pos = 0
    while True:
        found = _TAG.search(html, pos)
        if found is None:
            if pos < len(html):
                yield html[pos:]
            return
        if found.start() > pos:
            yield html[pos:found.start()]
        if found.group(0) == "<!--":
            end = html.find("-->", found.end())
            if end == -1:
                return
            pos = end + 3
            continue
        pos = found.end()
        if found.group(2) is None:
            continue  # <!DOCTYPE ...>, <?xml ...?>
        attrs = tuple((k.lower(), entities.unescape(v.strip("\"'")))
                      for k, v in _ATTR.findall(found.group(3)[:ATTR_LIMIT]))
        yield Tag(found.group(2).lower(), bool(found.group(1)), attrs, found.group(0))


_SKIP = {"script", "style", "head", "title"}
_BREAKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}
HTML_TEXT_LIMIT = 256 * 1024  # characters of an HTML body read for its text (a tag costs ~7 µs)


def html_to_text(html: str) -> str:
    """The readable text of an HTML body (link targets kept so that link rules see them)."""
    out: list[str] = []
    skipping = ""
    for token in tokens(html[:HTML_TEXT_LIMIT]):
        if isinstance(token, str):
            if not skipping:
                out.append(token)
            continue
        if skipping:
            if token.closing and token.name == skipping:
                skipping = ""
            continue
        if token.name in _SKIP and not token.closing:
            skipping = token.name
        elif token.name in _BREAKS:
            out.append("\n")
        if token.name == "a" and not token.closing:
            href = token.attr("href")
            if href.startswith(("http://", "https://")):
                out.append(f" {href} ")
    text = entities.unescape("".join(out))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)
