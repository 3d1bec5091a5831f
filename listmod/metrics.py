"""Prometheus metrics (`[server] metrics = "127.0.0.1:9105"`, prometheus-client). Counters follow
the operator's log: every `oplog.event` line counts (decisions by list, action and rule; deliveries
by kind and result; replies; digests; rule reloads), so the numbers and the log never disagree.
What is waiting — held posts by age, the outbox by state — is read from the store at each scrape,
in the HTTP server's thread, never on the event loop."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
MESSAGES = Counter("listmod_messages_received_total", "Messages received and stored (one per transaction)",
                   registry=REGISTRY)
DECISIONS = Counter("listmod_decisions_total", "Decisions at intake, by list, action and deciding rule",
                    ["list", "action", "rule"], registry=REGISTRY)
REFUSED = Counter("listmod_intake_refused_total", "Transactions refused before a decision (limits, 451)",
                  ["reason"], registry=REGISTRY)
DELIVERIES = Counter("listmod_deliveries_total", "Delivery attempts' outcomes, counted per copy",
                     ["kind", "result"], registry=REGISTRY)
REPLIES = Counter("listmod_reply_commands_total", "Moderators' commands, applied or refused",
                  ["result"], registry=REGISTRY)
DIGESTS = Counter("listmod_digests_total", "Digests queued", ["list"], registry=REGISTRY)
RELOADS = Counter("listmod_rule_reloads_total", "Rule-set reloads, by result", ["result"], registry=REGISTRY)
JUDGE_SECONDS = Histogram("listmod_judge_seconds", "Time to parse and judge one message for its lists",
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
                          registry=REGISTRY)


def observe(name: str, fields: dict[str, Any]) -> None:
    """Count one operator-log event (called by oplog.event)."""
    if name == "decision":
        DECISIONS.labels(fields.get("list", ""), fields.get("action", ""), fields.get("rule", "")).inc()
    elif name == "refused":
        REFUSED.labels("limit").inc()
    elif name == "not-stored":
        REFUSED.labels("store").inc()
    elif name == "delivery":
        DELIVERIES.labels(fields.get("kind", ""), fields.get("result", "")).inc(int(fields.get("copies", 1)))
    elif name == "reply":
        REPLIES.labels("applied").inc(int(fields.get("applied", 0)))
        REPLIES.labels("refused").inc(int(fields.get("refused", 0)))
    elif name == "digest":
        DIGESTS.labels(fields.get("list", "")).inc()
    elif name == "rules-reload":
        RELOADS.labels(fields.get("result", "")).inc()


def received() -> None:
    MESSAGES.inc()


class StoreCollector(Collector):
    """Gauges read from the store at scrape time."""

    def __init__(self, database: Path | None):
        self.database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        held = GaugeMetricFamily("listmod_held_posts", "Posts held for moderators, by list and age",
                                 labels=["list", "age"])
        outbox = GaugeMetricFamily("listmod_outbox_rows", "Outbox rows not yet sent, by kind and state",
                                   labels=["kind", "state"])
        if self.database is None:
            return
        try:
            conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=2)
        except sqlite3.Error:
            return
        try:
            now = time.time()
            for list_address, age, count in conn.execute(
                    "SELECT list, CASE WHEN ? - created_at < 3600 THEN 'under_1h' WHEN ? - created_at < 86400 "
                    "THEN 'under_1d' ELSE 'older' END AS age, COUNT(*) FROM posts WHERE state = 'held' "
                    "GROUP BY list, age", (now, now)):
                held.add_metric([list_address, age], count)
            for kind, state, count in conn.execute(
                    "SELECT kind, state, COUNT(*) FROM outbox WHERE state != 'sent' GROUP BY kind, state"):
                outbox.add_metric([kind, state], count)
        except sqlite3.Error:
            pass
        finally:
            conn.close()
        yield held
        yield outbox


_STORE = StoreCollector(None)
REGISTRY.register(_STORE)


def serve(endpoint_host: str, endpoint_port: int, database: Path) -> Any:
    """Start the /metrics HTTP server in its own thread; returns the server (shutdown() stops it)."""
    _STORE.database = database
    server, _thread = start_http_server(endpoint_port, endpoint_host, registry=REGISTRY)
    return server
