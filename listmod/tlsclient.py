"""TLS as a client, shared by everything listmod connects to (the smarthost, IMAP, NNTP)."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path


def is_loopback(host: str) -> bool:
    """A password may cross only the loopback interface in clear."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def client_tls_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """The server's certificate and name verified (system CAs, or ca_file), unless `verify` is
    false (then encrypted but unauthenticated, as the operator chose)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
