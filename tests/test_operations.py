"""What an operator sees: a log line per decision and per delivery attempt that names the remote
and its answer (and no secret, no address unless asked), `listmod status` with the failing copies
and their error, `listmod digest send` on demand."""

from __future__ import annotations

import json
import re
from datetime import datetime

from conftest import LIST, MEMBERS, free_port, post_bytes, wait_until

SECRET = "s3cret-PASSWORD-do-not-log"


def _time(line: str) -> float:
    stamp = re.search(r"time=(\S+)Z", line).group(1)
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def test_a_dead_smarthost_is_named_in_the_log_within_a_second_and_in_status(sink, make_daemon):
    dead = free_port()   # nothing listens there
    d = make_daemon(sink, files={"smarthost.secret": SECRET + "\n"},
                    outbound_extra='username = "listmod"\npassword_file = "smarthost.secret"\n')
    text = d.config_path.read_text().replace(f"port = {sink.port}", f"port = {dead}")
    d.config_path.write_text(text)
    d.stop()
    d.start()
    d.send("alice@example.org", LIST, post_bytes(message_id="<dead@test>"))
    failure = wait_until(lambda: [l for l in d.log().splitlines() if "event=delivery" in l and "level=warning" in l],
                         10, "the failed delivery in the log")[0]
    decision = next(l for l in d.log().splitlines() if "event=decision" in l)
    assert f'remote="smtp 127.0.0.1:{dead}"' in failure and "result=retry" in failure
    assert f"cannot reach the smarthost 127.0.0.1:{dead}" in failure and f"list={LIST}" in failure
    assert _time(failure) - _time(decision) < 1.0, (decision, failure)
    assert "action=accept" in decision and "rule=default-member" in decision
    log = d.log()
    assert SECRET not in log
    assert not any(member in log for member in MEMBERS), "addresses are logged only with log_addresses"
    assert re.search(r"sender=p:[0-9a-f]{12}", decision)
    status = d.cli("status").stdout
    assert f"cannot reach the smarthost 127.0.0.1:{dead}" in status and "outbox pending: 3 row(s)" in status
    assert f"smtp 127.0.0.1:{dead}: last success never, last failure" in status
    st = d.cli_json("status")[0]
    assert st["outbox"]["pending"]["rows"] == 3 and st["intake"]["decisions_24h"] == {"accept": 1}
    assert SECRET not in status


def test_json_logs_and_addresses_when_asked(sink, make_daemon):
    d = make_daemon(sink, server_extra='log_format = "json"\nlog_addresses = true\n')
    d.send("alice@example.org", LIST, post_bytes(message_id="<json@test>"))
    wait_until(lambda: len(sink.copies_for("<json@test>")) == len(MEMBERS), what="delivery")
    wait_until(lambda: '"event": "delivery"' in d.log(), what="the delivery line")
    records = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
    decision = next(r for r in records if r.get("event") == "decision")
    assert (decision["list"], decision["action"], decision["sender"]) == (LIST, "accept", "alice@example.org")
    delivery = next(r for r in records if r.get("event") == "delivery")
    assert delivery["result"] == "sent" and delivery["remote"] == f"smtp 127.0.0.1:{sink.port}"
    assert delivery["copies"] == len(MEMBERS) and delivery["level"] == "info"


def test_digest_send_makes_a_digest_now(sink, make_daemon):
    d = make_daemon(sink, list_extra='digest_every = "1d"\n')
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject="first"))
    folder = d.dir / "var" / "moderation-maildir" / "new"
    wait_until(lambda: len(list(folder.glob("*"))) == 1, what="the first digest")
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", subject="second"))
    wait_until(lambda: len(d.cli_json("queue")) == 2, what="the second post held")
    assert len(list(folder.glob("*"))) == 1           # the next digest would wait a day
    out = d.cli("digest", "send").stdout
    assert f"{LIST}: a digest of 2 post(s) is queued" in out
    wait_until(lambda: len(list(folder.glob("*"))) == 2, what="the digest sent on demand")
    assert "held on dev@example.org: 2" in d.cli("status").stdout
