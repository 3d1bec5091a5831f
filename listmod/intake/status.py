"""Every SMTP/LMTP reply with an enhanced status code (RFC 3463, RFC 2034): the answers aiosmtpd
writes itself ("250 OK", "503 Error: need MAIL command", ...) get the code their reply code and
command call for; a reply that carries one already is left as written. The greeting (220), the
answers to EHLO/HELO and the intermediate replies (334, 354) carry none, as RFC 2034 says."""

from __future__ import annotations

import re

_HAS_CODE = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")

# By reply code; a command may refine it (RFC 3463 3.2, 3.3, 3.6).
_BY_CODE = {"221": "2.0.0", "250": "2.0.0", "251": "2.1.5", "252": "2.5.0",
            "421": "4.3.0", "450": "4.2.0", "451": "4.3.0", "452": "4.5.3", "454": "4.7.0",
            "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
            "530": "5.7.0", "550": "5.1.1", "552": "5.3.4", "553": "5.1.3", "554": "5.5.0", "555": "5.5.4"}
_BY_COMMAND = {("MAIL", "250"): "2.1.0", ("RCPT", "250"): "2.1.5", ("DATA", "250"): "2.6.0",
               ("RSET", "250"): "2.0.0", ("VRFY", "252"): "2.5.0"}
_SKIPPED = ("EHLO", "HELO", "LHLO")


def with_status(reply: str, command: str) -> str:
    """One reply line with its enhanced status code."""
    code, sep, text = reply[:3], reply[3:4], reply[4:]
    if command in _SKIPPED or code[:1] not in "245" or code == "220" or _HAS_CODE.match(reply):
        return reply
    status = _BY_COMMAND.get((command, code)) or _BY_CODE.get(code)
    if status is None or sep not in (" ", "-", ""):
        return reply
    if text.startswith("Error: "):
        text = text[len("Error: "):]
    return f"{code}{sep or ' '}{status} {text}".rstrip()


def human_size(size: int) -> str:
    """10485760 -> "10 MB", 262144 -> "256 KB" (1 KB = 1024 bytes, as sizes are written in listmod.toml)."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"
