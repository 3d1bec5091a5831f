"""A moderator's reply: the text they wrote themselves (not the quote, the attribution, the forwarded
original or the signature), and the command lines in it. Pure functions; nothing is applied here."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from ..htmltext import HTML_TEXT_LIMIT, html_to_text, tokens
from ..message import _decode
from .commands import NAMES

COMMANDS = NAMES  # the registry's verbs (commands.py)
# An id as digests print it: the short id, optionally followed by "-" and its token.
ID = r"[2-9A-HJ-NP-Za-hj-np-z]{4,6}(?:-[0-9A-Za-z]{6,})?"

_ATTRIBUTION_ENDINGS = (
    "wrote:", "wrote :", "writes:", "schrieb:", "a écrit :", "a écrit:", "escribió:", "ha scritto:",
    "написал:", "написала:", "написал(а):", "napisał:", "napisała:", "skrev:", "kirjoitti:",
    "schreef:", "escreveu:", "yazdı:", "写道：", "写道:", "寫道：", "のメッセージ:", "님이 작성:",
)
_ATTRIBUTION_START = re.compile(r"^(on|le|am|el|il|em|op|den|w dniu|в)\b.*\d", re.IGNORECASE)
_ORIGINAL = re.compile(
    r"^\s*(-{2,}\s*(original message|forwarded message|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale|oorspronkelijk bericht|исходное сообщение|原始邮件)\s*-{2,}"
    r"|_{20,}|begin forwarded message:)\s*$", re.IGNORECASE)
_HEADER_LINE = re.compile(r"^\s*\*?(from|von|de|da|от|发件人|van|från)\s*\*?\s*[:：]", re.IGNORECASE)
_HEADER_FOLLOW = re.compile(r"^\s*\*?(sent|date|gesendet|envoyé|enviado|inviato|отправлено|发送时间|"
                            r"datum|to|an|à|para|a|кому|subject|betreff|objet|asunto)\s*\*?\s*[:：]",
                            re.IGNORECASE)
_FOOTER = re.compile(r"^\s*(sent from my |sent from mail for |get outlook for |envoyé de mon |"
                     r"von meinem .* gesendet|enviado desde mi )", re.IGNORECASE)
_SIGNATURE = re.compile(r"^(-- ?|--\s*$|__\s*$)$")
_DIGEST_TOKEN = re.compile(r"[A-Za-z2-7]{8}")
_COMMAND = re.compile(r"^\s*(?P<verb>[A-Za-z]+)\b[ \t]*(?P<rest>.*)$")


@dataclass(frozen=True)
class CommandLine:
    """One line of the reply that asks for something, as the moderator wrote it."""

    line: str          # the whole line, stripped
    verb: str          # lower-cased; one of COMMANDS, or what was written for an unknown command
    target: str        # "all", an id ("K7Q2" or "K7Q2-TOKEN"), or "" when missing
    reason: str        # the rest of the line (for reject/ban)
    known: bool        # False: answered as "unknown command", never guessed at
    digest_token: str = ""   # with target "all": the digest's token, as the digest prints it


def reply_text(raw: bytes) -> str:
    """The readable text of a reply: its first text/plain part (format=flowed undone), or its
    HTML reduced to text with the quoted parts (blockquote, Gmail/Outlook quote blocks) left out."""
    msg = BytesParser(policy=compat32).parsebytes(raw)
    plain = html = None
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = str(part.get("Content-Disposition", "")).lower()
        if disposition.startswith("attachment"):
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and plain is None:
            plain = part
        elif ctype == "text/html" and html is None:
            html = part
    if plain is not None:
        return _plain_text(plain)
    if html is not None:
        return html_reply_text(_payload_text(html))
    return ""


def _payload_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    return _decode(payload, part.get_content_charset())


def _plain_text(part: Message) -> str:
    text = _payload_text(part).replace("\r\n", "\n").replace("\r", "\n")
    if str(part.get_param("format") or "").lower() == "flowed":
        text = unflow(text, str(part.get_param("delsp") or "").lower() == "yes")
    return text


def unflow(text: str, delsp: bool = False) -> str:
    """RFC 3676: undo space-stuffing and join soft line breaks (a line ending in a space, other
    than the signature separator "-- ") with the next line of the same quote depth."""
    out: list[str] = []
    pending: tuple[int, str] | None = None  # a flowed line waiting for its continuation
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if pending is not None and pending[0] == depth:
            content = pending[1] + content
        elif pending is not None:
            out.append(">" * pending[0] + pending[1])
        pending = None
        if flowed:
            pending = (depth, content)
        else:
            out.append(">" * depth + content)
    if pending is not None:
        out.append(">" * pending[0] + pending[1])
    return "\n".join(out)


_QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted", "moz-cite-prefix", "ymail_android_signature",
                  "gmail_signature")
_QUOTE_IDS = ("divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container",
              "yahoo_quoted", "olk_src_body_section")
_VOID = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source"}


def html_reply_text(html: str) -> str:
    """The text of an HTML reply without what the mail client marks as quoted: <blockquote>,
    Gmail's gmail_quote, Outlook's divRplyFwdMsg/appendonsend, Thunderbird's moz-cite-prefix,
    Yahoo's yahoo_quoted (read in one linear pass, see htmltext)."""
    out: list[str] = []
    depth = 0                 # >0 while inside a quoted element
    stack: list[bool] = []    # for each open element: is it a quote?
    for token in tokens(html[:HTML_TEXT_LIMIT]):
        if isinstance(token, str):
            if not depth:
                out.append(token)
            continue
        if token.name in _VOID:
            if not depth and not token.closing:
                out.append(token.text)
            continue
        if token.closing:
            if stack and stack.pop():
                depth -= 1
            elif not depth:
                out.append(token.text)
            continue
        quoted = token.name == "blockquote" or any(c in token.attr("class").lower() for c in _QUOTE_CLASSES) \
            or token.attr("id").lower() in _QUOTE_IDS
        stack.append(quoted)
        if quoted:
            depth += 1
        elif not depth:
            out.append(token.text)
    return html_to_text("".join(out))


def own_lines(text: str) -> list[str]:
    """The lines the moderator wrote: quoted lines, attribution lines, footers are skipped; an
    unquoted forwarded original (Outlook/AOL/Yahoo style) or a signature ends the text."""
    lines = text.split("\n")
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if stripped.startswith(">") or stripped.startswith("|>"):
            i += 1
            continue
        if _SIGNATURE.match(line) or _ORIGINAL.match(stripped):
            break
        if _HEADER_LINE.match(stripped) and any(_HEADER_FOLLOW.match(n.strip()) for n in lines[i + 1: i + 4]):
            # A header block of the original: followed by ">" lines it only introduces a quote
            # (Mew, some webmail); followed by plain text it is Outlook's unquoted original.
            j = i + 1
            while j < len(lines) and (_HEADER_FOLLOW.match(lines[j].strip()) or
                                      (lines[j][:1] in (" ", "\t") and lines[j].strip())):
                j += 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and lines[j].lstrip().startswith(">"):
                i = j
                continue
            break
        lowered = stripped.lower()
        attribution = 0
        if lowered.endswith(_ATTRIBUTION_ENDINGS):
            attribution = 1
        elif (_ATTRIBUTION_START.match(stripped) or re.search(r"\d|@", stripped)) and i + 1 < len(lines) \
                and lines[i + 1].strip().lower().endswith(_ATTRIBUTION_ENDINGS):
            attribution = 2  # "On Mon, 1 Jan 2024 at 10:00, Alice <a@example.org>" / "wrote:"
        if attribution:
            # followed by ">" lines it introduces a quote; followed by plain text (Yahoo's
            # "--- On ... wrote:") the unquoted original starts here
            j = i + attribution
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and not lines[j].lstrip().startswith(">"):
                break
            i += attribution
            continue
        if _FOOTER.match(stripped):
            i += 1
            continue
        kept.append(stripped)
        i += 1
    return kept


def parse_commands(lines: list[str]) -> list[CommandLine]:
    """Command lines among the moderator's own lines. A line that starts with a known command is
    one; a line that looks like a mistyped command (a word close to one, or a word followed by an
    id) is reported as unknown; any other line is conversation and is ignored."""
    found: list[CommandLine] = []
    for line in lines:
        if not line:
            continue
        m = _COMMAND.match(line)
        if not m:
            continue
        verb, rest = m.group("verb").lower(), m.group("rest").strip()
        target, _, reason = rest.partition(" ")
        if verb in COMMANDS:
            token = ""
            if target.lower() == "all":
                target = "all"
                first, _, more = reason.strip().partition(" ")
                if _DIGEST_TOKEN.fullmatch(first.strip(".,;:")):
                    token, reason = first.strip(".,;:").upper(), more
            found.append(CommandLine(line, verb, target.strip(".,;:"), reason.strip(), True, token))
        elif difflib.get_close_matches(verb, COMMANDS, n=1, cutoff=0.75) or \
                (re.fullmatch(ID, target.strip(".,;:")) and any(c.isdigit() for c in target) and len(rest.split()) <= 2):
            found.append(CommandLine(line, verb, target.strip(".,;:"), reason.strip(), False))
    return found


def commands_in(raw: bytes) -> list[CommandLine]:
    """The commands in a reply, in the order written."""
    return parse_commands(own_lines(reply_text(raw)))
