"""Raw message bytes to a `Post`: addresses, decoded text, attachments and counts; never raises."""

from __future__ import annotations

import base64
import binascii
import codecs
import email.errors
import email.header
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from .addresses import clean
from .htmltext import html_to_text


@dataclass(frozen=True)
class Attachment:
    content_type: str
    filename: str
    size: int


@dataclass(frozen=True)
class Post:
    """What the rules look at. Text fields are decoded; addresses are lower-cased."""

    raw_size: int
    sha256: str
    envelope_sender: str                 # "" for the null sender <>
    from_address: str                    # "" when the From header has no usable address
    from_name: str = ""
    subject: str = ""
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()   # (lower-cased name, decoded value), in order
    attachments: tuple[Attachment, ...] = ()
    recipients: int = 0                  # addresses in To and Cc
    links: int = 0
    message_id: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    content_type: str = "text/plain"
    problems: tuple[str, ...] = ()       # why the message could not be parsed properly
    mime_depth: int = 0                  # how deeply multiparts nest (0: a single part)
    mime_parts: int = 1                  # how many MIME parts, the message itself included
    excerpt: str = ""                    # the first lines of the text (what a digest shows)
    _index: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sender(self) -> str:
        """The address that speaks for the post: From if it is valid, else the envelope sender."""
        return self.from_address or self.envelope_sender

    @property
    def newsgroups(self) -> tuple[str, ...]:
        """The groups of the Newsgroups header (a submission to a moderated newsgroup)."""
        return newsgroups_of(" ".join(self.header("newsgroups")))

    def header(self, name: str) -> tuple[str, ...]:
        """Every decoded value of a header (case-insensitive name), in order."""
        if not self._index:
            for key, value in self.headers:
                self._index.setdefault(key, ())
                self._index[key] += (value,)
        return self._index.get(name.lower(), ())


def newsgroups_of(value: str) -> tuple[str, ...]:
    """The groups of a Newsgroups header: comma separated; folding and stray spaces ignored."""
    return tuple(g for g in re.split(r"[,\s]+", value.strip()) if g)


# Defects after which the parts of a message cannot be trusted to be what the rules saw.
_SERIOUS_DEFECTS = {
    email.errors.NoBoundaryInMultipartDefect: "a multipart message declares no boundary",
    email.errors.StartBoundaryNotFoundDefect: "the multipart boundary never appears in the body",
    email.errors.CloseBoundaryNotFoundDefect: "a multipart part is never closed by its boundary",
    email.errors.MultipartInvariantViolationDefect: "the MIME structure contradicts itself",
    email.errors.MissingHeaderBodySeparatorDefect: "a header line has no colon, so the headers cannot be read",
}

_MSGID = re.compile(r"<[^<>\s]+>")
_parser = BytesParser(policy=compat32)


def parse(raw: bytes, envelope_sender: str = "") -> Post:
    """Turn raw bytes into a Post. Any failure is described in Post.problems, never raised."""
    digest = hashlib.sha256(raw).hexdigest()
    envelope = clean(envelope_sender)
    try:
        return _parse(raw, digest, envelope)
    except Exception as err:  # the parser promises never to raise: describe, don't crash
        return Post(raw_size=len(raw), sha256=digest, envelope_sender=envelope, from_address="",
                    problems=(f"the parser failed ({type(err).__name__}: {err})",))


def _parse(raw: bytes, digest: str, envelope: str) -> Post:
    problems: list[str] = []
    size = len(raw)
    if b"\x00" in raw:
        problems.append("the message contains NUL bytes")
        raw = raw.replace(b"\x00", b"")
    msg = _parse_bytes(raw)
    for defect in msg.defects:
        for kind, text in _SERIOUS_DEFECTS.items():
            if isinstance(defect, kind) and text not in problems:
                problems.append(text)
    if not msg.keys():
        problems.append("the message has no header section")

    headers = tuple((name.lower(), header_text(value)) for name, value in msg.items())
    from_name, from_address = _from(msg)
    subject = header_text(msg.get("Subject", ""))

    texts: list[str] = []
    htmls: list[str] = []
    attachments: list[Attachment] = []
    depth = count = 0
    for part, level in _parts(msg):
        depth, count = max(depth, level), count + 1
        for defect in part.defects:
            for kind, text in _SERIOUS_DEFECTS.items():
                if isinstance(defect, kind) and text not in problems:
                    problems.append(text)
        ctype = part.get_content_type()
        if part.is_multipart() and not (ctype.startswith("message/") and part is not msg):
            continue
        disposition_header = header_text(part.get("Content-Disposition"))
        disposition = disposition_header.split(";", 1)[0].strip().lower()
        could_be_named = "name" in disposition_header.lower() or "name" in str(part.get("Content-Type", "")).lower()
        filename = _filename(part) if could_be_named else ""
        if ctype == "message/rfc822" or filename or disposition == "attachment" or \
                not ctype.startswith("text/"):
            if part is msg and ctype.startswith("text/"):
                pass  # a single-part text message with a name is still the body
            else:
                attachments.append(Attachment(ctype, filename, _payload_size(part)))
                continue
        text = _part_text(part)
        (htmls if ctype == "text/html" else texts).append(text)
    if texts:
        body = "\n".join(texts)
    else:
        body = "\n".join(html_to_text(h) for h in htmls)
    links = count_links(body)

    recipients = len(email.utils.getaddresses(
        [header_text(v) for v in (msg.get_all("To") or []) + (msg.get_all("Cc") or [])]))
    message_id = _first_msgid(msg.get("Message-ID", ""))
    return Post(
        raw_size=size,
        sha256=digest,
        envelope_sender=envelope,
        from_address=from_address,
        from_name=from_name,
        subject=subject,
        body=body,
        headers=headers,
        attachments=tuple(attachments),
        recipients=recipients,
        links=links,
        message_id=message_id,
        in_reply_to=_first_msgid(msg.get("In-Reply-To", "")),
        references=tuple(_MSGID.findall(header_text(msg.get("References", "")))),
        content_type=msg.get_content_type(),
        problems=tuple(problems),
        mime_depth=depth,
        mime_parts=count,
        excerpt=excerpt_of(body),
    )


def _parts(msg: Message):
    """Like Message.walk(), but an attached message is one part (its insides are not our body),
    with each part's nesting depth. Iterative: a message nested a thousand deep is no stack risk."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, level = stack.pop()
        yield part, level
        if part.is_multipart() and part.get_content_maintype() != "message":
            subs = [p for p in part.get_payload() if isinstance(p, Message)]
            stack.extend((sub, level + 1) for sub in reversed(subs))


def excerpt_of(body: str, lines: int = 2, width: int = 76) -> str:
    """The first lines of text that are not quotes, shortened: what a digest shows of a post.
    Reads only as far as it needs to (a body may be megabytes)."""
    out: list[str] = []
    start = 0
    scan = min(len(body), 64 * 1024)  # a body of blank or quoted lines is not read to its end
    while len(out) < lines and start < scan:
        end = body.find("\n", start)
        end = len(body) if end == -1 else end
        line = body[start:min(end, start + 4 * width)].strip()
        start = end + 1
        if not line or line.startswith(">"):
            continue
        out.append(line if len(line) <= width else line[: width - 4].rstrip() + " ...")
    return "\n".join(out)


def count_links(text: str) -> int:
    """Web links in text: http:// and https:// URLs, and bare www. names (str.find, not a regex:
    scanning 10 KB with a regex costs more than all the rest of parsing)."""
    low = text.lower()
    count = 0
    at = low.find("://")
    while at != -1:
        if low.endswith("http", 0, at) or low.endswith("https", 0, at):
            count += 1
        at = low.find("://", at + 3)
    at = low.find("www.")
    while at != -1:
        before = low[at - 1] if at else " "
        if not (before.isalnum() or before in "./-_@"):
            count += 1
        at = low.find("www.", at + 4)
    return count


_SEPARATOR = re.compile(rb"\r?\n\r?\n")


def _parse_bytes(raw: bytes) -> Message:
    """compat32 parsing, with a shortcut for single-part mail: only the header block goes through
    the line-by-line feed parser, and the body is attached as it is (it holds no structure)."""
    split = _SEPARATOR.search(raw)
    if split is not None:
        head = _parser.parsebytes(raw[: split.end()])
        if head.get_content_maintype() not in ("multipart", "message") and not head.defects:
            head.set_payload(raw[split.end():].decode("ascii", "surrogateescape"))
            return head
    return _parser.parsebytes(raw)


def header_text(value: object) -> str:
    """A header value as readable text: encoded-words decoded, raw 8-bit read as UTF-8, control
    characters (terminal escapes, bells) removed, one line. Linear in the length of the value."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):  # compat32 hands raw 8-bit headers over like this
        try:
            text = "".join(_decode(chunk, charset) if isinstance(chunk, bytes) else chunk
                           for chunk, charset in email.header.decode_header(value))
        except Exception:
            text = str(value)
        return printable(text)
    text = str(value)
    if text.isascii():
        if "=?" not in text:
            return printable(text)
    elif any("\udc80" <= ch <= "\udcff" for ch in text):
        raw = text.encode("utf-8", "surrogateescape")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    if "=?" in text:
        text = decode_words(text)
    return printable(text)


# C0 and C1 controls and DEL: what a terminal or a mail client could take as a command
_CONTROLS = {c: " " for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """Text safe to show or to put into a header: controls removed, lone surrogates replaced,
    white space folded to single spaces."""
    if not text.isprintable():  # the usual header is printable: one C-speed scan, nothing to do
        text = text.translate(_CONTROLS)
        if not text.isascii():
            text = text.encode("utf-8", "replace").decode("utf-8")
    return " ".join(text.split())


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def decode_words(text: str) -> str:
    """RFC 2047 encoded-words decoded in one pass (email.header.decode_header is quadratic in the
    number of words): white space between two encoded-words is dropped, adjacent words in one
    charset are joined before decoding (a character may be split across them), and a word that
    does not decode is left as written."""
    out: list[str] = []
    pending = bytearray()
    charset: str | None = None
    pos = 0
    for found in _ENCODED_WORD.finditer(text):
        between = text[pos: found.start()]
        word_charset = found.group(1).split("*", 1)[0].lower()
        data = _word_bytes(found.group(2), found.group(3))
        if data is None:
            if charset is not None:
                out.append(_decode(bytes(pending), charset))
                pending.clear()
                charset = None
            out.append(text[pos: found.end()])
            pos = found.end()
            continue
        if charset is None or between.strip() or word_charset != charset:
            if charset is not None:
                out.append(_decode(bytes(pending), charset))
                pending.clear()
            if charset is None or between.strip():
                out.append(between)
        charset = word_charset
        pending += data
        pos = found.end()
    if charset is not None:
        out.append(_decode(bytes(pending), charset))
    out.append(text[pos:])
    return "".join(out)


def _word_bytes(encoding: str, data: str) -> bytes | None:
    try:
        if encoding in "bB":
            return base64.b64decode(data + "=" * (-len(data) % 4))
        return binascii.a2b_qp(data.encode("ascii"), header=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def _decode(data: bytes, charset: str | None) -> str:
    name = (charset or "us-ascii").strip().strip('"').lower()
    if name in ("unknown-8bit", "x-unknown", "us-ascii", "ascii", ""):
        name = "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    try:
        return data.decode(name)
    except (UnicodeDecodeError, LookupError, ValueError):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode(name if name != "utf-8" else "latin-1", "replace")


def _part_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    return _decode(payload, part.get_content_charset())


def _payload_size(part: Message) -> int:
    if part.is_multipart():  # an attached message
        try:
            return sum(len(m.as_bytes()) for m in part.get_payload() if isinstance(m, Message))
        except Exception:
            return 0
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        raw = part.get_payload()
        return len(str(raw)) if raw is not None else 0
    return len(payload)


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
        if isinstance(name, tuple):  # RFC 2231 triple
            name = email.utils.collapse_rfc2231_value(name)
    except Exception:
        # compat32 trips over some non-ASCII parameters; read the raw header instead
        raw = header_text(part.get("Content-Disposition", "")) + ";" + \
            header_text(part.get("Content-Type", ""))
        found = re.search(r'name\*?=\s*"?([^";]+)', raw)
        name = found.group(1) if found else ""
    return header_text(name)


def _from(msg: Message) -> tuple[str, str]:
    values = msg.get_all("From") or []
    for value in values:
        name, address = email.utils.parseaddr(header_text(value))
        checked = clean(address)
        if checked:
            return name, checked
    return "", ""




def _first_msgid(value: object) -> str:
    found = _MSGID.search(header_text(value))
    return found.group(0) if found else ""
