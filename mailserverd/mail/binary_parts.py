"""Binary content of a message sent as an IMAP literal8, made storable (RFC 3516 §4.4).

A message APPENDed as a literal8 may hold NUL octets. No IMAP string may carry
a NUL except BINARY[...]'s literal8 (RFC 9051 §4.3.1), and BODY[] must return
what BODYSTRUCTURE describes (RFC 3516 §6), so a stored message never holds
one: each leaf part whose body has a NUL is re-encoded in base64 (RFC 2045
§6.8) and its Content-Transfer-Encoding field says so. RFC 3516 §4.4 allows
that ("MAY modify the CTE ... MUST NOT result in a loss of data"); FETCH
BINARY[part] decodes it back to the exact octets sent. Dovecot does the same
(its binary converter stream re-encodes parts labelled ``binary``). A part
without NUL is stored as sent, 8-bit octets included: §6 asks for no
gratuitous change (it would break signatures).

A NUL anywhere else (a header, a boundary line, a preamble or epilogue, the
body of a part already labelled base64 or quoted-printable) has no lossless
form in a message IMAP can send: :class:`BinaryContentRefused`, which APPEND
answers with ``NO [UNKNOWN-CTE]`` (RFC 3516 §4.4).
"""

from __future__ import annotations

import base64

from mailserverd.mail.mime import KIND_LEAF, Part, parse_message
from mailserverd.mail.sections import header_fields_bytes

__all__ = ["BinaryContentRefused", "storable_message"]

# RFC 2045 §6.1-§6.2: the identity encodings (absent means 7bit); a NUL in such
# a body is the octet itself, so base64 of the body loses nothing.
_IDENTITY = frozenset({b"7bit", b"8bit", b"binary"})
_CTE = b"content-transfer-encoding"
_BASE64_FIELD = b"Content-Transfer-Encoding: base64\r\n"
# Octets encoded at a time: 57 make one 76-character line (RFC 2045 §6.8).
_BLOCK = 57 * 1024


class BinaryContentRefused(ValueError):
    """A NUL octet where no transfer encoding can carry it."""


def storable_message(raw: bytes) -> bytes:
    """``raw`` with every leaf body that holds a NUL re-encoded in base64.

    Takes the message bytes of a literal8. Returns ``raw`` itself when it has
    no NUL, else a new message without any. Raises BinaryContentRefused when a
    NUL is outside a leaf body of an identity encoding.
    """
    if raw.find(b"\x00") < 0:
        return raw
    pieces: list[bytes] = []
    pos = 0
    for part in _leaves(parse_message(raw)):
        if raw.find(b"\x00", part.body_start, part.end) < 0:
            continue
        encoding = (part.field(_CTE) or b"7bit").strip().lower()
        if encoding not in _IDENTITY:
            raise BinaryContentRefused(f"NUL in a {encoding.decode('ascii', 'replace')} body")
        pieces.append(raw[pos:part.header_start])
        pieces.append(_base64_header(raw[part.header_start:part.body_start]))
        with memoryview(raw) as view:
            pieces += _base64_lines(view[part.body_start:part.end], last=part.end == len(raw))
        pos = part.end
    pieces.append(raw[pos:])
    stored = b"".join(pieces)
    if stored.find(b"\x00") >= 0:
        raise BinaryContentRefused("NUL outside a part body")
    return stored


def _leaves(root: Part):
    """The leaf parts of the tree, in message order (iterative: nesting is bounded
    by the parser, not by the stack)."""
    stack = [root]
    while stack:
        part = stack.pop()
        if part.kind == KIND_LEAF:
            yield part
        else:
            stack.extend(reversed(part.children))


def _base64_header(header: bytes) -> bytes:
    """A part's header (ending in its blank line) with its Content-Transfer-Encoding
    fields replaced by ``base64``."""
    kept = header_fields_bytes(header, (_CTE,), exclude=True)  # ends with the blank line
    return kept[:-2] + _BASE64_FIELD + b"\r\n"


def _base64_lines(body: memoryview, last: bool) -> list[bytes]:
    """``body`` in base64 lines of 76 characters (RFC 2045 §6.8), CRLF between them,
    as pieces of about 75 KiB (no whole-size intermediate copy).

    The line break before a following boundary belongs to the boundary (RFC
    2046 §5.1.1), so one ends the text only when it is the end of the message.
    """
    pieces = [base64.encodebytes(body[start:start + _BLOCK]).replace(b"\n", b"\r\n")
              for start in range(0, len(body), _BLOCK)]
    if pieces and not last:
        pieces[-1] = pieces[-1][:-2]
    return pieces
