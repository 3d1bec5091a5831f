"""DKIM signatures on list copies (dkimpy), d= the list's domain, so that a copy whose From is the
list's (DMARC mitigation) passes DMARC, and receivers can tell the list's mail from forgeries."""

from __future__ import annotations

import logging
from pathlib import Path

import dkim

log = logging.getLogger("listmod.delivery")

# what a list copy's signature covers (those present are signed); From always
SIGNED = (b"from", b"reply-to", b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to",
          b"references", b"mime-version", b"content-type", b"content-transfer-encoding", b"list-id",
          b"list-post", b"list-unsubscribe", b"list-unsubscribe-post", b"list-archive", b"archived-at",
          b"x-original-from")


class Signer:
    """Signs with one list's key; the key file is read when first needed and again when it changes."""

    def __init__(self, domain: str, selector: str, key_file: Path):
        self.domain, self.selector, self.key_file = domain.encode(), selector.encode(), key_file
        self._key: bytes | None = None
        self._mtime = 0.0

    def _private_key(self) -> bytes:
        mtime = self.key_file.stat().st_mtime
        if self._key is None or mtime != self._mtime:
            self._key, self._mtime = self.key_file.read_bytes(), mtime
        return self._key

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature first (relaxed/relaxed, rsa-sha256). A message that
        cannot be signed goes unsigned, with a warning: a copy is better than none."""
        try:
            signature = dkim.sign(message, self.selector, self.domain, self._private_key(),
                                  canonicalize=(b"relaxed", b"relaxed"), include_headers=list(SIGNED))
        except (OSError, dkim.DKIMException) as err:
            log.warning("could not DKIM-sign a copy for d=%s s=%s (%s); sent unsigned",
                        self.domain.decode(), self.selector.decode(), err)
            return message
        return signature + message
