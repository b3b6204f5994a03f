"""The DATA reader: same result for every way the wire bytes are cut into chunks,
and the same result as a line-by-line reading of RFC 5321 §4.5.2 / §2.3.8."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.smtp.framing import MessageReader


def reference_read(wire: bytes, size_max: int, line_max: int):
    """Line by line, independent of the streaming code: (consumed, accepted, text).

    Lines end at LF. Only a "." line ending in CRLF, after a line that ended in
    CRLF (or at the start), ends the text. A line not ending in CRLF or holding
    a CR, a line over ``line_max`` octets (after unstuffing) or a total over
    ``size_max`` rejects the message. ``consumed`` is None when no end was found.
    """
    position, previous_crlf, accepted, text = 0, True, True, []
    while True:
        end = wire.find(b"\n", position)
        if end < 0:
            return None, None, None
        line = wire[position:end + 1]
        position = end + 1
        crlf = line.endswith(b"\r\n")
        if line == b".\r\n" and previous_crlf:
            body = b"".join(text)
            if len(body) > size_max:
                accepted = False
            return position, accepted, body if accepted else None
        previous_crlf = crlf
        if not crlf or b"\r" in line[:-2]:
            accepted = False
        if line.startswith(b"."):
            line = line[1:]
        if len(line) > line_max:
            accepted = False
        text.append(line)


def stream_read(chunks: list[bytes], size_max: int, line_max: int):
    reader = MessageReader(size_max, line_max)
    consumed = 0
    for chunk in chunks:
        used = reader.feed(chunk)
        consumed += used
        if reader.done:
            break
    if not reader.done:
        return None, None, None
    accepted = reader.rejection is None
    return consumed, accepted, reader.message() if accepted else None


def cut(wire: bytes, points: list[int]) -> list[bytes]:
    points = sorted({min(p, len(wire)) for p in points})
    return [wire[a:b] for a, b in zip([0] + points, points + [len(wire)])]


wire_bytes = st.lists(st.sampled_from([b".", b"a", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n.\r\n"]),
                      max_size=40).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(wire_bytes, st.lists(st.integers(0, 200), max_size=8), st.integers(3, 12), st.integers(0, 60))
def test_stream_matches_line_by_line_reference(wire, points, line_max, size_max):
    wire = wire + b"\r\n.\r\nNEXT"
    assert stream_read(cut(wire, points), size_max, line_max) == reference_read(wire, size_max, line_max)


def test_byte_by_byte_equals_one_chunk():
    wire = b"..a\r\n.\r\n"
    for chunks in ([wire], [bytes([b]) for b in wire]):
        assert stream_read(chunks, 100, 100) == (len(wire), True, b".a\r\n")


def test_empty_message_and_leftover():
    reader = MessageReader(100, 100)
    assert reader.feed(b".\r\nQUIT\r\n") == 3
    assert reader.done and reader.message() == b"" and reader.rejection is None
    assert reader.feed(b"more") == 0


def test_long_line_without_lf_is_not_kept():
    reader = MessageReader(10_000_000, 1000)
    for _ in range(100):
        reader.feed(b"x" * 10_000)
    assert len(reader._partial) <= 1
    assert reader.rejection is not None and reader.rejection.code == 552
    assert reader.feed(b"\r\n.\r\n") == 5
    assert reader.done


def test_over_size_keeps_nothing_but_finds_the_end():
    reader = MessageReader(1000, 1000)
    for _ in range(50):
        reader.feed(b"y" * 98 + b"\r\n")
    assert reader._parts == []
    assert reader.feed(b".\r\n") == 3
    assert reader.rejection.lines == ("Message size exceeds fixed maximum message size",)
