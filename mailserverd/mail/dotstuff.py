"""Dot-stuffing of a message sent as lines ending in ".", done as a stream.

One rule for both protocols that send mail so: a POP3 multi-line response
(RFC 1939 §3) and the SMTP client's DATA (RFC 5321 §4.5.2). RFC 1939
§3: each line of a multi-line response that begins with the termination octet "." is sent with an extra "." in front, and the response
ends with the line ".".  A line can begin in one chunk and its first octet
arrive in the next, so the encoder keeps state across chunks: stuffing per
chunk would miss a "." at a chunk boundary, and a message could then end the
response early and inject text the client reads as server replies.
"""

from __future__ import annotations

import re

#: A line feed not preceded by a carriage return, inside one chunk.
_BARE_LF = re.compile(rb"(?<!\r)\n")


def _crlf(text: bytes) -> bytes:
    """``text`` with every bare LF made CRLF; stored mail has none, so count first
    (two C-speed counts are far cheaper than the look-behind regex)."""
    if text.count(b"\n") == text.count(b"\r\n"):
        return text
    return _BARE_LF.sub(b"\r\n", text)


class DotStuffer:
    """Encodes message bytes, fed in chunks of any size, as a multi-line body.

    Output has CRLF line ends: the store keeps messages with CRLF, and a bare
    LF (which the store should never hold) is sent as CRLF, so that every
    line end the client may see is one the stuffing rule was applied at.
    A bare CR is not a line end and is passed through.

    Usage: ``feed(chunk)`` for each chunk, then ``finish()`` once. The
    concatenation of what they return is the stuffed body plus the
    terminating ``.\\r\\n`` (with a CRLF first if the data did not end in one).
    """

    def __init__(self) -> None:
        self._at_line_start = True  # the next output octet starts a line
        self._after_cr = False  # the last input octet was CR
        self._finished = False

    def feed(self, chunk: bytes) -> bytes:
        """Return the wire form of ``chunk``, given everything fed before it.

        Raises RuntimeError after :meth:`finish`. No other side effects.
        """
        if self._finished:
            raise RuntimeError("DotStuffer.feed after finish")
        if not chunk:
            return b""
        if chunk[:1] == b"\n" and self._after_cr:
            # The CR of this CRLF ended the previous chunk: the LF is not bare.
            text = b"\n" + _crlf(chunk[1:])
        else:
            text = _crlf(chunk)
        self._after_cr = chunk[-1:] == b"\r"
        # RFC 1939 §3: a line starting with "." gets one more "." in front.
        stuffed = text.replace(b"\n.", b"\n..")
        if self._at_line_start and stuffed[:1] == b".":
            stuffed = b"." + stuffed
        self._at_line_start = stuffed[-1:] == b"\n"
        return stuffed

    def finish(self) -> bytes:
        """Return the end of the body: a CRLF if the data did not end with one, then ``.\\r\\n``.

        An empty message gives just ``.\\r\\n``. Further calls raise RuntimeError.
        """
        if self._finished:
            raise RuntimeError("DotStuffer.finish called twice")
        self._finished = True
        if self._at_line_start:
            return b".\r\n"
        # RFC 1939 §3: the terminator is a line of its own. (A lone CR at the end is
        # not a line end, so it stays data and a whole CRLF follows it.)
        return b"\r\n.\r\n"


def stuff_chunks(data: bytes, chunk_size: int):
    """Yield the wire form of ``data`` (stuffed and terminated) in pieces of about ``chunk_size``.

    Lazy: each piece is encoded only when asked for, so a slow client pulls
    a large message through a bounded amount of encoding work at a time.
    """
    stuffer = DotStuffer()
    view = memoryview(data)
    for start in range(0, len(data), chunk_size):
        yield stuffer.feed(bytes(view[start:start + chunk_size]))
    yield stuffer.finish()
