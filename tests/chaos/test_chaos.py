"""Proof under fire: kill -9 in each phase of the daemon's work, outages of each server it talks to
with a restart of the daemon in each, and a full disk; then nothing answered 250 is lost, nothing is
delivered twice, no reply is applied twice, and the audit chain verifies. `make test` runs the short
version (a kill per phase); `make chaos` the long one (20 kills, more posts). Each test prints its
summary line per promise, with the seed that repeats it (LISTMOD_CHAOS_SEED)."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections import Counter

import pytest
from conftest import free_port, load_test_rules, wait_until
from harness import (
    PHASES,
    Kill,
    Killer,
    Load,
    Moderator,
    Smarthost,
    Tally,
    count,
    daemon_config,
    drain,
    in_flight,
    long_run,
    seed,
    summary,
)
from servers import Inn, fill_disk


@pytest.fixture
def inn():
    server = Inn(free_port())
    server.start()
    yield server
    server.cleanup()


def report(text: str) -> None:
    """The summary, on the terminal even when pytest captures output, and in var/chaos.log for docs."""
    print("\n" + text, flush=True)
    path = os.environ.get("LISTMOD_CHAOS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def start_load(d, tally, clients, per_client, news, stop, strangers=True):
    loads = [Load(n, d, tally, per_client, news, stop, strangers=strangers) for n in range(clients)]
    for load in loads:
        load.start()
    return loads


def finish(loads, stop, wait_for: float = 0) -> None:
    time.sleep(wait_for)
    stop.set()
    for load in loads:
        load.join(120)
        assert not load.is_alive(), f"{load.name} did not finish"


def test_kill_9_in_every_phase_loses_nothing_delivers_once_and_applies_each_reply_once(
        sink, make_daemon, tmp_path, dovecot, inn):
    rng_seed = seed()
    rng = random.Random(rng_seed)
    report(f"chaos kill -9: seed {rng_seed}")
    kills = 20 if long_run() else len(PHASES)
    d = make_daemon(sink, rules_dir=load_test_rules(tmp_path), **daemon_config(dovecot, inn))
    tally, stop, stop_moderator = Tally(), threading.Event(), threading.Event()
    moderator = Moderator(dovecot, stop_moderator)
    moderator.start()
    loads = start_load(d, tally, 8, 5000, True, stop)
    killer = Killer(d, rng, tally, moderator)
    schedule = [PHASES[i % len(PHASES)] for i in range(kills)]
    rng.shuffle(schedule)
    try:
        wait_until(lambda: len(tally.acked) >= 100, 60, "the first 100 posts answered")
        for phase in schedule:
            killer.kill_during(phase)
            time.sleep(rng.uniform(0.2, 1.0))
        finish(loads, stop, wait_for=1.0)
        drain(d, moderator=moderator, dovecot=dovecot)   # the moderator goes on answering digests until nothing is held
    finally:
        stop.set()
        stop_moderator.set()
    found = count(d, sink, tally, killer.kills, inn, dovecot)
    report(summary("kill -9", rng_seed, tally, found, killer.kills, killer.missed, replays=killer.replays))
    assert len(killer.kills) == kills, f"phases never reached: {dict(killer.missed)}"
    assert not found.lost, f"{len(found.lost)} messages answered 250 are not in the store: {found.lost[:5]}"
    assert not found.wrong_state, found.wrong_state[:5]
    assert not found.missing_copies, found.missing_copies[:5]
    assert not found.duplicates, found.duplicates[:5]
    assert not found.article_problems, found.article_problems[:5]
    assert not found.digest_duplicates
    assert not found.decided_twice, found.decided_twice[:5]
    assert found.refused_replies >= killer.replays, "a reply delivered again was not refused as a replay"
    assert "chain intact" in found.chain, found.chain


def test_outages_of_smarthost_imap_and_news_server_with_a_restart_in_each_lose_nothing(
        sink, make_daemon, tmp_path, dovecot, inn):
    rng_seed = seed()
    rng = random.Random(rng_seed)
    d = make_daemon(sink, rules_dir=load_test_rules(tmp_path), **daemon_config(dovecot, inn))
    tally, stop, stop_moderator = Tally(), threading.Event(), threading.Event()
    moderator = Moderator(dovecot, stop_moderator)
    moderator.start()
    loads = start_load(d, tally, 4, 5000, True, stop)
    outage = 6.0 if long_run() else 2.5
    done: list[str] = []
    kills: list[Kill] = []   # a kill -9 leaves SMTP's window open for the copies in flight: counted apart
    try:
        wait_until(lambda: len(tally.acked) >= 50, 60, "the first 50 posts answered")
        for name, server in (("smarthost", Smarthost(sink)), ("imap", dovecot), ("nntp", inn)):
            before = len(tally.acked)
            server.stop()
            time.sleep(rng.uniform(0.3, outage / 2))
            if rng.random() < 0.5:
                d.kill9()
                kills.append(Kill(f"{name} outage", time.time(), *in_flight(d)))
            else:
                d.stop()
            d.start()
            time.sleep(outage / 2)
            server.start()
            done.append(f"{name} down, {len(tally.acked) - before} posts answered meanwhile")
        time.sleep(1.0)
        finish(loads, stop)
        drain(d, moderator=moderator, dovecot=dovecot)
    finally:
        stop.set()
        stop_moderator.set()
    found = count(d, sink, tally, kills, inn, dovecot)
    report(summary("outages", rng_seed, tally, found, kills, Counter(), extra="; ".join(done)))
    assert len(done) == 3
    assert found.ok, found.problems()


def test_a_full_disk_answers_451_and_loses_nothing_once_space_is_freed(sink, make_daemon, tmp_path):
    rng_seed = seed()
    d = make_daemon(sink, rules_dir=load_test_rules(tmp_path), start=False, list_extra='digest_every = "1s"\n')
    var = d.dir / "var"
    saved = {f.name: f.read_bytes() for f in var.iterdir() if f.is_file()}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(var)], check=True)
    tally, stop = Tally(), threading.Event()
    try:
        for name, data in saved.items():
            (var / name).write_bytes(data)
            os.chmod(var / name, 0o600)
        filler = var / "filler"
        filler.touch()  # while there is surely room (a CI run once found no room to create it later)
        d.start()
        loads = start_load(d, tally, 4, 5000, False, stop, strangers=False)  # no moderator here
        wait_until(lambda: len(tally.acked) >= 50, 60, "the first 50 posts answered")
        fill_disk(filler)
        refused_before = len(tally.unknown)
        wait_until(lambda: len(tally.unknown) >= refused_before + 5 or "451" in d.log(), 30,
                   "intake to answer 451 while the disk is full")
        acked_full = len(tally.acked)
        time.sleep(1.5)
        while_full = len(tally.acked) - acked_full
        filler.unlink()
        wait_until(lambda: len(tally.acked) >= acked_full + 100, 60, "posts answered 250 again")
        finish(loads, stop)
        drain(d)
        found = count(d, sink, tally, [], None, None)
        report(summary("disk full", rng_seed, tally, found, [], Counter(),
                       extra=f"{len(tally.unknown) - refused_before} answered 451 or dropped while full, "
                             f"{while_full} answered 250 while full (room left in the WAL)"))
        assert found.ok, found
    finally:
        stop.set()
        d.stop()
        subprocess.run(["umount", "-l", str(var)])
