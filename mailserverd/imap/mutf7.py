"""Modified UTF-7, the IMAP4rev1 encoding of mailbox names (RFC 3501 §5.1.3).

Printable US-ASCII other than ``&`` stands for itself; ``&`` is written ``&-``;
every other character is written as ``&`` + modified BASE64 of its UTF-16BE
form (``,`` instead of ``/``, no ``=`` padding) + ``-``.

:func:`decode` is strict, so that one mailbox has one name on the wire: it
refuses encoded printable ASCII, adjacent encoded runs, non-zero padding bits,
bad surrogates and 8-bit bytes (RFC 3501 §5.1.3 "MUST NOT").
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["MUTF7Error", "decode", "encode"]


class MUTF7Error(ValueError):
    """The bytes are not valid modified UTF-7."""


def _is_direct(code: int) -> bool:
    """Whether a character is represented by itself (printable ASCII except '&')."""
    return 0x20 <= code <= 0x7E and code != 0x26


def encode(name: str) -> bytes:
    """Return ``name`` in modified UTF-7. Takes any str; never raises."""
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.extend(b"&" + base64.b64encode(utf16).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for char in name:
        code = ord(char)
        if _is_direct(code):
            flush()
            out.append(code)
        elif char == "&":
            flush()
            out.extend(b"&-")
        else:
            pending.append(char)
    flush()
    return bytes(out)


def decode(data: bytes) -> str:
    """Return the name that modified UTF-7 ``data`` encodes.

    Raises :class:`MUTF7Error` when ``data`` is not the one canonical
    modified UTF-7 form of some name.
    """
    out: list[str] = []
    pos = 0
    end = len(data)
    previous_was_encoded = False
    while pos < end:
        code = data[pos]
        if code == 0x26:  # '&'
            close = data.find(b"-", pos + 1)
            if close < 0:
                raise MUTF7Error("'&' without closing '-'")
            if close == pos + 1:
                out.append("&")
                previous_was_encoded = False
            else:
                if previous_was_encoded:
                    raise MUTF7Error("adjacent encoded runs must be merged")
                out.append(_decode_run(data[pos + 1:close]))
                previous_was_encoded = True
            pos = close + 1
            continue
        if not _is_direct(code):
            raise MUTF7Error(f"byte 0x{code:02x} must be encoded")
        out.append(chr(code))
        previous_was_encoded = False
        pos += 1
    return "".join(out)


def _decode_run(run: bytes) -> str:
    """Decode the modified BASE64 between '&' and '-'; raise MUTF7Error if not canonical."""
    if b"/" in run or b"=" in run:
        raise MUTF7Error("'/' and '=' are not used in modified BASE64")
    padded = run.replace(b",", b"/") + b"=" * (-len(run) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise MUTF7Error("bad modified BASE64") from None
    if len(raw) % 2 or not raw:
        raise MUTF7Error("encoded run is not whole UTF-16 units")
    # Canonical form: re-encoding must give the same characters (no stray bits).
    if base64.b64encode(raw).rstrip(b"=") != padded.rstrip(b"="):
        raise MUTF7Error("non-zero padding bits")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise MUTF7Error("bad UTF-16 (unpaired surrogate)") from None
    if any(_is_direct(ord(char)) or char == "&" for char in text):
        raise MUTF7Error("printable ASCII must not be encoded")
    return text
