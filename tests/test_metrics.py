"""`/metrics` (Prometheus text) after a scripted run shows the counts the run caused."""

from __future__ import annotations

import re
import smtplib
import urllib.request

import pytest
from conftest import LIST, MEMBERS, free_port, post_bytes, wait_until
from test_moderation import MODERATION, command_for, digests, reply

EXE = ("--b\r\nContent-Type: application/octet-stream; name=setup.exe\r\n"
       "Content-Disposition: attachment; filename=setup.exe\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       "TVqQAAMAAAAEAAAA\r\n--b--\r\n")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+(?:\{[^}]*\})?) (\S+)$", line)
        if m and not line.startswith("#"):
            found[m.group(1)] = float(m.group(2))
    return found


def test_metrics_count_what_a_run_did(sink, make_daemon):
    port = free_port()
    d = make_daemon(sink, server_extra=f'metrics = "127.0.0.1:{port}"\n')
    d.send("alice@example.org", LIST, post_bytes(message_id="<m1@test>"))
    d.send("alice@example.org", LIST, post_bytes(message_id="<m2@test>"))
    d.send("stranger@example.net", LIST, post_bytes(sender="stranger@example.net", message_id="<m3@test>"))
    with pytest.raises(smtplib.SMTPDataError):
        d.send("alice@example.org", LIST, post_bytes(
            message_id="<m4@test>", extra='MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n',
            body=EXE))
    digest = wait_until(lambda: digests(d), what="a digest")[0]
    d.send("mod@example.org", MODERATION, reply("mod@example.org", command_for(digest, "approve")))
    wait_until(lambda: len(sink.copies_for("<m3@test>")) == len(MEMBERS), what="the approved post delivered")
    wait_until(d.outbox_idle, what="the outbox idle")
    m = wait_until(lambda: (s := scrape(port)) and s.get('listmod_reply_commands_total{result="applied"}') == 1
                   and s, what="the reply counted")
    assert m["listmod_messages_received_total"] == 4
    assert m[f'listmod_decisions_total{{action="accept",list="{LIST}",rule="default-member"}}'] == 2
    assert m[f'listmod_decisions_total{{action="hold",list="{LIST}",rule="default-nonmember"}}'] == 1
    assert m[f'listmod_decisions_total{{action="reject",list="{LIST}",rule="executable-attachment"}}'] == 1
    assert m['listmod_deliveries_total{kind="post",result="sent"}'] == 3 * len(MEMBERS)
    assert m[f'listmod_digests_total{{list="{LIST}"}}'] == 1
    assert m["listmod_judge_seconds_count"] == 4
    assert not any(k.startswith("listmod_held_posts{") for k in m)       # nothing is held any more
    d.send("other@example.net", LIST, post_bytes(sender="other@example.net", message_id="<m5@test>"))
    m = scrape(port)
    assert m[f'listmod_held_posts{{age="under_1h",list="{LIST}"}}'] == 1
