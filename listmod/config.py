"""listmod.toml: loading and validating the daemon's configuration into frozen dataclasses."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .addresses import checked
from .tomlfile import ConfigError, Locator, did_you_mean, load, parse_duration, parse_size

ACTIONS_FOR_DEFAULTS = ("accept", "hold", "reject", "discard")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    smtp: Endpoint | None = Endpoint("127.0.0.1", 8025)
    lmtp: Endpoint | None = None
    hostname: str = "localhost"
    max_message_size: int = 10 * 1024 * 1024
    state_dir: Path = Path("var")
    rules_dir: Path = Path("rules")
    commit_timeout: float = 5.0
    authserv_id: str = ""          # whose Authentication-Results the auth.* fields trust
    spam_score_header: str = ""    # e.g. "X-Spam-Score", written by the MTA's filter
    reload_every: float = 1.0      # how often rules_dir is checked for changes
    # limits that keep one message or one client from stopping the work for others
    max_header_size: int = 256 * 1024      # bytes of header section; larger: 552 5.3.4
    max_header_count: int = 1000           # header fields; more: 552 5.3.4
    max_mime_depth: int = 20               # nesting of multiparts; deeper: 554 5.6.0
    max_mime_parts: int = 500              # MIME parts; more: 554 5.6.0
    judge_budget: float = 2.0              # seconds to parse and judge one message; then held
    max_concurrent_data: int = 16          # messages being received at once; more wait, then 451
    max_connections_per_ip: int = 20       # per client address (trusted relays exempt); more: 421
    trusted_relays: tuple[str, ...] = ("127.0.0.0/8", "::1")
    max_commands_per_reply: int = 20       # commands read from one moderation reply
    held_notices_per_hour: int = 3         # "your post is held" notices to one address


@dataclass(frozen=True)
class OutboundConfig:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password_file: Path | None = None
    connections: int = 4
    batch_recipients: int = 50
    retry_after: float = 60.0
    retry_max: float = 3600.0
    give_up_after: float = 5 * 86400.0
    refused_retry_for: float = 3600.0   # a 5xx for the whole transaction is retried this long
    timeout: float = 60.0

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        return self.password_file.read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class ListConfig:
    address: str
    moderators: tuple[str, ...] = ()
    owner: str = ""
    default_member_action: str = "accept"
    default_nonmember_action: str = "hold"
    deliver: str = "members"
    escalation_contact: str = ""
    digest_every: float = 3600.0       # how often held posts are sent to the moderators
    digest_max_items: int = 50         # a digest goes out at once when this many posts wait
    remind_after: float = 86400.0      # posts held longer are flagged in the digest
    expire_after: float = 7 * 86400.0  # then they get expire_action
    expire_action: str = "reject"
    notify_held: bool = False          # tell a held poster once, with a withdraw token
    require_dkim: bool = False         # moderator replies must show dkim=pass for their domain
    nntp_username: str = ""            # deliver = "nntp://...": AUTHINFO USER, when the server asks
    nntp_password_file: Path | None = None
    approved_by: str = ""              # the Approved: value; the list address when empty
    nntps: bool = False                # NNTP over TLS (RFC 4642), port 563 unless one is given
    allow_control: bool = False        # approved articles may carry Control/Supersedes headers
    digest_max_size: int = 5 * 1024 * 1024  # posts past it wait for the next digest

    @property
    def moderation_address(self) -> str:
        return f"{self.local_part}-moderation@{self.domain}"

    @property
    def local_part(self) -> str:
        return self.address.rsplit("@", 1)[0]

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    @property
    def list_id(self) -> str:
        """RFC 2919 List-Id: the address with '@' turned into '.'."""
        return f"{self.local_part}.{self.domain}"

    @property
    def bounce_address(self) -> str:
        return f"{self.local_part}-bounces@{self.domain}"

    @property
    def owner_alias(self) -> str:
        return f"{self.local_part}-owner@{self.domain}"

    @property
    def request_address(self) -> str:
        return f"{self.local_part}-request@{self.domain}"

    @property
    def relay_to(self) -> str | None:
        return self.deliver.split(":", 1)[1] if self.deliver.startswith("relay:") else None

    @cached_property
    def news_server(self) -> NewsServer | None:
        """Where approved articles are POSTed, for a list that moderates newsgroups."""
        if not self.deliver.startswith(("nntp://", "nntps://")):
            return None
        server = parse_news_url(self.deliver)
        if self.nntps and not server.tls:
            port = server.port if server.port_given else 563
            server = NewsServer(server.host, port, server.groups, True, server.port_given)
        return server

    @property
    def newsgroups(self) -> tuple[str, ...]:
        """The newsgroups this list moderates (none for a mailing list)."""
        server = self.news_server
        return server.groups if server else ()

    @property
    def approved(self) -> str:
        return self.approved_by or self.address

    def nntp_password(self) -> str:
        return self.nntp_password_file.read_text(encoding="utf-8").strip() if self.nntp_password_file else ""


# RFC 5536 3.1.4: newsgroup names are dot-separated components of letters, digits, + - _
_NEWSGROUP = re.compile(r"^[A-Za-z0-9+_-]+(\.[A-Za-z0-9+_-]+)*$")


@dataclass(frozen=True)
class NewsServer:
    host: str
    port: int
    groups: tuple[str, ...]
    tls: bool = False
    port_given: bool = False

    def __str__(self) -> str:
        port = f":{self.port}" if self.port_given else ""
        return f"{'nntps' if self.tls else 'nntp'}://{self.endpoint_host}{port}/{','.join(self.groups)}"

    @property
    def endpoint_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def endpoint(self) -> str:
        return f"{self.endpoint_host}:{self.port}"


def parse_news_url(value: str) -> NewsServer:
    """nntp://HOST[:PORT]/GROUP[,GROUP...] (nntps:// for TLS); raises ValueError saying what is wrong."""
    url = urlsplit(value)
    if url.scheme not in ("nntp", "nntps") or not url.hostname:
        raise ValueError("nntp://HOST:PORT/GROUP[,GROUP...] (for example nntp://127.0.0.1:119/comp.lang.misc)")
    if url.username or url.password:
        raise ValueError("no user name or password in the URL: use nntp_username and nntp_password_file")
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"the port in {value!r} is not a number from 1 to 65535") from None
    groups = tuple(g.strip() for g in url.path.lstrip("/").split(",") if g.strip())
    if not groups:
        raise ValueError(f"{value!r} names no newsgroup: add it after the host, as in "
                         "nntp://news.example.org:119/comp.lang.misc")
    bad = [g for g in groups if not _NEWSGROUP.match(g)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))} is not a newsgroup name (RFC 5536: parts of "
                         "letters, digits, '+', '-' and '_' joined by dots, such as comp.lang.misc)")
    tls = url.scheme == "nntps"
    return NewsServer(url.hostname, port or (563 if tls else 119), groups, tls, port is not None)


@dataclass(frozen=True)
class ImapConfig:
    host: str = "127.0.0.1"
    port: int = 143
    username: str = ""
    password_file: Path | None = None
    ssl: bool = False
    digest_folder: str = "Moderation"
    replies_folder: str = "INBOX"
    processed_folder: str = "Processed"
    failed_folder: str = "Failed"     # replies that could not be applied, with the reason logged
    poll_every: float = 30.0          # when the server has no IDLE, or IDLE drops

    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip() if self.password_file else ""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    outbound: OutboundConfig | None = None
    lists: tuple[ListConfig, ...] = ()
    imap: ImapConfig | None = None
    path: Path | None = None  # None: the embedded defaults

    def list_for(self, address: str) -> ListConfig | None:
        wanted = address.strip().lower()
        for mlist in self.lists:
            if mlist.address == wanted:
                return mlist
        return None

    @property
    def database_path(self) -> Path:
        return self.server.state_dir / "listmod.sqlite3"

    @property
    def digest_maildir_path(self) -> Path:
        """Where digests go when there is no [imap] section."""
        return self.server.state_dir / "moderation-maildir"

    @property
    def maildir_path(self) -> Path:
        """Where the list's outgoing mail goes when there is no [outbound] smarthost."""
        return self.server.state_dir / "outbound-maildir"


def embedded_defaults(base: Path | None = None) -> Config:
    """What `listmod serve` runs with when there is no config file: one example list on loopback."""
    base = base or Path.cwd()
    return Config(
        server=ServerConfig(state_dir=base / "var", rules_dir=base / "rules"),
        outbound=None,
        lists=(
            ListConfig(
                address="test@listmod.localhost",
                moderators=("moderator@listmod.localhost",),
                owner="owner@listmod.localhost",
            ),
        ),
        path=None,
    )


DEMO_MEMBERS = ("alice@example.org", "bob@example.org")


def find_config(explicit: str | None) -> Path | None:
    """--config, else ./listmod.toml, else $LISTMOD_CONFIG; None means the embedded defaults."""
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise ConfigError([f"{path}: no such config file (given with --config)"])
        return path
    if Path("listmod.toml").exists():
        return Path("listmod.toml")
    env = os.environ.get("LISTMOD_CONFIG")
    if env:
        path = Path(env)
        if not path.exists():
            raise ConfigError([f"{path}: no such config file (named by $LISTMOD_CONFIG)"])
        return path
    return None


def load_config(explicit: str | None = None) -> Config:
    path = find_config(explicit)
    return embedded_defaults() if path is None else read_config(path)


class _Reader:
    """Collects every problem in the file instead of stopping at the first one."""

    def __init__(self, locator: Locator):
        self.locator = locator
        self.problems: list[str] = []

    def problem(self, table: str, index: int, key: tuple[str, ...], text: str) -> None:
        self.problems.append(f"{self.locator.where(table, index, key)}: {text}")

    def check_keys(self, table: str, index: int, data: dict[str, Any], known: tuple[str, ...],
                   label: str) -> None:
        for key in data:
            if key not in known:
                self.problem(table, index, (key,),
                             f"'{key}' is not a key of {label}{did_you_mean(key, known)}; "
                             f"expected one of: {', '.join(known)}")

    def get(self, table: str, index: int, data: dict[str, Any], key: str, default: Any,
            convert: Callable[[Any], Any], expected: str) -> Any:
        if key not in data:
            return default
        try:
            return convert(data[key])
        except (ValueError, TypeError) as err:
            detail = str(err) if isinstance(err, ValueError) and str(err) else ""
            if detail and detail != expected:
                text = f"{label_of(table)}.{key}: {detail}; expected {expected}"
            else:
                text = f"{label_of(table)}.{key} = {data[key]!r} is not valid; expected {expected}"
            self.problem(table, index, (key,), text)
            return default


def label_of(table: str) -> str:
    return f"[{table}]" if table != "list" else "[[list]]"



def _endpoint(value: Any) -> Endpoint | None:
    if value in ("", None, False):
        return None
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("write it as HOST:PORT")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("write it as HOST:PORT with a port from 1 to 65535")
    return Endpoint(host, int(port))


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise TypeError
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError
    return value


def _networks(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError
    for v in value:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address or network") from None
    return tuple(value)


def normalize_address(value: Any) -> str:
    """A bare mail address, checked and lower-cased; raises ValueError saying what is wrong."""
    if not isinstance(value, str):
        raise TypeError
    return checked(value)


def _addresses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError
    return tuple(normalize_address(v) for v in value)


def _deliver(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    if value == "members":
        return value
    if value.startswith("relay:"):
        return "relay:" + normalize_address(value[len("relay:"):])
    if value.startswith(("nntp:", "nntps:")):
        return str(parse_news_url(value))
    raise ValueError(DELIVER_HINT)


DELIVER_HINT = '"members", "relay:ADDRESS" or "nntp://HOST:PORT/GROUP[,GROUP...]"'


def _action(value: Any) -> str:
    if value not in ACTIONS_FOR_DEFAULTS:
        raise ValueError(" | ".join(f'"{a}"' for a in ACTIONS_FOR_DEFAULTS))
    return value


SERVER_KEYS = ("smtp", "lmtp", "hostname", "max_message_size", "state_dir", "rules_dir",
               "commit_timeout", "authserv_id", "spam_score_header", "reload_every",
               "max_header_size", "max_header_count", "max_mime_depth", "max_mime_parts",
               "judge_budget", "max_concurrent_data", "max_connections_per_ip", "trusted_relays",
               "max_commands_per_reply", "held_notices_per_hour")
OUTBOUND_KEYS = ("host", "port", "starttls", "username", "password_file", "connections",
                 "batch_recipients", "retry_after", "retry_max", "give_up_after", "refused_retry_for",
                 "timeout")
LIST_KEYS = ("address", "moderators", "owner", "default_member_action",
             "default_nonmember_action", "deliver", "escalation_contact", "digest_every",
             "digest_max_items", "remind_after", "expire_after", "expire_action", "notify_held",
             "require_dkim", "nntp_username", "nntp_password_file", "approved_by", "nntps",
             "allow_control", "digest_max_size")
IMAP_KEYS = ("host", "port", "username", "password_file", "ssl", "digest_folder", "replies_folder",
             "processed_folder", "failed_folder", "poll_every")
TOP_KEYS = ("server", "outbound", "imap", "list")


def _check_password_file(r: _Reader, table: str, i: int, key: str, path: Path | None, whose: str) -> None:
    if path is not None and not path.exists():
        r.problem(table, i, (key,), f"{key} {str(path)!r} does not exist; create it with the {whose} "
                  "password on one line")


def _check_news(r: _Reader, i: int, item: dict, mlist: ListConfig) -> None:
    """The nntp_* keys belong to a list that moderates newsgroups; a password file must exist."""
    if mlist.news_server is None:
        for key in ("nntp_username", "nntp_password_file", "approved_by", "nntps", "allow_control"):
            if key in item:
                r.problem("list", i, (key,), f"{key} applies only to a list whose deliver is "
                          "\"nntp://HOST:PORT/GROUP\"; remove it or set deliver")
        return
    _check_password_file(r, "list", i, "nntp_password_file", mlist.nntp_password_file, "news server")
    if mlist.nntp_password_file is not None and not mlist.nntp_username:
        r.problem("list", i, ("nntp_password_file",), "nntp_password_file is set but nntp_username is not; "
                  "add nntp_username = \"...\"")


def read_config(path: Path) -> Config:
    """Load and check listmod.toml; raises ConfigError listing every problem with file:line."""
    data, locator = load(path)
    mode = path.stat().st_mode
    if mode & 0o002:
        raise ConfigError([f"{path}: writable by every user (mode {mode & 0o777:o}), so anyone on this "
                           f"machine could change the lists and their moderators: chmod o-w {path}"])
    base = path.resolve().parent
    r = _Reader(locator)
    r.check_keys("", 0, data, TOP_KEYS, "listmod.toml")

    s = data.get("server", {})
    if not isinstance(s, dict):
        r.problem("", 0, ("server",), "[server] must be a table")
        s = {}
    r.check_keys("server", 0, s, SERVER_KEYS, "[server]")
    d = ServerConfig()

    def rel(p: Any) -> Path:
        return (base / _string(p)).resolve()

    server = ServerConfig(
        smtp=r.get("server", 0, s, "smtp", d.smtp, _endpoint, '"HOST:PORT" such as "127.0.0.1:8025", or "" for none'),
        lmtp=r.get("server", 0, s, "lmtp", d.lmtp, _endpoint, '"HOST:PORT" such as "127.0.0.1:8024", or "" for none'),
        hostname=r.get("server", 0, s, "hostname", d.hostname, _string, "a host name"),
        max_message_size=r.get("server", 0, s, "max_message_size", d.max_message_size, parse_size, "a size such as 10MB"),
        state_dir=r.get("server", 0, s, "state_dir", base / "var", rel, "a directory path"),
        rules_dir=r.get("server", 0, s, "rules_dir", base / "rules", rel, "a directory path"),
        commit_timeout=r.get("server", 0, s, "commit_timeout", d.commit_timeout, parse_duration, "a duration such as 5s"),
        authserv_id=r.get("server", 0, s, "authserv_id", "", _string, "the host name your MTA writes in Authentication-Results"),
        spam_score_header=r.get("server", 0, s, "spam_score_header", "", _string, 'a header name such as "X-Spam-Score"'),
        reload_every=r.get("server", 0, s, "reload_every", d.reload_every, parse_duration, "a duration such as 1s"),
        max_header_size=r.get("server", 0, s, "max_header_size", d.max_header_size, parse_size, "a size such as 256KB"),
        max_header_count=r.get("server", 0, s, "max_header_count", d.max_header_count, _positive_int, "a whole number >= 1"),
        max_mime_depth=r.get("server", 0, s, "max_mime_depth", d.max_mime_depth, _positive_int, "a whole number >= 1"),
        max_mime_parts=r.get("server", 0, s, "max_mime_parts", d.max_mime_parts, _positive_int, "a whole number >= 1"),
        judge_budget=r.get("server", 0, s, "judge_budget", d.judge_budget, parse_duration, "a duration such as 2s"),
        max_concurrent_data=r.get("server", 0, s, "max_concurrent_data", d.max_concurrent_data, _positive_int, "a whole number >= 1"),
        max_connections_per_ip=r.get("server", 0, s, "max_connections_per_ip", d.max_connections_per_ip, _positive_int, "a whole number >= 1"),
        trusted_relays=r.get("server", 0, s, "trusted_relays", d.trusted_relays, _networks, 'a list of addresses or networks such as ["127.0.0.0/8", "::1"]'),
        max_commands_per_reply=r.get("server", 0, s, "max_commands_per_reply", d.max_commands_per_reply, _positive_int, "a whole number >= 1"),
        held_notices_per_hour=r.get("server", 0, s, "held_notices_per_hour", d.held_notices_per_hour, _positive_int, "a whole number >= 1"),
    )
    if server.smtp is None and server.lmtp is None and "server" in data:
        r.problem("server", 0, ("smtp",), "neither smtp nor lmtp is set; listmod would receive no mail")

    outbound = None
    if "outbound" in data:
        o = data["outbound"]
        if not isinstance(o, dict):
            r.problem("", 0, ("outbound",), "[outbound] must be a table")
            o = {}
        r.check_keys("outbound", 0, o, OUTBOUND_KEYS, "[outbound]")
        od = OutboundConfig()
        outbound = OutboundConfig(
            host=r.get("outbound", 0, o, "host", od.host, _string, "a host name or address"),
            port=r.get("outbound", 0, o, "port", od.port, _port, "a port number from 1 to 65535"),
            starttls=r.get("outbound", 0, o, "starttls", od.starttls, _bool, "true or false"),
            username=r.get("outbound", 0, o, "username", None, _string, "a user name"),
            password_file=r.get("outbound", 0, o, "password_file", None, rel, "a file path"),
            connections=r.get("outbound", 0, o, "connections", od.connections, _positive_int, "a whole number >= 1"),
            batch_recipients=r.get("outbound", 0, o, "batch_recipients", od.batch_recipients, _positive_int, "a whole number >= 1"),
            retry_after=r.get("outbound", 0, o, "retry_after", od.retry_after, parse_duration, "a duration such as 1m"),
            retry_max=r.get("outbound", 0, o, "retry_max", od.retry_max, parse_duration, "a duration such as 1h"),
            give_up_after=r.get("outbound", 0, o, "give_up_after", od.give_up_after, parse_duration, "a duration such as 5d"),
            refused_retry_for=r.get("outbound", 0, o, "refused_retry_for", od.refused_retry_for, parse_duration, "a duration such as 1h"),
            timeout=r.get("outbound", 0, o, "timeout", od.timeout, parse_duration, "a duration such as 60s"),
        )
        _check_password_file(r, "outbound", 0, "password_file", outbound.password_file, "smarthost")

    imap = None
    if "imap" in data:
        m = data["imap"] if isinstance(data["imap"], dict) else {}
        r.check_keys("imap", 0, m, IMAP_KEYS, "[imap]")
        md = ImapConfig()
        imap = ImapConfig(
            host=r.get("imap", 0, m, "host", md.host, _string, "a host name or address"),
            port=r.get("imap", 0, m, "port", md.port, _port, "a port number from 1 to 65535"),
            username=r.get("imap", 0, m, "username", "", _string, "the IMAP login"),
            password_file=r.get("imap", 0, m, "password_file", None, rel, "a file path"),
            ssl=r.get("imap", 0, m, "ssl", md.ssl, _bool, "true or false"),
            digest_folder=r.get("imap", 0, m, "digest_folder", md.digest_folder, _string, "a folder name"),
            replies_folder=r.get("imap", 0, m, "replies_folder", md.replies_folder, _string, "a folder name"),
            processed_folder=r.get("imap", 0, m, "processed_folder", md.processed_folder, _string, "a folder name"),
            failed_folder=r.get("imap", 0, m, "failed_folder", md.failed_folder, _string, "a folder name"),
            poll_every=r.get("imap", 0, m, "poll_every", md.poll_every, parse_duration, "a duration such as 30s"),
        )
        if not imap.username:
            r.problem("imap", 0, (), "[imap] needs username = \"...\" (the mailbox the moderators read)")
        _check_password_file(r, "imap", 0, "password_file", imap.password_file, "IMAP")

    lists: list[ListConfig] = []
    raw_lists = data.get("list", [])
    if not isinstance(raw_lists, list):
        r.problem("", 0, ("list",), "lists are written as [[list]] tables")
        raw_lists = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw_lists):
        r.check_keys("list", i, item, LIST_KEYS, "[[list]]")
        if "address" not in item:
            r.problem("list", i, (), "[[list]] has no address; add address = \"name@example.org\"")
            continue
        address = r.get("list", i, item, "address", None, normalize_address, "a mail address")
        if address is None:
            continue
        if address in seen:
            r.problem("list", i, ("address",), f"list {address} is configured twice "
                      f"(first at line {locator.line('list', seen[address], ('address',))})")
        seen[address] = i
        ld = ListConfig(address=address)
        lists.append(ListConfig(
            address=address,
            moderators=r.get("list", i, item, "moderators", (), _addresses, "a list of mail addresses"),
            owner=r.get("list", i, item, "owner", "", normalize_address, "a mail address"),
            default_member_action=r.get("list", i, item, "default_member_action", ld.default_member_action, _action, '"accept", "hold", "reject" or "discard"'),
            default_nonmember_action=r.get("list", i, item, "default_nonmember_action", ld.default_nonmember_action, _action, '"accept", "hold", "reject" or "discard"'),
            deliver=r.get("list", i, item, "deliver", ld.deliver, _deliver, DELIVER_HINT),
            escalation_contact=r.get("list", i, item, "escalation_contact", "", normalize_address, "a mail address"),
            digest_every=r.get("list", i, item, "digest_every", ld.digest_every, parse_duration, "a duration such as 1h"),
            digest_max_items=r.get("list", i, item, "digest_max_items", ld.digest_max_items, _positive_int, "a whole number >= 1"),
            remind_after=r.get("list", i, item, "remind_after", ld.remind_after, parse_duration, "a duration such as 1d"),
            expire_after=r.get("list", i, item, "expire_after", ld.expire_after, parse_duration, "a duration such as 7d"),
            expire_action=r.get("list", i, item, "expire_action", ld.expire_action, _action, '"accept", "hold", "reject" or "discard"'),
            notify_held=r.get("list", i, item, "notify_held", ld.notify_held, _bool, "true or false"),
            require_dkim=r.get("list", i, item, "require_dkim", ld.require_dkim, _bool, "true or false"),
            nntp_username=r.get("list", i, item, "nntp_username", "", _string, "the news server login"),
            nntp_password_file=r.get("list", i, item, "nntp_password_file", None, rel, "a file path"),
            approved_by=r.get("list", i, item, "approved_by", "", normalize_address, "a mail address"),
            nntps=r.get("list", i, item, "nntps", False, _bool, "true or false"),
            allow_control=r.get("list", i, item, "allow_control", False, _bool, "true or false"),
            digest_max_size=r.get("list", i, item, "digest_max_size", ld.digest_max_size, parse_size, "a size such as 5MB"),
        ))
        _check_news(r, i, item, lists[-1])
    if not lists and not r.problems:
        r.problem("", 0, (), "no [[list]] is configured; add one with at least address = \"name@example.org\"")
    if r.problems:
        raise ConfigError(r.problems)
    return Config(server=server, outbound=outbound, lists=tuple(lists), imap=imap, path=path)
