"""API tokens and the ``Authorization`` header, sans I/O.

A token is ``msd_`` + 43 characters of base64url: 256 random bits from the
OS. The store keeps only its SHA-256 (:func:`token_hash`). A slow password
hash (bcrypt) is for secrets people choose, which can be guessed; a 256-bit
random token cannot be, so one SHA-256 is as strong and costs nothing per
request (and a lookup by hash is one LMDB get, with no timing leak).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

from mailserverd.errors import fresh
from mailserverd.web import problems

TOKEN_PREFIX = "msd_"
#: Random octets in a token (256 bits).
TOKEN_BYTES = 32
#: Longest Authorization header value looked at (a Basic one holds an address and a password).
AUTHORIZATION_MAX = 2048


def new_token() -> tuple[str, str]:
    """A fresh ``(token, token_id)``: the secret shown once, and a short public id."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES), secrets.token_hex(4)


def token_hash(token: str) -> bytes:
    """What the store keeps of ``token`` and looks it up by."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Credentials:
    """What a request's ``Authorization`` holds: ``scheme`` ``"bearer"`` with
    ``token``, or ``"basic"`` with ``user`` and ``password``."""

    scheme: str
    token: str = ""
    user: str = ""
    password: str = ""


def parse_authorization(value: bytes | None) -> Credentials:
    """Parse ``Authorization: Bearer TOKEN`` (RFC 6750 §2.1) or ``Basic b64(user:pass)``
    (RFC 7617 §2, UTF-8). Raises Problem 401 for anything else or nothing."""
    if not value or len(value) > AUTHORIZATION_MAX:
        raise fresh(problems.UNAUTHORIZED)
    scheme, _, rest = value.strip().partition(b" ")
    rest = rest.strip()
    if scheme.lower() == b"bearer" and rest:
        return Credentials("bearer", token=rest.decode("ascii", "replace"))
    if scheme.lower() == b"basic" and rest:
        try:
            user, colon, password = base64.b64decode(rest, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            raise problems.UNAUTHORIZED.with_detail("malformed Basic credentials") from None
        if colon and user and password:
            return Credentials("basic", user=user, password=password)
    raise problems.UNAUTHORIZED.with_detail("use Bearer TOKEN or Basic credentials")
