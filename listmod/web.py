"""The small HTTP listener (`[server] http`, meant to sit behind a reverse proxy at `base_url`):
RFC 8058 one-click unsubscribe for personalised lists, and the links in confirmation mails.

A GET never changes anything (mail scanners follow links): it shows a page with one button, whose
POST does the work. The one-click POST (body `List-Unsubscribe=One-Click`) unsubscribes at once, as
RFC 8058 asks. Links carry the member's pseudonym and a keyed MAC, never the address."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from .config import Config, ListConfig
from .oplog import event, who
from .standing import remove_member
from .store import GroupWriter

log = logging.getLogger("listmod.web")

MAX_REQUEST = 16 * 1024
ONE_CLICK = "List-Unsubscribe=One-Click"


def unsubscribe_mac(secret: bytes, list_id: str, alias: str) -> str:
    return hmac.new(secret, f"unsubscribe:{list_id}:{alias}".encode(), hashlib.sha256).hexdigest()[:24]


def unsubscribe_url(base_url: str, secret: bytes, mlist: ListConfig, alias: str) -> str:
    return f"{base_url.rstrip('/')}/unsubscribe/{mlist.list_id}/{alias}/{unsubscribe_mac(secret, mlist.list_id, alias)}"


def confirm_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/confirm/{token}"


def _page(title: str, text: str, form: str = "") -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{form}</body></html>")


class Web:
    """Routes requests to store changes made through the writer; one request never blocks another."""

    def __init__(self, config: Config, writer: GroupWriter, secret: bytes, wake: Callable[[], None]):
        self.config, self.writer, self.secret, self.wake = config, writer, secret, wake
        self.lists = {m.list_id: m for m in config.lists}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._request(reader), timeout=15)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            status, body = 400, _page("Bad request", "The request could not be read.")
        except Exception:
            log.exception("the HTTP listener failed on a request")
            status, body = 500, _page("Error", "Something went wrong; nothing was changed.")
        data = body.encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error"}[status]
        try:
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
                         f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
                         .encode() + data)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[int, str]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_REQUEST:
            return 400, _page("Bad request", "The request is too large.")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = (lines[0].split(" ") + ["", ""])[:3]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        length = int(headers.get("content-length", "0") or 0)
        if not 0 <= length <= MAX_REQUEST:
            return 400, _page("Bad request", "The request is too large.")
        body = (await reader.readexactly(length)).decode("utf-8", "replace") if length else ""
        path = unquote(path.split("?", 1)[0])
        found = re.fullmatch(r"/unsubscribe/([^/]+)/([0-9a-f]{32})/([0-9a-f]{24})", path)
        if found:
            return await self._unsubscribe(method, found.group(1), found.group(2), found.group(3), body, path)
        found = re.fullmatch(r"/confirm/([a-z0-9]{6,32})", path)
        if found:
            return await self._confirm(method, found.group(1), path)
        return 404, _page("Not found", "There is nothing here.")

    async def _unsubscribe(self, method: str, list_id: str, alias: str, mac: str, body: str,
                           path: str) -> tuple[int, str]:
        mlist = self.lists.get(list_id)
        if mlist is None or not hmac.compare_digest(mac, unsubscribe_mac(self.secret, list_id, alias)):
            return 404, _page("Not found", "This unsubscribe link is not valid (any more).")
        if method == "GET":
            return 200, _page(f"Leave {mlist.address}?", f"Press the button to stop getting mail from "
                              f"{mlist.address}.", f"<form method='post' action='{html.escape(path)}'>"
                              f"<input type='hidden' name='List-Unsubscribe' value='One-Click'>"
                              f"<button type='submit'>Unsubscribe</button></form>")
        if method != "POST":
            return 405, _page("Not allowed", "Use the button on the page.")
        fields = parse_qs(body)
        if fields.get("List-Unsubscribe") != ["One-Click"] and body.strip() != ONE_CLICK:
            return 400, _page("Bad request", f"The body must be {ONE_CLICK} (RFC 8058).")

        def leave(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT address FROM people WHERE pseudonym = ?", (alias,)).fetchone()
            if row is None:
                return ""
            removed = remove_member(conn, self.secret, mlist.address, row[0], actor=f"member:{row[0]}",
                                    source="one-click unsubscribe (RFC 8058)", at=time.time())
            return row[0] if removed else ""
        gone = await asyncio.wrap_future(self.writer.submit(leave))
        event(log, logging.INFO, "unsubscribe", list=mlist.address, member=who(gone) if gone else "-",
              how="one-click")
        return 200, _page("Unsubscribed", f"You will get no more mail from {mlist.address}.")

    async def _confirm(self, method: str, token: str, path: str) -> tuple[int, str]:
        from .subscriptions import Request, handle_request

        def lookup(conn: sqlite3.Connection) -> Any:
            return conn.execute("SELECT list, address, action FROM confirmations WHERE token = ? AND expires_at > ?",
                                (token, time.time())).fetchone()
        row = await asyncio.wrap_future(self.writer.submit(lookup))
        mlist = self.config.list_for(row[0]) if row else None
        if row is None or mlist is None:
            return 404, _page("Not found", "This confirmation is unknown or has expired; nothing changed.")
        if method == "GET":
            what = {"subscribe": f"join {mlist.address}", "unsubscribe": f"leave {mlist.address}",
                    "enable": f"get mail from {mlist.address} again"}.get(row[2], f"change your options on {mlist.address}")
            return 200, _page("Confirm", f"Press the button to confirm: {row[1]} is to {what}.",
                              f"<form method='post' action='{html.escape(path)}'><button type='submit'>Confirm"
                              "</button></form>")
        if method != "POST":
            return 405, _page("Not allowed", "Use the button on the page.")
        server = self.config.server
        answer = await asyncio.wrap_future(self.writer.submit(lambda conn: handle_request(
            conn, self.secret, mlist, Request("confirm", row[1], token), hostname=server.hostname,
            at=time.time(), per_hour=server.held_notices_per_hour)))
        self.wake()
        if "Confirmed" not in answer:
            return 200, _page("Not confirmed", answer.split(" ", 2)[-1])
        done = {"subscribe": f"The request of {row[1]} to join {mlist.address} is confirmed; a moderator approves it"
                if mlist.subscribe_policy == "moderate" else f"{row[1]} is now a member of {mlist.address}",
                "unsubscribe": f"{row[1]} has left {mlist.address}",
                "enable": f"{mlist.address} sends its mail to {row[1]} again"}.get(row[2], "Your options are changed")
        return 200, _page("Confirmed", done + ".")
