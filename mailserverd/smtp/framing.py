"""Reading mail text off the wire: DATA's dot-terminated stream and BDAT's counted chunks.

Both readers take bytes in chunks cut anywhere (:meth:`feed` returns how many
it consumed) and keep memory bounded by the message size limit plus one line,
whatever the client sends. Neither touches a socket.
"""

from __future__ import annotations

from mailserverd.smtp import replies
from mailserverd.smtp.replies import Reply


def text_rejection(text: bytes, line_max: int) -> Reply | None:
    """Why whole-message ``text`` (CRLF lines) is refused, or ``None``.

    RFC 5321 §2.3.8: CR and LF appear only together as CRLF (the SMTP
    smuggling class, CVE-2023-51764); §4.5.3.1.6: text lines are limited.
    """
    line_ends = text.count(b"\r\n")
    if text.count(b"\n") != line_ends or text.count(b"\r") != line_ends:
        return replies.S550_BARE_LINE_END
    if len(text) > line_max and max(map(len, text.split(b"\n"))) + 1 > line_max:
        return replies.S552_LINE_TOO_LONG
    return None


class MessageReader:
    """Reads DATA mail text as a stream (RFC 5321 §4.5.2, §2.3.8).

    :meth:`feed` takes bytes in chunks cut anywhere and returns how many it
    consumed: all of them, or those up to and including the end-of-data line,
    after which :attr:`done` is true and the rest belongs to the next command.
    Only ``<CRLF>.<CRLF>`` ends the text (a ``.`` line right after the DATA
    line counts too); ``\\n.\\n`` or ``\\r.\\n`` never does.

    The text is unstuffed (a leading dot removed from each line) and kept
    only while it is acceptable: a bare CR or LF, a line over ``line_max``
    octets or a total over ``size_max`` sets :attr:`rejection` and drops what
    was kept, but the reader still finds the real end. Memory is bounded by
    ``size_max`` plus one line.
    """

    def __init__(self, size_max: int, line_max: int):
        self.size_max = size_max
        self.line_max = line_max
        self.size = 0
        self.done = False
        self.rejection: Reply | None = None
        self._parts: list[bytes] = []
        self._partial = bytearray()  # the current incomplete line (bounded by line_max)
        self._partial_overflowed = False  # the current line is already too long
        self._previous_line_crlf = True  # the DATA line ended with CRLF

    def feed(self, data: bytes) -> int:
        """Consume ``data``; return the number of its bytes consumed."""
        if self.done:
            return 0
        last_lf = data.rfind(b"\n")
        if last_lf < 0:
            self._hold(data)
            return len(data)
        held = len(self._partial)
        block = bytes(self._partial) + data[:last_lf + 1] if held else data[:last_lf + 1]
        overflowed = self._partial_overflowed
        self._partial.clear()
        self._partial_overflowed = False
        end = self._complete_lines(block, overflowed)
        if end >= 0:
            self.done = True
            return end - held
        self._hold(data[last_lf + 1:])
        return len(data)

    def message(self) -> bytes:
        """The unstuffed text received (only meaningful when done and not rejected)."""
        return b"".join(self._parts)

    def _reject(self, reply: Reply) -> None:
        if self.rejection is None:
            self.rejection = reply
        self._parts = []

    def _hold(self, data: bytes) -> None:
        """Keep an incomplete line; once it is too long keep only its last byte (a CR?)."""
        if not data:
            return
        if self._partial_overflowed:
            self._partial[:] = data[-1:]
            return
        self._partial += data
        if len(self._partial) > self.line_max:
            # RFC 5321 §4.5.3.1.6 text line limit
            self._reject(replies.S552_LINE_TOO_LONG)
            self._partial_overflowed = True
            del self._partial[:-1]

    def _complete_lines(self, block: bytes, overflowed: bool) -> int:
        """Process ``block`` (whole lines, starting at a line start); return the
        index just past the end-of-data line, or -1 when it is not in ``block``."""
        end = -1
        if self._previous_line_crlf and not overflowed and block.startswith(b".\r\n"):
            body, end = b"", 3
        else:
            found = block.find(b"\r\n.\r\n")
            body = block if found < 0 else block[:found + 2]
            if found >= 0:
                end = found + 5
        if body:
            self._previous_line_crlf = body.endswith(b"\r\n")
            self._add_text(body, overflowed)
        return end

    def _add_text(self, body: bytes, overflowed: bool) -> None:
        """Check and keep whole lines of text (not containing the end line)."""
        if self.rejection is not None:
            return
        # RFC 5321 §4.5.2: drop the first dot of every line that starts with one.
        if body.startswith(b".") and not overflowed:
            body = body[1:]
        body = body.replace(b"\r\n.", b"\r\n")
        rejection = text_rejection(body, self.line_max)
        if rejection is not None:
            self._reject(rejection)
            return
        self.size += len(body)
        if self.size > self.size_max:
            self._reject(replies.S552_MESSAGE_TOO_BIG)  # RFC 1870 §6.3
            return
        self._parts.append(body)


class ChunkReader:
    """Reads one BDAT chunk: exactly ``size`` octets, no dot-stuffing (RFC 3030 §2).

    The octets are appended to ``into`` (the transaction's message so far)
    unless ``keep`` is false: a refused chunk is still read to its end, so
    that its bytes never run as commands. :meth:`feed` returns how many
    bytes it consumed; :attr:`done` is true once the chunk is complete.
    """

    def __init__(self, size: int, into: bytearray | None):
        self.remaining = size
        self.into = into
        self.done = size == 0

    def feed(self, data: bytes) -> int:
        """Consume up to the rest of the chunk from ``data``; return the count."""
        taken = min(self.remaining, len(data))
        if self.into is not None and taken:
            self.into += data[:taken]
        self.remaining -= taken
        self.done = self.remaining == 0
        return taken
