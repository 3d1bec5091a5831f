"""Wires intake and the outbox worker into one asyncio process, with a clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import oplog
from .config import DEMO_MEMBERS, Config, read_config
from .delivery.outbox import Outbox
from .intake.server import ClientLimits, IntakeHandler, ListmodLMTP, ListmodSMTP
from .loads import config_digest, record_config, record_rules
from .moderation.worker import ModerationWorker
from .notices import rules_refused_notice
from .posts import enqueue_notice
from .rules import RuleSet, load_rules
from .rules.book import RuleBook
from .standing import add_member
from .store import (
    GroupWriter,
    StartupError,
    Store,
    hold_serve_lock,
    load_or_create_secret,
    private_state_dir,
)
from .supervise import supervised
from .tomlfile import ConfigError

log = logging.getLogger("listmod.daemon")
SHUTDOWN_GRACE = 10.0  # seconds the connected clients get to finish their transactions at a stop


def server_tls_context(server) -> ssl.SSLContext | None:
    """STARTTLS on intake (TLS 1.2 or newer) when tls_cert and tls_key are set; a bad pair stops the start."""
    if server.tls_cert is None or server.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as err:
        raise StartupError(f"cannot load tls_cert {server.tls_cert} with tls_key {server.tls_key}: {err}") from None
    return context


def seed_demo_members(store: Store, config: Config) -> list[str]:
    """On the embedded defaults only: give the example list two members if it has none."""
    if config.path is not None:
        return []
    added = []
    with store.transaction() as conn:
        for mlist in config.lists:
            if conn.execute("SELECT 1 FROM members WHERE list = ?", (mlist.address,)).fetchone():
                continue
            for address in DEMO_MEMBERS:
                if add_member(conn, store.secret, mlist.address, address, actor="listmod",
                              reason="The demo roster of the embedded defaults.", source="embedded defaults"):
                    added.append(address)
    return added


def banner(config: Config, demo_members: list[str]) -> str:
    lines = []
    mlist = config.lists[0]
    source = f"config {config.path}" if config.path else "embedded defaults (no listmod.toml found)"
    lines.append(f"listmod is running on {source}")
    if config.server.smtp:
        lines.append(f"  SMTP intake:  {config.server.smtp}")
    if config.server.lmtp:
        lines.append(f"  LMTP intake:  {config.server.lmtp}")
    if config.server.http:
        lines.append(f"  HTTP:         {config.server.http} (one-click unsubscribe and confirmation links; "
                     f"the links in mail say {config.server.base_url or '(no base_url: none are written)'})")
    lines.append(f"  lists:        {', '.join(m.address for m in config.lists)}")
    for news in (m for m in config.lists if m.news_server):
        lines.append(f"  newsgroups:   {news.address} moderates {', '.join(news.newsgroups)}; approved "
                     f"articles are POSTed to {news.news_server}")
    lines.append(f"  store:        {config.database_path}")
    if config.outbound:
        lines.append(f"  outbound:     SMTP to {config.outbound.host}:{config.outbound.port}")
    else:
        lines.append(f"  outbound:     no [outbound] smarthost; list mail is written to {config.maildir_path}/new")
    if demo_members:
        lines.append(f"  members:      added {', '.join(demo_members)} to {mlist.address} (demo roster)")
    if config.server.smtp and mlist.news_server:
        host, port = config.server.smtp.host, config.server.smtp.port
        lines.append("Send a test submission (as the news server would mail it):")
        lines.append(f"  swaks --server {host}:{port} --from news@{mlist.domain} --to {mlist.address} "
                     f"--header 'From: poster@example.net' --header 'Newsgroups: {mlist.newsgroups[0]}' "
                     "--header 'Subject: hello' --body 'First post'")
        lines.append("Then: `listmod queue` shows it if it is held, `listmod audit` every decision and why.")
    elif config.server.smtp:
        host, port = config.server.smtp.host, config.server.smtp.port
        member = demo_members[0] if demo_members else "member@example.org"
        lines.append("Send a test post (from a member; it is delivered):")
        lines.append(f"  swaks --server {host}:{port} --from {member} --to {mlist.address} "
                     f"--header 'Subject: hello' --body 'First post'")
        lines.append("  or, without swaks:")
        lines.append(f"  python3 -c \"import smtplib; smtplib.SMTP('{host}', {port}).sendmail("
                     f"'{member}', ['{mlist.address}'], b'From: {member}\\r\\nTo: {mlist.address}"
                     f"\\r\\nSubject: hello\\r\\n\\r\\nFirst post\\r\\n')\"")
        lines.append("Then: `listmod audit` shows the decision and its reason, `listmod queue` the held posts.")
    return "\n".join(lines)


async def serve(config: Config, rules: RuleSet, stopping: asyncio.Event | None = None,
                announce: Callable[[str], None] = print) -> Config | None:
    """Run until `stopping` is set (or SIGTERM/SIGINT), then drain and stop cleanly. SIGHUP reloads:
    the rules at once; a changed config is read and checked first (a broken one is refused, the
    running one stays), then returned, and the caller serves again with it."""
    loop = asyncio.get_running_loop()
    stopping = stopping or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopping.set)
        except (NotImplementedError, RuntimeError):
            pass
    reloaded: list[Config] = []

    async def hangup() -> None:
        await book.reload()
        if tls is not None and config.server.tls_cert and config.server.tls_key:
            try:  # the next handshakes use the renewed certificate
                tls.load_cert_chain(config.server.tls_cert, config.server.tls_key)
                log.info("SIGHUP: the TLS certificate %s was reloaded", config.server.tls_cert)
            except (OSError, ssl.SSLError) as err:
                log.error("SIGHUP: the TLS certificate %s could not be loaded (%s); the old one stays",
                          config.server.tls_cert, err)
        if config.path is None:
            return
        try:
            new = await asyncio.to_thread(read_config, config.path)
            await asyncio.to_thread(load_rules, new.server.rules_dir)
        except ConfigError as err:
            log.error("SIGHUP: %s was not reloaded; the running config stays:\n%s", config.path, err)
            return
        if config_digest(new) == config_digest(config) and new == config:
            log.info("SIGHUP: rules checked; %s is unchanged", config.path)
            return
        log.info("SIGHUP: %s changed; finishing the work in progress, then serving with it", config.path)
        reloaded.append(new)
        stopping.set()

    def reported(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("SIGHUP reload failed: %s", task.exception())

    def on_hangup() -> None:
        asyncio.ensure_future(hangup()).add_done_callback(reported)
    private_state_dir(config.server.state_dir)
    lock = hold_serve_lock(config.server.state_dir)  # noqa: F841  (held until the process ends)
    secret = load_or_create_secret(config.server.state_dir)
    oplog.configure(config.server.log_format, config.server.log_addresses, secret)  # people by pseudonym
    store = Store(config.database_path, secret, timeout=config.server.commit_timeout, check=True)
    if store.sealed is not None:
        seq, head, problems = store.sealed
        (log.error if problems else log.info)(
            "the store was upgraded to the keyed audit chain; the old chain (up to record %d, head %s) %s and "
            "was sealed", seq, head[:16], f"has {len(problems)} problem(s)" if problems else "verified")
    with store.transaction() as conn:
        record_config(conn, secret, config)
        record_rules(conn, secret, rules, str(config.server.rules_dir))
    demo = seed_demo_members(store, config)
    writer = GroupWriter(store)
    writer.start()
    outbox = Outbox(config, store, writer, secret)

    def refused(err: ConfigError) -> None:
        """A broken rule set: every list's owner hears of it, once per broken version."""
        def notify(conn):
            at = time.time()
            for mlist in config.lists:
                if mlist.owner:
                    enqueue_notice(conn, None, mlist, mlist.owner, rules_refused_notice(
                        mlist, err.problems, book.current.digest, config.server.hostname), at)
        writer.submit(notify).add_done_callback(lambda f: outbox.wake())

    def swapped(new: RuleSet) -> None:
        writer.submit(lambda conn: record_rules(conn, secret, new, str(config.server.rules_dir)))

    book = RuleBook(config.server.rules_dir, rules, on_refused=refused, on_swapped=swapped)
    try:  # only now: a reload needs the rule book
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    except (NotImplementedError, RuntimeError):
        pass
    limits = ClientLimits(config.server)  # shared by SMTP and LMTP: one machine, one budget
    tls = server_tls_context(config.server)  # STARTTLS on intake, when a certificate is configured
    judges = ThreadPoolExecutor(2, thread_name_prefix="listmod-judge")

    def factory(lmtp: bool):
        handler = IntakeHandler(config, book, writer, store.connect, secret, on_accepted=outbox.wake,
                                lmtp=lmtp, limits=limits, judges=judges)
        cls = ListmodLMTP if lmtp else ListmodSMTP
        return lambda: cls(handler, hostname=config.server.hostname,
                           data_size_limit=config.server.max_message_size,
                           enable_SMTPUTF8=True, ident="listmod ESMTP", loop=loop, tls_context=tls)

    servers = []
    metrics_server = None
    if config.server.metrics is not None:
        from . import metrics
        try:
            metrics_server = metrics.serve(config.server.metrics.host, config.server.metrics.port,
                                           config.database_path)
        except OSError as err:
            raise StartupError(f"cannot serve metrics on {config.server.metrics}: {err.strerror}") from None
        oplog.listen(metrics.observe)
    try:
        for endpoint, lmtp in ((config.server.smtp, False), (config.server.lmtp, True)):
            if endpoint is not None:
                servers.append(await loop.create_server(factory(lmtp), endpoint.host, endpoint.port))
        if config.server.http is not None:   # one-click unsubscribe and confirmation links
            from .web import Web
            web = Web(config, writer, secret, outbox.wake)
            try:
                servers.append(await asyncio.start_server(web.handle, config.server.http.host,
                                                          config.server.http.port))
            except OSError as err:
                raise StartupError(f"cannot serve HTTP on {config.server.http}: {err.strerror}") from None
        # every long-lived task is supervised: a failure is logged and the task starts again
        outbox_task = asyncio.create_task(supervised("outbox", outbox.run, stopping))
        watch_task = asyncio.create_task(supervised(
            "rules watch", lambda s: book.watch(s, config.server.reload_every), stopping))
        imap_task = None
        if config.imap is not None:
            from .moderation.imap import ImapWorker
            imap_worker = ImapWorker(config, writer, secret, outbox.wake)
            imap_task = asyncio.create_task(supervised("IMAP replies", imap_worker.run, stopping))
        moderation = ModerationWorker(config, writer, secret, outbox.wake)
        moderation_task = asyncio.create_task(supervised("moderation", moderation.run, stopping))
        announce(banner(config, demo))
        await stopping.wait()
        log.info("stopping: no new connections; finishing the messages in progress")
        for server in servers:
            server.close()
        for server in servers:
            try:  # on 3.12+ this waits for open connections too; don't let an idle client hold us
                await asyncio.wait_for(server.wait_closed(), timeout=10)
            except TimeoutError:
                pass
        # the transactions in flight finish (on 3.11 wait_closed does not wait for connections): a
        # connection between transactions is told 421 and closed now, one in a transaction at its
        # next command; they get up to SHUTDOWN_GRACE, then they are cut off
        closed = limits.close_idle()
        if closed:
            log.info("told %d idle connection(s) 421 (shutting down)", closed)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while limits.open_connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await outbox_task
        await watch_task
        await moderation_task
        if imap_task is not None:
            await asyncio.wait_for(imap_task, timeout=30)
    finally:
        for server in servers:
            server.close()
        if metrics_server is not None:
            oplog.listen(None)
            metrics_server.shutdown()
            metrics_server.server_close()
        outbox.close()
        judges.shutdown(wait=True)
        writer.stop()
        try:
            loop.remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    return reloaded[0] if reloaded else None


def run(config: Config, rules: RuleSet) -> int:
    oplog.configure(config.server.log_format, config.server.log_addresses)

    def announce(text: str) -> None:
        print(text, flush=True)
    try:
        while True:
            new = asyncio.run(serve(config, rules, announce=announce))
            if new is None:
                break
            try:
                config, rules = new, load_rules(new.server.rules_dir)  # checked before the reload began
            except ConfigError as err:  # changed again in the meantime: serve on with the new config
                logging.getLogger("listmod.daemon").error(   # and the rules that were in force
                    "the rules changed during the reload and are refused; the last good set stays:\n%s", err)
                config = new
    except StartupError as err:
        print(f"listmod: not started: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"listmod: cannot start: {err}", file=sys.stderr)
        return 1
    return 0
