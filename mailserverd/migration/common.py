"""What the Maildir and mbox readers share: their error, keyword check, line ends."""

from __future__ import annotations

import re

# RFC 9051 §9: flag-keyword = atom; ATOM-CHAR is any CHAR except atom-specials
# ( ) { SP CTL % * " \ ]. A keyword outside this cannot be sent to IMAP clients.
_KEYWORD = re.compile(r'[^\x00-\x20\x7f-\U0010ffff(){%*"\\\]]+\Z')


class MigrationError(Exception):
    """An input that cannot be imported, or an export that cannot be written."""


def is_keyword(word: str) -> bool:
    """Whether ``word`` can be an IMAP keyword (an atom, not a ``\\`` system flag)."""
    return bool(_KEYWORD.match(word))


def to_crlf(raw: bytes) -> bytes:
    """Message bytes with every bare LF made CRLF (what IMAP and SMTP carry, RFC 5322 §2.1)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def to_lf(raw: bytes) -> bytes:
    """Message bytes with CRLF line ends made LF (how Maildir files are usually kept)."""
    return raw.replace(b"\r\n", b"\n")
