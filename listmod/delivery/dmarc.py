"""DMARC: what the From domain asks receivers to do with mail that fails (RFC 7489), and the list
copy rewritten so that it passes: the From made the list's own ("munge"), or the post wrapped in a
message from the list ("wrap"). The poster's address goes to Reply-To and X-Original-From.

Policies are looked up with dnspython (the domain's `_dmarc` record, else its organisational
domain's, found with the Public Suffix List that ships inside the publicsuffixlist package; it is
never fetched) and kept for their TTL (at least a minute, at most an hour)."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.policy import SMTP
from email.utils import formataddr, getaddresses

import dns.exception
import dns.resolver
from publicsuffixlist import PublicSuffixList

from ..config import Endpoint, ListConfig
from ..rawmail import crlf_lines, split_message

STRICT = ("reject", "quarantine")
_PSL: PublicSuffixList | None = None
_PSL_LOCK = threading.Lock()


def organisational_domain(domain: str) -> str:
    """example.co.uk for mail.example.co.uk (RFC 7489 3.2), from the packaged Public Suffix List."""
    global _PSL
    with _PSL_LOCK:
        if _PSL is None:
            _PSL = PublicSuffixList()
    return _PSL.privatesuffix(domain) or domain


@dataclass(frozen=True)
class Policy:
    """What a From domain publishes: `policy` is reject, quarantine, none, or "" (no record);
    `error` says why it could not be learnt (then it counts as strict: better a changed From than
    a copy the receiver throws away)."""

    domain: str          # the From domain
    policy: str
    found_at: str = ""   # the name the record was found at (_dmarc.DOMAIN or _dmarc.ORGDOMAIN)
    error: str = ""

    @property
    def strict(self) -> bool:
        return self.policy in STRICT or bool(self.error)

    def describe(self) -> str:
        if self.error:
            return f"the DMARC policy of {self.domain} could not be learnt ({self.error})"
        if not self.policy:
            return f"{self.domain} publishes no DMARC policy"
        return f"{self.domain} publishes DMARC p={self.policy} (at {self.found_at})"


def parse_record(text: str) -> dict[str, str] | None:
    """The tags of a DMARC record, or None when the text is not one (it must start v=DMARC1)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v", "").upper() != "DMARC1" or not text.lstrip().lower().startswith("v"):
        return None
    return tags


class PolicyLookup:
    """DMARC policies by DNS, cached; safe to share between the delivery threads."""

    def __init__(self, nameservers: tuple[Endpoint, ...] = (), timeout: float = 3.0):
        self.nameservers, self.timeout = nameservers, timeout
        self._resolver: dns.resolver.Resolver | None = None
        self._cache: dict[str, tuple[float, dict[str, str] | None, str]] = {}
        self._lock = threading.Lock()

    @property
    def resolver(self) -> dns.resolver.Resolver:
        """Made when first needed (a host without /etc/resolv.conf fails here, as a lookup error)."""
        with self._lock:
            if self._resolver is None:
                resolver = dns.resolver.Resolver(configure=not self.nameservers)
                if self.nameservers:
                    # dnspython has one port for all nameservers: the first one's
                    resolver.nameservers = [n.host for n in self.nameservers]
                    resolver.port = self.nameservers[0].port
                resolver.lifetime = self.timeout
                self._resolver = resolver
            return self._resolver

    def _record(self, name: str) -> tuple[dict[str, str] | None, str]:
        """(tags or None, error) for the TXT records at `name`, cached."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
        if cached and cached[0] > now:
            return cached[1], cached[2]
        tags, error, ttl = None, "", 600.0
        try:
            answer = self.resolver.resolve(name, "TXT")
            ttl = float(answer.rrset.ttl) if answer.rrset is not None else ttl
            records = [t for t in (parse_record(b"".join(r.strings).decode("utf-8", "replace"))
                                   for r in answer) if t is not None]
            tags = records[0] if len(records) == 1 else None   # several records: none applies (RFC 7489 6.6.3)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            pass
        except (dns.exception.DNSException, OSError) as err:
            error, ttl = f"{type(err).__name__}: {err}"[:200], 60.0
        ttl = min(max(ttl, 60.0), 3600.0)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[name] = (now + ttl, tags, error)
        return tags, error

    def policy_for(self, domain: str) -> Policy:
        domain = domain.lower().rstrip(".")
        tags, error = self._record(f"_dmarc.{domain}")
        if error:
            return Policy(domain, "", error=error)
        if tags is not None:
            return Policy(domain, tags.get("p", "none").lower(), f"_dmarc.{domain}")
        org = organisational_domain(domain)
        if org == domain:
            return Policy(domain, "")
        tags, error = self._record(f"_dmarc.{org}")
        if error:
            return Policy(domain, "", error=error)
        if tags is None:
            return Policy(domain, "")
        return Policy(domain, tags.get("sp", tags.get("p", "none")).lower(), f"_dmarc.{org}")


def _value(field: bytes) -> str:
    """A header field's value, RFC 2047 words decoded, unfolded."""
    text = field.split(b":", 1)[1].decode("utf-8", "replace") if b":" in field else ""
    text = re.sub(r"\r?\n[ \t]+", " ", text).strip()
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError):
        return text


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def from_address(raw: bytes) -> tuple[str, str]:
    """(display name, address) of the first From of a message, "" when there is none."""
    fields, _sep, _body = split_message(raw)
    for f in fields:
        if _name(f) == b"from":
            pairs = [p for p in getaddresses([_value(f)]) if "@" in p[1]]
            if pairs:
                return pairs[0][0], pairs[0][1].lower()
    return "", ""


def _header(name: str, value: str) -> bytes:
    """One header field, folded and RFC 2047-encoded where it must be, without its CRLF."""
    return SMTP.fold_binary(name, value).rstrip(b"\r\n")


def _via(name: str, address: str, mlist: ListConfig) -> bytes:
    shown = name or address.split("@", 1)[0]
    return _header("From", formataddr((f"{shown} via {mlist.local_part}", mlist.address)))


def munged(copy: bytes, mlist: ListConfig) -> bytes:
    """The list copy with From made the list's address ("Alice via dev" <dev@example.org>); the
    poster's From kept in X-Original-From and added to Reply-To, so replies still reach them."""
    fields, _sep, body = split_message(copy)
    name, address = from_address(copy)
    if not address:
        return copy
    original = next(f for f in fields if _name(f) == b"from")
    reply_to = [p[1] for f in fields if _name(f) == b"reply-to" for p in getaddresses([_value(f)]) if p[1]]
    if address not in (r.lower() for r in reply_to):
        reply_to.append(address)
    kept = [f for f in fields if f and _name(f) not in (b"from", b"reply-to", b"x-original-from", b"sender")]
    head = [_via(name, address, mlist), _header("Reply-To", ", ".join(reply_to)),
            b"X-Original-From:" + original.split(b":", 1)[1], *kept]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


WRAPPED_FIELDS = (b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to", b"references")


def wrapped(raw: bytes, copy: bytes, mlist: ListConfig) -> bytes:
    """A message from the list whose body is the post, untouched, as message/rfc822 (RFC 2046
    5.2.1): its signature still verifies for anyone who opens it. Threading headers and the list
    headers of `copy` are on the outer message."""
    fields, _sep, _body = split_message(copy)
    name, address = from_address(raw)
    original = next((f for f in split_message(raw)[0] if _name(f) == b"from"), b"From: ")
    outer = [f for f in fields if _name(f) in WRAPPED_FIELDS]
    list_fields = [f for f in fields if _name(f).startswith(b"list-") or _name(f) in (b"precedence", b"x-loop")]
    encoding = b"8bit" if any(b > 127 for b in raw) else b"7bit"
    head = [_via(name, address, mlist), *([_header("Reply-To", address)] if address else []),
            b"X-Original-From:" + original.split(b":", 1)[1], *outer, *list_fields,
            b"MIME-Version: 1.0", b"Content-Type: message/rfc822", b"Content-Disposition: inline",
            b"Content-Transfer-Encoding: " + encoding]
    return b"\r\n".join(head) + b"\r\n\r\n" + crlf_lines(raw)
