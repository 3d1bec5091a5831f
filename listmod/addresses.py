"""Checking mail addresses: syntax only (no DNS), lower-cased, internal domains allowed."""

from __future__ import annotations

import functools

import email_validator
from email_validator import EmailNotValidError, validate_email

# A mail server for lists may serve internal names (lists.internal, x.lan, demo.localhost):
# email-validator refuses "special-use" domains unless told otherwise, and documents this list
# as the place to tell it.
email_validator.SPECIAL_USE_DOMAIN_NAMES = []


def checked(address: str) -> str:
    """The normalised, lower-cased address; ValueError saying what is wrong otherwise."""
    try:
        result = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=True,
                                allow_quoted_local=True, allow_domain_literal=True,
                                globally_deliverable=False)
    except EmailNotValidError as err:
        raise ValueError(f"{address!r} is not a mail address: {err}") from None
    return result.normalized.lower()


@functools.lru_cache(maxsize=4096)  # the same few thousand senders write most posts
def clean(address: str | None) -> str:
    """A valid, lower-cased address, or "" when it is empty or not an address at all."""
    if not address:
        return ""
    address = address.strip().strip("<>")
    if "@" not in address:
        return ""
    try:
        return checked(address)
    except ValueError:
        return ""
