"""The stream dot-stuffer: same output for every way the input is split into chunks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserverd.mail.dotstuff import DotStuffer, stuff_chunks


def reference_stuffing(data: bytes) -> bytes:
    """A line-by-line statement of RFC 1939 §3, independent of the streaming code."""
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    lines = data.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()  # data ended with CRLF (or was empty)
    out = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return out + b".\r\n"


def client_reads(wire: bytes) -> tuple[bytes, bytes]:
    """What an RFC 1939 client takes as the body and what it sees after the terminator."""
    body = []
    position = 0
    while True:
        end = wire.index(b"\r\n", position)
        line = wire[position:end]
        position = end + 2
        if line == b".":
            return b"".join(body), wire[position:]
        body.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


def encode(chunks: list[bytes]) -> bytes:
    stuffer = DotStuffer()
    return b"".join(stuffer.feed(chunk) for chunk in chunks) + stuffer.finish()


TRICKY = (
    b"From: a@example.test\r\n\r\n"
    b".\r\n"
    b"..\r\n"
    b".x\r\n"
    b"line\r\n"
    b".\r\n"
    b"+OK injected\r\n"
    b"\r\n"
    b"..."
)


def test_reference_matches_known_answer():
    assert reference_stuffing(b".\r\n..\r\n.x\r\n") == b"..\r\n...\r\n..x\r\n.\r\n"


@pytest.mark.parametrize("split", range(len(TRICKY) + 1))
def test_every_single_split_point(split):
    wire = encode([TRICKY[:split], TRICKY[split:]])
    assert wire == reference_stuffing(TRICKY)
    body, after = client_reads(wire)
    assert body == TRICKY + b"\r\n"  # no final CRLF in TRICKY: one is added
    assert after == b""


@pytest.mark.parametrize("size", range(1, 12))
def test_every_chunk_size(size):
    chunks = [TRICKY[i:i + size] for i in range(0, len(TRICKY), size)]
    assert encode(chunks) == reference_stuffing(TRICKY)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
def test_dot_line_at_every_chunk_boundary(size):
    """A body made only of "." lines, chunked so a "." starts every chunk."""
    body = b".\r\n" * 40 + b"..\r\n.x\r\n"
    wire = b"".join(stuff_chunks(body, size))
    assert wire == b"..\r\n" * 40 + b"...\r\n..x\r\n.\r\n"
    assert client_reads(wire) == (body, b"")


def test_no_final_crlf_gets_one_before_terminator():
    assert encode([b"Subject: x\r\n\r\nno newline at end"]) == b"Subject: x\r\n\r\nno newline at end\r\n.\r\n"


def test_final_crlf_not_doubled():
    assert encode([b"a\r\n"]) == b"a\r\n.\r\n"


def test_empty_message():
    assert encode([]) == b".\r\n"
    assert b"".join(stuff_chunks(b"", 10)) == b".\r\n"


def test_crlf_split_between_chunks_is_not_a_bare_lf():
    assert encode([b"a\r", b"\n.b\r", b"\n"]) == b"a\r\n..b\r\n.\r\n"


def test_bare_lf_becomes_crlf_and_is_stuffed():
    # A bare LF is a line end to many clients: the "." after it must be stuffed.
    assert encode([b"a\n.\n", b"b"]) == b"a\r\n..\r\nb\r\n.\r\n"


def test_bare_cr_is_data():
    assert encode([b"a\r.b\r\n"]) == b"a\r.b\r\n.\r\n"


def test_feed_after_finish_raises():
    stuffer = DotStuffer()
    stuffer.finish()
    with pytest.raises(RuntimeError):
        stuffer.feed(b"x")
    with pytest.raises(RuntimeError):
        stuffer.finish()


@given(
    st.binary(max_size=60).map(lambda b: bytes(b".\r\nx"[v % 4] for v in b)),
    st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_any_chunking_equals_reference(data, cuts):
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    assert encode(chunks) == reference_stuffing(data)
