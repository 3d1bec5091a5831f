"""A small NNTP client (RFC 3977, AUTHINFO from RFC 4643, TLS from RFC 4642) for posting approved
articles (and reading them back: ARTICLE, and any command with a multi-line answer), and what each answer to a POST means for the outbox.

Our own rather than nntplib: nntplib is deprecated in Python 3.11-3.12 and gone from 3.13, and its
`post()` rewrites line ends and turns every 4xx into the same exception; posting needs only a
handful of commands, sent byte for byte, with the server's exact code kept for the decision
"posted / already there / try later / refused".
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from ..tlsclient import is_loopback

MAX_LINE = 64 * 1024


class NntpError(Exception):
    """The server answered with a code we did not expect at this step."""

    def __init__(self, step: str, code: int, text: str):
        self.step, self.reply = step, Reply(code, text)
        super().__init__(f"{step}: {code} {text}".strip())


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass(frozen=True)
class PostResult:
    outcome: str       # "sent" | "retry" | "failed", as the outbox records it
    detail: str


def judge_post_reply(reply: Reply) -> PostResult:
    """What an answer to POST means. 240 is posted; "435"/"Duplicate" (INN's nnrpd says
    "441 435 Duplicate") means the server already has this Message-ID, so it is posted too; a code
    inside a 441 that is temporary (400, 403, 436) is tried again; 440, 441 and 5xx otherwise are
    refusals; any other 4xx is tried again."""
    code, text = reply.code, reply.text
    inner = text.split(maxsplit=1)[0] if text.split() else ""
    inner_code = int(inner) if inner.isdigit() and len(inner) == 3 else 0
    if code == 240:
        return PostResult("sent", str(reply))
    if code == 435 or inner_code == 435 or "duplicate" in text.lower():
        return PostResult("sent", f"{reply} (the server already has this article)")
    if code == 441 and inner_code in (400, 403, 436):
        return PostResult("retry", str(reply))
    if code in (440, 441, 437) or 500 <= code < 600:
        return PostResult("failed", str(reply))
    return PostResult("retry", str(reply))


class NntpClient:
    """One connection to a news server, in reader mode, logged in when credentials are given."""

    def __init__(self, host: str, port: int, *, tls: bool = False, timeout: float = 60.0,
                 username: str = "", password: str = "", context: ssl.SSLContext | None = None):
        """`tls`: NNTPS from the first byte; otherwise STARTTLS (RFC 4642) whenever the server
        offers it. `context` verifies the server (default: the system's CAs and the host name)."""
        self.host, self.port = host, port
        context = context or ssl.create_default_context()
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls:
            sock = context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.file = sock.makefile("rb")
        self.encrypted = tls
        greeting = self._reply()
        if greeting.code not in (200, 201):
            self.close()
            raise NntpError("greeting", greeting.code, greeting.text)
        try:
            # a server that treats us as a feeding peer hands us to its reader (INN: innd -> nnrpd)
            self.command("MODE READER")  # a reader-only server may not know it (5xx): harmless
            if not tls and "STARTTLS" in self.capabilities():
                self._starttls(context)
            if username and not self.encrypted and not is_loopback(host):
                raise ConnectionError(
                    f"the news server {host}:{port} offers no STARTTLS, and listmod does not send the "
                    "password in clear off loopback; use nntps (nntps = true), or enable TLS on the server")
            if username:
                self._login(username, password)
        except BaseException:
            self.close()
            raise

    def capabilities(self) -> set[str]:
        """The first word of each CAPABILITIES line (RFC 3977 5.2); empty if the server has none."""
        reply = self.command("CAPABILITIES")
        if reply.code != 101:
            return set()
        return {line.split()[0].upper() for line in self.read_block().decode("utf-8", "replace").splitlines()
                if line.split()}

    def _starttls(self, context: ssl.SSLContext) -> None:
        reply = self.command("STARTTLS")
        if reply.code == 580:  # "can not initiate TLS" (INN without a certificate): still usable in clear
            return
        if reply.code != 382:
            raise NntpError("STARTTLS", reply.code, reply.text)
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        self.file = self.sock.makefile("rb")
        self.encrypted = True

    def _login(self, username: str, password: str) -> None:
        reply = self.command(f"AUTHINFO USER {username}")
        if reply.code == 381:
            reply = self.command(f"AUTHINFO PASS {password}")
        if reply.code != 281:
            raise NntpError("AUTHINFO", reply.code, reply.text)

    def _line(self) -> bytes:
        line = self.file.readline(MAX_LINE)
        if not line:
            raise ConnectionError(f"the news server {self.host}:{self.port} closed the connection")
        return line

    def _reply(self) -> Reply:
        line = self._line().rstrip(b"\r\n").decode("utf-8", "replace")
        head, _, text = line.partition(" ")
        if len(head) != 3 or not head.isdigit():
            raise ConnectionError(f"the news server sent something that is not an NNTP reply: {line[:200]!r}")
        return Reply(int(head), text)

    def command(self, line: str) -> Reply:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")
        return self._reply()

    def post(self, article: bytes) -> Reply:
        """POST one article (CRLF line ends, no dot-stuffing yet); the server's final answer."""
        reply = self.command("POST")
        if reply.code != 340:
            return reply
        self.sock.sendall(dot_stuffed(article) + b".\r\n")
        return self._reply()

    def article(self, message_id: str) -> bytes | None:
        """The article with this Message-ID as the server stores it (CRLF line ends), or None."""
        reply = self.command(f"ARTICLE {message_id}")
        if reply.code == 430:
            return None
        if reply.code != 220:
            raise NntpError("ARTICLE", reply.code, reply.text)
        return self.read_block()

    def read_block(self) -> bytes:
        """The lines of a multi-line answer, dot-unstuffed, without the terminating line."""
        lines: list[bytes] = []
        while True:
            line = self._line()
            if line == b".\r\n":
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b"..") else line)

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def dot_stuffed(article: bytes) -> bytes:
    """The article as sent after POST: lines that start with '.' get a second one (RFC 3977 3.1.1),
    and it ends with CRLF so that the terminating '.' line can follow."""
    if not article.endswith(b"\r\n"):
        article += b"\r\n"
    if article.startswith(b"."):
        article = b"." + article
    return article.replace(b"\r\n.", b"\r\n..")
