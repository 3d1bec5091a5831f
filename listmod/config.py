"""listmod.toml: loading and validating the daemon's configuration into frozen dataclasses."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .addresses import checked
from .tomlfile import ConfigError, Locator, did_you_mean, load, parse_duration, parse_size

ACTIONS_FOR_DEFAULTS = ("accept", "hold", "reject", "discard")


@dataclass(frozen=True)
class Key:
    """How one config key is read: its parser, and the hint an error shows. A field declared with
    key() is a key of its table; its default is the field's default (a path is taken relative to
    the config file's directory)."""

    parse: Callable[[Any], Any]
    hint: str
    path: bool = False


def key(default: Any, parse: Callable[[Any], Any], hint: str) -> Any:
    return field(default=default, metadata={"key": Key(parse, hint)})


def path_key(default: Path | None, hint: str) -> Any:
    return field(default=default, metadata={"key": Key(_string, hint, path=True)})


def keys_of(cls: type) -> tuple[str, ...]:
    """The keys of a config table, in declaration order."""
    return tuple(f.name for f in fields(cls) if "key" in f.metadata)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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


def _endpoints(value: Any) -> tuple[Endpoint, ...]:
    if not isinstance(value, list):
        raise TypeError
    return tuple(e for e in (_endpoint(v) for v in value) if e is not None)


def _archives(value: Any) -> tuple[str, ...]:
    """Where accepted posts are also sent: mail addresses, or "maildir:/absolute/path"."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError
    out = []
    for v in value:
        if v.startswith("maildir:"):
            if not Path(v[len("maildir:"):]).is_absolute():
                raise ValueError(f"{v!r}: write a Maildir as maildir:/absolute/path")
            out.append(v)
        else:
            out.append(normalize_address(v))
    return tuple(out)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError
    return value


_REASON_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def _reasons(value: Any) -> tuple[tuple[str, str], ...]:
    """Canned reasons: name -> text (the text may say {list})."""
    if not isinstance(value, dict):
        raise TypeError
    out = []
    for name, text in value.items():
        if not _REASON_NAME.match(name):
            raise ValueError(f"{name!r} is not a reason name; use lower-case letters, digits, - and _ "
                             "(as moderators type it after #)")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the reason {name!r} needs a text, e.g. {name} = \"Off topic for {{list}}.\"")
        out.append((name, text.strip()))
    return tuple(out)


@dataclass(frozen=True)
class Scheduled:
    """A post listmod makes on a schedule: the file's text, under the subject, every so often."""

    every: float
    file: Path
    subject: str

    @property
    def name(self) -> str:
        return f"{self.file.name}:{self.subject}"


def _scheduled(value: Any) -> tuple[Scheduled, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError
    out = []
    for n, item in enumerate(value, start=1):
        unknown = sorted(set(item) - {"every", "file", "subject"})
        if unknown:
            raise ValueError(f"scheduled entry {n}: '{unknown[0]}' is not a key; expected every, file and subject")
        if not {"every", "file", "subject"} <= set(item):
            raise ValueError(f"scheduled entry {n} needs every, file and subject, e.g. every = \"30d\", "
                             "file = \"guidelines.txt\", subject = \"Our guidelines\"")
        every = parse_duration(item["every"])
        if every < 1:
            raise ValueError(f"scheduled entry {n}: every must be at least 1s")
        if not isinstance(item["file"], str) or not isinstance(item["subject"], str) or not item["subject"].strip():
            raise ValueError(f"scheduled entry {n}: file and subject are text")
        out.append(Scheduled(every, Path(item["file"]), item["subject"].strip()))
    return tuple(out)


def _url_template(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    if value and "{message_id}" not in value:
        raise ValueError("the URL must contain {message_id}, e.g. \"https://lists.example.org/dev/{message_id}/\"")
    try:
        value.format(message_id="x")
    except (KeyError, IndexError, ValueError):
        raise ValueError("the only placeholder is {message_id}") from None
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


def _log_format(value: Any) -> str:
    if value not in ("logfmt", "json"):
        raise ValueError('"logfmt" or "json"')
    return value


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(" or ".join(f'"{c}"' for c in choices))
        return value
    return parse


def _notify_held(value: Any) -> str:
    if value is True:    # as before 0.2: true told every held poster
        return "all"
    if value is False:
        return "none"
    if value not in ("verified", "all", "none"):
        raise ValueError('"verified", "all" or "none"')
    return value


def _action(value: Any) -> str:
    if value not in ACTIONS_FOR_DEFAULTS:
        raise ValueError(" | ".join(f'"{a}"' for a in ACTIONS_FOR_DEFAULTS))
    return value



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
class ServerConfig:
    smtp: Endpoint | None = key(Endpoint("127.0.0.1", 8025), _endpoint, '"HOST:PORT" such as "127.0.0.1:8025", or "" for none')
    lmtp: Endpoint | None = key(None, _endpoint, '"HOST:PORT" such as "127.0.0.1:8024", or "" for none')
    hostname: str = key("localhost", _string, "a host name")
    max_message_size: int = key(10 * 1024 * 1024, parse_size, "a size such as 10MB")
    state_dir: Path = path_key(Path("var"), "a directory path")
    rules_dir: Path = path_key(Path("rules"), "a directory path")
    commit_timeout: float = key(5.0, parse_duration, "a duration such as 5s")
    # whose Authentication-Results the auth.* fields trust
    authserv_id: str = key("", _string, "the host name your MTA writes in Authentication-Results")
    spam_score_header: str = key("", _string, 'a header name such as "X-Spam-Score"')  # written by the MTA's filter
    reload_every: float = key(1.0, parse_duration, "a duration such as 1s")  # how often rules_dir is checked
    # limits that keep one message or one client from stopping the work for others
    max_header_size: int = key(256 * 1024, parse_size, "a size such as 256KB")       # larger: 552 5.3.4
    max_header_count: int = key(1000, _positive_int, "a whole number >= 1")         # more: 552 5.3.4
    max_mime_depth: int = key(20, _positive_int, "a whole number >= 1")             # deeper: 554 5.6.0
    max_mime_parts: int = key(500, _positive_int, "a whole number >= 1")            # more: 554 5.6.0
    judge_budget: float = key(2.0, parse_duration, "a duration such as 2s")         # then held
    max_concurrent_data: int = key(16, _positive_int, "a whole number >= 1")        # more wait, then 451
    max_connections_per_ip: int = key(20, _positive_int, "a whole number >= 1")     # more: 421
    trusted_relays: tuple[str, ...] = key(("127.0.0.0/8", "::1"), _networks,
                                          'a list of addresses or networks such as ["127.0.0.0/8", "::1"]')
    max_commands_per_reply: int = key(20, _positive_int, "a whole number >= 1")
    held_notices_per_hour: int = key(3, _positive_int, "a whole number >= 1")
    requests_per_ip_per_hour: int = key(20, _positive_int, "a whole number >= 1")  # to LIST-request@ etc.; then 450
    # STARTTLS on intake with this certificate chain and key (PEM); reloaded on SIGHUP
    tls_cert: Path | None = path_key(None, "a PEM certificate chain file")
    tls_key: Path | None = path_key(None, "a PEM private key file")
    # Prometheus metrics over HTTP at /metrics (keep it on loopback or behind your scraper's network)
    metrics: Endpoint | None = key(None, _endpoint, '"HOST:PORT" such as "127.0.0.1:9105", or "" for none')
    # the operator's log: logfmt or JSON lines on stderr; people by pseudonym unless log_addresses
    log_format: str = key("logfmt", _log_format, '"logfmt" or "json"')
    log_addresses: bool = key(False, _bool, "true or false")
    # a post a rule rejects, received over LMTP: "reply" answers 550 (the MTA then bounces it to the
    # envelope sender); "notice" answers 250 and listmod mails the poster its own notice, at most
    # held_notices_per_hour per address (behind Postfix after-queue: see docs/postfix.md)
    lmtp_rejects: str = key("reply", _one_of("reply", "notice"), '"reply" or "notice"')
    # the HTTP listener for one-click unsubscribe and confirmation links (RFC 8058), meant to sit
    # behind a reverse proxy that serves it at base_url (e.g. "https://lists.example.org/listmod")
    http: Endpoint | None = key(None, _endpoint, '"HOST:PORT" such as "127.0.0.1:8080", or "" for none')
    base_url: str = key("", _string, 'the public URL of the HTTP listener, such as "https://lists.example.org"')
    # DNS servers for DMARC lookups, as "HOST:PORT"; none: the system's (/etc/resolv.conf)
    nameservers: tuple[Endpoint, ...] = key((), _endpoints, 'a list of "HOST:PORT" such as ["127.0.0.1:53"]')


@dataclass(frozen=True)
class OutboundConfig:
    host: str = key("127.0.0.1", _string, "a host name or address")
    port: int = key(25, _port, "a port number from 1 to 65535")
    starttls: bool = key(False, _bool, "true or false")
    username: str | None = key(None, _string, "a user name")
    password_file: Path | None = path_key(None, "a file path")
    connections: int = key(8, _positive_int, "a whole number >= 1")
    batch_recipients: int = key(50, _positive_int, "a whole number >= 1")
    retry_after: float = key(60.0, parse_duration, "a duration such as 1m")
    retry_max: float = key(3600.0, parse_duration, "a duration such as 1h")
    give_up_after: float = key(5 * 86400.0, parse_duration, "a duration such as 5d")
    # a 5xx for the whole transaction is retried this long
    refused_retry_for: float = key(3600.0, parse_duration, "a duration such as 1h")
    timeout: float = key(60.0, parse_duration, "a duration such as 60s")
    # STARTTLS is used when configured or offered; the certificate is verified (against the system's
    # CAs, or tls_ca_file) unless tls_verify = false
    tls_verify: bool = key(True, _bool, "true or false")
    tls_ca_file: Path | None = path_key(None, "a PEM file of CA certificates")

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        return self.password_file.read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class ListConfig:
    address: str = field(metadata={"key": Key(normalize_address, "a mail address")})
    moderators: tuple[str, ...] = key((), _addresses, "a list of mail addresses")
    owner: str = key("", normalize_address, "a mail address")
    default_member_action: str = key("accept", _action, '"accept", "hold", "reject" or "discard"')
    default_nonmember_action: str = key("hold", _action, '"accept", "hold", "reject" or "discard"')
    deliver: str = key("members", _deliver, DELIVER_HINT)
    escalation_contact: str = key("", normalize_address, "a mail address")
    digest_every: float = key(3600.0, parse_duration, "a duration such as 1h")    # held posts to the moderators
    digest_max_items: int = key(50, _positive_int, "a whole number >= 1")        # then a digest goes out at once
    remind_after: float = key(86400.0, parse_duration, "a duration such as 1d")   # flagged in the digest
    expire_after: float = key(7 * 86400.0, parse_duration, "a duration such as 7d")  # then expire_action
    expire_action: str = key("reject", _action, '"accept", "hold", "reject" or "discard"')
    # tell a held poster once (with a withdraw token), and what became of the post: "verified" (members
    # and senders whose domain trusted Authentication-Results vouches for), "all", or "none"
    notify_held: str = key("verified", _notify_held, '"verified", "all" or "none"')
    require_dkim: bool = key(False, _bool, "true or false")    # moderator replies must show dkim=pass
    nntp_username: str = key("", _string, "the news server login")  # AUTHINFO USER, when the server asks
    nntp_password_file: Path | None = path_key(None, "a file path")
    approved_by: str = key("", normalize_address, "a mail address")  # the Approved: value; else the list
    nntps: bool = key(False, _bool, "true or false")           # NNTP over TLS (RFC 4642), port 563 by default
    allow_control: bool = key(False, _bool, "true or false")   # approved articles may keep Control/Supersedes
    # NNTP: STARTTLS whenever the server offers it (or nntps); the certificate verified unless false
    nntp_tls_verify: bool = key(True, _bool, "true or false")
    nntp_tls_ca_file: Path | None = path_key(None, "a PEM file of CA certificates")
    digest_max_size: int = key(5 * 1024 * 1024, parse_size, "a size such as 5MB")  # the rest wait
    # when the From domain publishes DMARC p=reject or p=quarantine: "munge" the From to the list's
    # address, or "wrap" the post in a message from the list; the poster's address goes to Reply-To
    # the raw message of a decided post is blanked this long after the decision (0: kept); escalated
    # posts under a legal hold are kept until the owner releases them (`listmod privacy release`)
    retain_messages: float = key(0.0, parse_duration, 'a duration such as 90d, or 0 to keep them')
    # trust levels (docs/people.md): basic after this many approved posts; trusted after this many over
    # promote_trusted_days, with no rejection under a conduct rule within conduct_window
    # leaders (given by hand) get the digest and may decide posts by new and basic members
    leaders_moderate: bool = key(False, _bool, "true or false")
    promote_basic_after: int = key(3, _positive_int, "a whole number >= 1")
    promote_trusted_after: int = key(20, _positive_int, "a whole number >= 1")
    promote_trusted_days: float = key(30 * 86400.0, parse_duration, "a duration such as 30d")
    conduct_window: float = key(90 * 86400.0, parse_duration, "a duration such as 90d")
    # bounces: a member whose mail fails permanently on this many days (one point per
    # bounce_score_every; the score starts again after bounce_reset_after without failures) is
    # disabled until they confirm
    bounce_threshold: int = key(5, _positive_int, "a whole number >= 1")
    bounce_reset_after: float = key(7 * 86400.0, parse_duration, "a duration such as 7d")
    bounce_score_every: float = key(86400.0, parse_duration, "a duration such as 1d")   # at most one point per
    # one copy per member: a VERP envelope (LIST-bounces+alice=example.org@) that names the member in
    # bounces, and (with [server] http and base_url) an RFC 8058 one-click List-Unsubscribe URL
    personalize: bool = key(False, _bool, "true or false")
    # how often members who chose `digest` get theirs (the posts accepted since the last one)
    member_digest_every: float = key(86400.0, parse_duration, "a duration such as 1d")
    # whether members get a copy of their own posts, unless they chose (`options metoo on|off`)
    metoo: bool = key(False, _bool, "true or false")
    # joining and leaving by mail (LIST-request@, -join@, -leave@): confirmed by a reply within this
    confirm_within: float = key(2 * 86400.0, parse_duration, "a duration such as 2d")
    # who may join: "confirm" (the address confirms), "open" (at once), "moderate" (the address
    # confirms, then a moderator approves the request in the digest, like a held post)
    subscribe_policy: str = key("confirm", _one_of("confirm", "open", "moderate"), '"confirm", "open" or "moderate"')
    guidelines: Path | None = path_key(None, "a text file")   # sent in the welcome to each new member
    templates: Path | None = path_key(None, "a directory of notice templates")   # the list's own wording
    dmarc_mitigation: str = key("none", _one_of("none", "munge", "wrap"), '"none", "munge" or "wrap"')
    dkim_selector: str = key("", _string, 'a DKIM selector such as "list2026"')  # sign copies as d=<list domain>
    dkim_key: Path | None = path_key(None, "a PEM private key file")
    archive: tuple[str, ...] = key((), _archives, 'a list of mail addresses or "maildir:/absolute/path"')
    archive_url: str = key("", _string, "the archive's URL")                   # List-Archive
    archived_at: str = key("", _url_template, 'a URL with {message_id}')       # Archived-At of each post
    # mediation (docs/community.md): a thread with this many posts in an hour, or this many posts
    # flagged under a conduct rule in an hour, cools down for `cooldown`: new posts in it are held,
    # its participants get one mediation notice (the `mediation_notice` file, else a built-in text)
    cool_posts_per_hour: int = key(25, _count, "a whole number >= 0 (0: never)")
    cool_conduct_matches: int = key(3, _count, "a whole number >= 0 (0: never)")
    cooldown: float = key(6 * 3600.0, parse_duration, "a duration such as 6h")
    mediation_notice: Path | None = path_key(None, "a text file")
    # canned reasons a moderator names with #: `reject K7Q2-TOKEN #offtopic`
    reasons: tuple[tuple[str, str], ...] = key((), _reasons, 'a table such as { offtopic = "Off topic for {list}." }')
    # a post a moderator claimed (`claim ID`) is theirs to decide for this long
    claim_for: float = key(2 * 3600.0, parse_duration, "a duration such as 2h")
    # the first digest of each week carries a short health summary of the list
    health_summary: bool = key(True, _bool, "true or false")
    # posts listmod makes on a schedule: [[list.scheduled]] every = "30d", file = "...", subject = "..."
    scheduled: tuple[Scheduled, ...] = key((), _scheduled, 'a list of tables with every, file and subject')

    def reason_named(self, name: str) -> str | None:
        """A canned reason by its name (`#offtopic`), with {list} filled in; None when unknown."""
        text = dict(self.reasons).get(name.lower())
        return text.replace("{list}", self.address) if text is not None else None

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
    def join_address(self) -> str:
        return f"{self.local_part}-join@{self.domain}"

    @property
    def leave_address(self) -> str:
        return f"{self.local_part}-leave@{self.domain}"

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


@dataclass(frozen=True)
class ImapConfig:
    host: str = key("127.0.0.1", _string, "a host name or address")
    port: int = key(143, _port, "a port number from 1 to 65535")
    username: str = key("", _string, "the IMAP login")
    password_file: Path | None = path_key(None, "a file path")
    ssl: bool = key(False, _bool, "true or false")
    digest_folder: str = key("Moderation", _string, "a folder name")
    replies_folder: str = key("INBOX", _string, "a folder name")
    processed_folder: str = key("Processed", _string, "a folder name")
    failed_folder: str = key("Failed", _string, "a folder name")   # replies that could not be applied
    poll_every: float = key(30.0, parse_duration, "a duration such as 30s")  # without IDLE, or when it drops
    # without ssl, STARTTLS is used whenever the server offers it; the certificate is verified
    # (system CAs, or tls_ca_file) unless tls_verify = false; no clear-text login off loopback
    tls_verify: bool = key(True, _bool, "true or false")
    tls_ca_file: Path | None = path_key(None, "a PEM file of CA certificates")

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



SERVER_KEYS = keys_of(ServerConfig)
OUTBOUND_KEYS = keys_of(OutboundConfig)
LIST_KEYS = keys_of(ListConfig)
IMAP_KEYS = keys_of(ImapConfig)
TOP_KEYS = ("server", "outbound", "imap", "list")


def read_table(r: _Reader, table: str, index: int, data: dict[str, Any], cls: type, base: Path, **given: Any) -> Any:
    """One config table into its dataclass: every key() field read with its parser and hint (its
    default when absent), paths taken relative to the config file; `given` fields are set as they are."""
    values = dict(given)
    for f in fields(cls):
        spec = f.metadata.get("key")
        if spec is None or f.name in values:
            continue
        if spec.path:
            default = f.default if not isinstance(f.default, Path) else (base / f.default).resolve()
            values[f.name] = r.get(table, index, data, f.name, default,
                                   lambda v: (base / _string(v)).resolve(), spec.hint)
        else:
            values[f.name] = r.get(table, index, data, f.name, f.default, spec.parse, spec.hint)
    return cls(**values)


def _check_dkim(r: _Reader, i: int, mlist: ListConfig) -> None:
    if bool(mlist.dkim_selector) != (mlist.dkim_key is not None):
        r.problem("list", i, ("dkim_selector" if not mlist.dkim_selector else "dkim_key",),
                  "dkim_selector and dkim_key go together: give both to sign the list's copies, or neither")
    elif mlist.dkim_key is not None:
        try:
            pem = mlist.dkim_key.read_bytes()
        except OSError as err:
            r.problem("list", i, ("dkim_key",), f"dkim_key {str(mlist.dkim_key)!r} cannot be read: {err.strerror}")
        else:
            if b"PRIVATE KEY-----" not in pem:
                r.problem("list", i, ("dkim_key",), f"dkim_key {str(mlist.dkim_key)!r} is not a PEM private key "
                          "(make one with: openssl genrsa -out dkim.key 2048)")


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
    server = read_table(r, "server", 0, s, ServerConfig, base)
    if (server.tls_cert is None) != (server.tls_key is None):
        r.problem("server", 0, ("tls_cert" if server.tls_cert is None else "tls_key",),
                  "tls_cert and tls_key go together: give both for STARTTLS, or neither")
    for name in ("tls_cert", "tls_key"):
        pem = getattr(server, name)
        if pem is not None and not pem.exists():
            r.problem("server", 0, (name,), f"{name} {str(pem)!r} does not exist")
    if server.smtp is None and server.lmtp is None and "server" in data:
        r.problem("server", 0, ("smtp",), "neither smtp nor lmtp is set; listmod would receive no mail")

    outbound = None
    if "outbound" in data:
        o = data["outbound"]
        if not isinstance(o, dict):
            r.problem("", 0, ("outbound",), "[outbound] must be a table")
            o = {}
        r.check_keys("outbound", 0, o, OUTBOUND_KEYS, "[outbound]")
        outbound = read_table(r, "outbound", 0, o, OutboundConfig, base)
        _check_password_file(r, "outbound", 0, "password_file", outbound.password_file, "smarthost")

    imap = None
    if "imap" in data:
        m = data["imap"] if isinstance(data["imap"], dict) else {}
        r.check_keys("imap", 0, m, IMAP_KEYS, "[imap]")
        imap = read_table(r, "imap", 0, m, ImapConfig, base)
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
        lists.append(read_table(r, "list", i, item, ListConfig, base, address=address))
        if lists[-1].scheduled:
            resolved = tuple(Scheduled(e.every, (base / e.file).resolve(), e.subject) for e in lists[-1].scheduled)
            lists[-1] = replace(lists[-1], scheduled=resolved)
            for e in resolved:
                if not e.file.is_file():
                    r.problem("list", i, ("scheduled",), f"scheduled file {str(e.file)!r} does not exist")
        notice = lists[-1].mediation_notice
        if notice is not None and not notice.is_file():
            r.problem("list", i, ("mediation_notice",), f"mediation_notice {str(notice)!r} does not exist; write "
                      "the notice's text there, or remove mediation_notice")
        _check_news(r, i, item, lists[-1])
        _check_dkim(r, i, lists[-1])
    if not lists and not r.problems:
        r.problem("", 0, (), "no [[list]] is configured; add one with at least address = \"name@example.org\"")
    if r.problems:
        raise ConfigError(r.problems)
    return Config(server=server, outbound=outbound, lists=tuple(lists), imap=imap, path=path)
