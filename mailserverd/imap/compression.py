"""The byte streams of IMAP COMPRESS=DEFLATE (RFC 4978), sans-I/O.

Raw DEFLATE (RFC 1951) both ways, without zlib or gzip framing: windowBits
-15 (RFC 4978 §4 allows -8 to -15). :class:`Deflater` compresses what the
server sends, :class:`Inflater` decompresses what the client sends, a bounded
step at a time, so that a small compressed input that inflates to gigabytes
(a decompression bomb) is never inflated faster than the session takes it.
"""

from __future__ import annotations

import zlib

#: Raw DEFLATE with the largest window (RFC 4978 §4).
WINDOW_BITS = -15


class CompressionError(Exception):
    """The client's compressed stream is not valid DEFLATE, or went on after its end."""


class Deflater:
    """Compresses the server's output stream at a zlib ``level`` (1-9).

    Each :meth:`compress` call returns bytes that inflate to everything given
    so far: it ends with a sync flush (Z_SYNC_FLUSH), so a response never
    waits inside the compressor for more output (the client would hang) and
    the compressor holds no output back (back-pressure sees all of it).
    """

    def __init__(self, level: int):
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, WINDOW_BITS)

    def compress(self, data: bytes) -> bytes:
        """The compressed form of ``data``, flushed; the dictionary is kept (no full flush)."""
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)


class Inflater:
    """Decompresses the client's input stream, at most ``step`` bytes per :meth:`read`.

    :meth:`feed` takes compressed bytes as they arrive; :meth:`read` returns
    the next inflated bytes. Memory is what was fed and not yet inflated plus
    one step: the caller decides when to read on (when the session can take
    more) and stops reading from the network meanwhile.
    """

    def __init__(self, step: int):
        self.step = step
        self._decompressor = zlib.decompressobj(WINDOW_BITS)
        self._input = b""
        #: The last read filled its step: zlib may hold more output for this input.
        self._full = False

    def feed(self, data: bytes) -> None:
        """Add compressed bytes received from the client."""
        self._input = self._input + data if self._input else data

    @property
    def pending(self) -> bool:
        """Whether :meth:`read` may return more without more input."""
        return bool(self._input) or self._full

    def read(self) -> bytes:
        """The next inflated bytes (at most ``step``; empty when more input is needed).

        Raises CompressionError for corrupt input, or for bytes after the end
        of the DEFLATE stream (a client never ends its stream while the
        connection is open, RFC 4978 §3: compression stays on until it closes).
        """
        decompressor = self._decompressor
        if decompressor.eof:
            raise CompressionError("data after the end of the compressed stream")
        data, self._input = self._input, b""
        try:
            out = decompressor.decompress(data, self.step)
        except zlib.error as error:
            raise CompressionError(str(error)) from None
        self._input = decompressor.unconsumed_tail
        self._full = len(out) == self.step
        if decompressor.eof and (decompressor.unused_data or self._input):
            raise CompressionError("data after the end of the compressed stream")
        return out
