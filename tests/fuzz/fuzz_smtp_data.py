"""Fuzz harness: the DATA and BDAT framers (mailserverd.smtp.framing).

Input (:func:`harness.split_input`): option bit 0 chooses the BDAT
:class:`ChunkReader` (else the DATA :class:`MessageReader`); bits 1-7 give the
chunk size for BDAT; then the piece size and the bytes after the DATA or BDAT
line.

Neither reader has an error to raise: refusals are a ``rejection`` reply. So a
crash is any exception, or a broken contract, checked against a plain model of
RFC 5321 §4.5.2 (the first ``<CRLF>.<CRLF>``, or a ``.`` line at the very start,
ends the text; one leading dot is dropped from each line) and §2.3.8 / §4.5.3.1.6
(bare CR or LF, over-long lines and the size limit refuse the text): where the
text ends, what comes out, whether it is refused, that memory stays bounded,
and that the result does not depend on how the stream was cut.
"""

from __future__ import annotations

import atheris

from harness import main, split_input

with atheris.instrument_imports(include=["mailserverd"]):
    from mailserverd.smtp.framing import ChunkReader, MessageReader

#: Small limits, so that the fuzzer reaches them (the real minimums are larger).
LINE_MAX = 80
SIZE_MAX = 1024
END_OF_DATA = b"\r\n.\r\n"


def expected_end(stream: bytes) -> int:
    """Index just past the end-of-data line in ``stream``, or -1 (RFC 5321 §4.5.2)."""
    if stream.startswith(b".\r\n"):
        return 3
    found = stream.find(END_OF_DATA)
    return -1 if found < 0 else found + len(END_OF_DATA)


def expected_text(text: bytes) -> bytes | None:
    """The unstuffed mail text, or None when it must be refused."""
    lines = text.split(b"\r\n")[:-1]  # text is empty or ends with CRLF
    unstuffed = [line[1:] if line.startswith(b".") else line for line in lines]
    if any(b"\r" in line or b"\n" in line for line in unstuffed):
        return None  # RFC 5321 §2.3.8: bare CR or LF
    if any(len(line) + 2 > LINE_MAX for line in unstuffed):
        return None  # RFC 5321 §4.5.3.1.6, CRLF included
    joined = b"".join(line + b"\r\n" for line in unstuffed)
    return None if len(joined) > SIZE_MAX else joined


def read_message(pieces: list[bytes]) -> tuple[int, bool, bytes | None]:
    """Feed ``pieces`` to a MessageReader; return (consumed, done, text or None if refused)."""
    reader = MessageReader(SIZE_MAX, LINE_MAX)
    consumed = 0
    for piece in pieces:
        used = reader.feed(piece)
        assert 0 <= used <= len(piece)
        assert reader.done or used == len(piece), "bytes left over before the end"
        consumed += used
        assert len(reader._partial) <= LINE_MAX + 1, len(reader._partial)
        assert sum(map(len, reader._parts)) <= SIZE_MAX
        if reader.done:
            assert reader.feed(b".\r\n") == 0
            break
    refused = reader.rejection is not None
    return consumed, reader.done, None if refused or not reader.done else reader.message()


def check_message_reader(pieces: list[bytes]) -> None:
    stream = b"".join(pieces)
    consumed, done, text = read_message(pieces)
    end = expected_end(stream)
    assert done == (end >= 0)
    if not done:
        return
    assert consumed == end, (consumed, end)
    assert text == expected_text(stream[:end - 3])
    assert read_message([stream]) == (consumed, done, text), "depends on how the stream was cut"


def check_chunk_reader(size: int, pieces: list[bytes]) -> None:
    """RFC 3030 §2: exactly ``size`` octets are taken, whatever follows them."""
    stream = b"".join(pieces)
    into = bytearray()
    reader = ChunkReader(size, into)
    consumed = sum(reader.feed(piece) for piece in pieces)
    assert consumed == min(size, len(stream))
    assert reader.done == (len(stream) >= size)
    assert bytes(into) == stream[:size]


def test_one_input(data: bytes) -> None:
    options, pieces = split_input(data)
    if options & 1:
        check_chunk_reader(options >> 1, pieces)
    else:
        check_message_reader(pieces)


if __name__ == "__main__":
    main(test_one_input)
