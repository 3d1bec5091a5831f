"""The operator's log: one line per decision, per delivery attempt and per failure, as logfmt (the
default) or JSON (`[server] log_format`). Fields name the list, the post, the rule, the outcome and
the remote's answer; people appear by pseudonym (the audit trail's, shortened) unless
`log_addresses = true`, because logs leave listmod's reach and `forget` cannot clean them. Nothing
here ever logs a password, a token or a message body."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .audit import pseudonym

_state: dict[str, Any] = {"secret": b"", "addresses": False, "listener": None}


def configure(log_format: str = "logfmt", log_addresses: bool = False, secret: bytes = b"",
              level: int = logging.INFO) -> None:
    """Set up the root logger for the daemon (stderr; journald or a file takes it from there)."""
    _state.update(secret=secret, addresses=log_addresses)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # the formatters print none of these; each cost a lookup for every line
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter


def who(address: str | None) -> str:
    """A person as the log may name them: the address with log_addresses, else p:PSEUDONYM (the
    first 12 hex digits of the pseudonym the audit trail uses)."""
    if not address:
        return "<>"
    if _state["addresses"] or not _state["secret"]:
        return address
    return "p:" + pseudonym(_state["secret"], address)[:12]


def listen(listener: Callable[[str, dict[str, Any]], None] | None) -> None:
    """Have every event counted too (metrics.observe), or no longer (None)."""
    _state["listener"] = listener


def count(name: str, **fields: Any) -> None:
    """An event for the listener only (when the log has its own wording for it)."""
    listener = _state["listener"]
    if listener is not None:
        listener(name, fields)


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """One structured line: event=NAME and the fields, in the order given (None values left out)."""
    kept = {k: v for k, v in fields.items() if v is not None}
    logger.log(level, name, extra={"fields": kept})
    count(name, **kept)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(), "logger": record.name}
    fields = getattr(record, "fields", None)
    if fields is not None:
        out["event"] = record.getMessage()
        out.update(fields)
    else:
        out["msg"] = record.getMessage()
    if record.exc_info:
        out["error"] = logging.Formatter().formatException(record.exc_info)
    return out


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False, default=str)
