"""APPEND with BINARY's literal8 (RFC 3516 §4.4) and how APPEND's literals are read.

The session runs on the real LMDB store (tests/unit/imap_real_store.py), so
what is checked is what the store committed and what FETCH then answers.
The literal framing tests feed the sans-I/O reader directly; the memory tests
count allocations with tracemalloc (bytes, not time).
"""

from __future__ import annotations

import base64
import gc
import re
import time
import tracemalloc

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from mailserverd.imap.commands import append
from mailserverd.imap.parser import ArgCursor, CommandReader, FramedCommand
from mailserverd.limits import MIB, Limits
from mailserverd.mail.binary_parts import BinaryContentRefused, storable_message

from imap_real_store import USER, RealStoreClient, open_store

#: A body with NULs, other control octets, bare CR and LF, and 8-bit UTF-8 and Latin-1.
BINARY_BODY = b"caf\xc3\xa9 \x00\x01\x02\xff\xfe\r\nbare\rcr and lf\n\x00end" + bytes(range(256))
BINARY_MESSAGE = (b"From: bob@example.test\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                  + BINARY_BODY)
#: 8-bit, no NUL: a literal8 of it is stored exactly as sent.
EIGHT_BIT_MESSAGE = (b"From: bob@example.test\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
                     b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                     b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n\xe2\x82\xac 5\r\n")
PLAIN_MESSAGE = b"From: bob@example.test\r\nSubject: plain\r\n\r\nhello\r\n"
MIXED = (b"From: bob@example.test\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npreamble\r\n"
         b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached \xc3\xa9\r\n"
         b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
         b"Subject: inner\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: Binary\r\n"
         b"Content-Disposition: attachment\r\n\r\n" + BINARY_BODY +
         b"\r\n--XX--\r\nepilogue\r\n")


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path, Limits(store_map_size=64 * MIB))


async def logged_in(store, **limits) -> RealStoreClient:
    client = RealStoreClient(store)
    await client.login()
    if limits:
        client.session.limits = Limits(**limits)
    return client


def send(client: RealStoreClient, data: bytes) -> bytes:
    """Feed ``data`` to the session; what it answered at once."""
    client.session.data_received(data)
    return client.out.take()


def stored(store) -> list[bytes]:
    """The bytes of every message in the INBOX, in UID order."""
    box = store.get_mailbox(USER, "INBOX")
    return [store.read_message(USER, info.blob_id) for info in store.list_messages(USER, box.mailbox_id)]


def literal_after(reply: bytes, label: bytes) -> tuple[bytes, bytes]:
    """(marker, data) of the literal that follows ``label`` in a FETCH reply."""
    match = re.search(re.escape(label) + rb" (~?)\{(\d+)\}\r\n", reply)
    assert match is not None, reply
    return match.group(1), reply[match.end():match.end() + int(match.group(2))]


# ---------------------------------------------------------------- APPEND ~{n}


@pytest_twisted.ensureDeferred
async def test_literal8_with_nuls_then_binary_and_body_fetch(store):
    client = await logged_in(store)
    assert send(client, b"a APPEND INBOX ~{%d}\r\n" % len(BINARY_MESSAGE)) == b"+ Ready for literal data\r\n"
    reply = await client.cmd(BINARY_MESSAGE, b"a")
    assert re.fullmatch(rb"a OK \[APPENDUID \d+ 1\] Append completed\r\n", reply), reply
    await client.cmd(b"s SELECT INBOX")
    reply = await client.cmd(b"f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BODY.PEEK[] BODYSTRUCTURE)")
    # RFC 3516 §4.3: the decoded part, exactly as sent, in a literal8 since it holds NULs.
    assert literal_after(reply, b"BINARY[1]") == (b"~", BINARY_BODY)
    assert b"BINARY.SIZE[1] %d " % len(BINARY_BODY) in reply
    # RFC 9051 §4.3.1 / RFC 3516 §6: BODY[] holds no NUL; it is what BODYSTRUCTURE says (base64).
    marker, body = literal_after(reply, b"BODY[]")
    assert marker == b"" and b"\x00" not in body
    header, text = body.split(b"\r\n\r\n", 1)
    assert header == (b"From: bob@example.test\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
                      b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64")
    assert base64.b64decode(text) == BINARY_BODY
    assert b'BODYSTRUCTURE ("application" "octet-stream" NIL NIL NIL "base64" ' in reply
    assert stored(store) == [body]


@pytest_twisted.ensureDeferred
async def test_literal8_without_nul_is_stored_as_sent(store):
    client = await logged_in(store)
    reply = await client.cmd(b"a APPEND INBOX ~{%d+}\r\n" % len(EIGHT_BIT_MESSAGE) + EIGHT_BIT_MESSAGE)
    assert reply.startswith(b"a OK [APPENDUID "), reply  # ~{n+}: no continuation (RFC 4466 §2.1)
    assert stored(store) == [EIGHT_BIT_MESSAGE]
    await client.cmd(b"s SELECT INBOX")
    reply = await client.cmd(b"f FETCH 1 (BINARY.PEEK[1] BODY.PEEK[])")
    assert literal_after(reply, b"BODY[]") == (b"", EIGHT_BIT_MESSAGE)
    # RFC 3516 §4.3: 8-bit without NUL comes as a plain string, not a literal8.
    assert literal_after(reply, b"BINARY[1]") == (b"", EIGHT_BIT_MESSAGE.split(b"\r\n\r\n", 1)[1])


@pytest_twisted.ensureDeferred
async def test_literal8_in_the_second_message_of_a_multiappend(store):
    client = await logged_in(store)
    assert send(client, b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(PLAIN_MESSAGE)) == (
        b"+ Ready for literal data\r\n")
    assert send(client, PLAIN_MESSAGE + b" (\\Flagged) ~{%d}\r\n" % len(MIXED)) == (
        b"+ Ready for literal data\r\n")
    reply = await client.cmd(MIXED, b"a")
    assert re.fullmatch(rb"a OK \[APPENDUID \d+ 1:2\] Append completed\r\n", reply), reply
    plain, mixed = stored(store)
    assert plain == PLAIN_MESSAGE and b"\x00" not in mixed
    await client.cmd(b"s SELECT INBOX")
    reply = await client.cmd(b"f FETCH 2 (FLAGS BINARY.PEEK[2.1] BINARY.PEEK[1])")
    assert re.search(rb"FLAGS \(\\Flagged[ )]", reply), reply  # its own flags, not the first's \Seen
    assert literal_after(reply, b"BINARY[2.1]") == (b"~", BINARY_BODY)
    assert literal_after(reply, b"BINARY[1]") == (b"", b"see attached \xc3\xa9")


@pytest_twisted.ensureDeferred
async def test_literal8_over_the_limit_is_refused_before_any_byte_is_read(store):
    client = await logged_in(store, message_size_max=65536)
    # RFC 7889 §4 / RFC 3516: no continuation, NO [TOOBIG], and the session goes on.
    assert send(client, b"a APPEND INBOX ~{65537}\r\n") == b"a NO [TOOBIG] Message too big\r\n"
    # A non-synchronizing one is read and dropped (RFC 7888 §4 choice 1); none of it runs.
    smuggled = b"x NOOP\r\n" * (65537 // 8 + 1)
    assert send(client, b"b APPEND INBOX ~{%d+}\r\n" % len(smuggled) + smuggled + b"\r\n") == (
        b"b NO [TOOBIG] Message too big\r\n")
    assert await client.cmd(b"c NOOP") == b"c OK NOOP completed\r\n"
    assert stored(store) == []


@pytest_twisted.ensureDeferred
async def test_nul_in_a_plain_literal_is_bad_and_the_session_continues(store):
    client = await logged_in(store)
    # RFC 3501 §4.3 / §9: a literal is CHAR8, which excludes NUL; only a literal8 may carry one.
    reply = await client.cmd(b"a APPEND INBOX {%d+}\r\n" % len(BINARY_MESSAGE) + BINARY_MESSAGE)
    assert reply == b"a BAD NUL in literal\r\n"
    assert await client.cmd(b"b NOOP") == b"b OK NOOP completed\r\n"
    assert stored(store) == []


@pytest.mark.parametrize("message", [
    b"Subject: nul\x00 in a header\r\n\r\nbody\r\n",
    b"Subject: b64\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\x00bG8=\r\n",
    b"Subject: pre\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\npre\x00amble\r\n--B\r\n\r\nx\r\n--B--\r\n",
], ids=["header", "base64-body", "preamble"])
@pytest_twisted.ensureDeferred
async def test_a_nul_no_encoding_can_keep_is_unknown_cte(store, message):
    client = await logged_in(store)
    reply = await client.cmd(b"a APPEND INBOX ~{%d+}\r\n" % len(message) + message)
    assert reply == b"a NO [UNKNOWN-CTE] Binary content not storable here\r\n"  # RFC 3516 §4.4
    assert await client.cmd(b"b NOOP") == b"b OK NOOP completed\r\n"
    assert stored(store) == []


@pytest_twisted.ensureDeferred
async def test_capability_lists_binary_and_literal_plus_only(store):
    client = await logged_in(store)
    reply = await client.cmd(b"c CAPABILITY")
    capabilities = reply.split(b"\r\n")[0].split(b" ")
    assert b"BINARY" in capabilities and b"LITERAL+" in capabilities
    assert b"LITERAL-" not in capabilities  # RFC 7888 §5: never both


@pytest_twisted.ensureDeferred
async def test_non_synchronizing_literal_over_4096_is_taken_under_literal_plus(store):
    # RFC 7888 §5's 4096-octet bound is LITERAL-'s; under LITERAL+ any size within the limits goes.
    client = await logged_in(store)
    message = b"Subject: big\r\n\r\n" + b"y" * 5000 + b"\r\n"
    reply = await client.cmd(b"a APPEND INBOX {%d+}\r\n" % len(message) + message)
    assert reply.startswith(b"a OK [APPENDUID "), reply
    assert stored(store) == [message]


def test_parse_messages_takes_literal8_beside_literals():
    # RFC 4466 §2.1 append-data = literal / literal8, in any message of a MULTIAPPEND.
    cursor = ArgCursor((b" {3}", b"abc", b" (\\Seen) ~{4}", b"d\x00ef", b" UTF8 (~{2}", b"gh", b")"))
    assert append.parse_messages(cursor) == [
        append.AppendMessage(b"abc", (), None, literal8=False),
        append.AppendMessage(b"d\x00ef", ("\\Seen",), None, literal8=True),
        append.AppendMessage(b"gh", (), None, literal8=True),
    ]


# ---------------------------------------------------------------- storable_message


def test_storable_message_keeps_a_message_without_nul_as_the_same_object():
    assert storable_message(EIGHT_BIT_MESSAGE) is EIGHT_BIT_MESSAGE


def test_storable_message_re_encodes_only_the_parts_with_nuls():
    result = storable_message(MIXED)
    before, after = MIXED.split(BINARY_BODY)
    inner_header = b"Subject: inner\r\nContent-Type: image/png\r\nContent-Disposition: attachment\r\n"
    assert result.startswith(before.split(b"Subject: inner")[0] + inner_header
                             + b"Content-Transfer-Encoding: base64\r\n\r\n")
    assert result.endswith(after)  # the boundary's CRLF and the epilogue, untouched
    encoded = result[len(before.split(b"Subject: inner")[0] + inner_header) + 37:-len(after)]
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))  # RFC 2045 §6.8
    assert base64.b64decode(encoded) == BINARY_BODY


def test_storable_message_refusals():
    with pytest.raises(BinaryContentRefused):
        storable_message(b"Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na\x00b\r\n")
    with pytest.raises(BinaryContentRefused):
        storable_message(b"Subject: x\x00\r\n\r\nbody\r\n")


# ---------------------------------------------------------------- reading literals


def frame(chunks: list[bytes]) -> list[FramedCommand]:
    """Feed ``chunks`` one by one to a reader that takes every literal; the commands framed."""
    reader = CommandReader(8192, lambda first_line, size, total: True)
    commands = []
    for chunk in chunks:
        reader.feed(chunk)
        while (event := reader.next_event()) is not None:
            commands.append(event)
    return commands


WIRE = b"a APPEND INBOX ~{12+}\r\n0123\x00567\n9\r\n (\\Seen) {3+}\r\nabc\r\nb NOOP\r\n"
EXPECTED = [FramedCommand((b"a APPEND INBOX ~{12+}", b"0123\x00567\n9\r\n", b" (\\Seen) {3+}", b"abc", b"")),
            FramedCommand((b"b NOOP",))]


@pytest.mark.parametrize("size", [1, 2, 5, 17, len(WIRE)])
def test_literals_are_framed_the_same_in_any_chunking(size):
    assert frame([WIRE[start:start + size] for start in range(0, len(WIRE), size)]) == EXPECTED


def test_literal_bytes_buffered_behind_its_line_are_taken_in_order():
    # The literal's first bytes arrive with its line, the rest later, then the next command.
    assert frame([WIRE[:30], WIRE[30:40], WIRE[40:]]) == EXPECTED


def test_a_large_literal_costs_at_most_one_copy_more_while_it_is_read():
    message = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * (4 * MIB // 16)
    reader = CommandReader(8192, lambda first_line, size, total: True)
    chunks = [message[start:start + 65536] for start in range(0, len(message), 65536)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        reader.feed(b"a APPEND INBOX {%d+}\r\n" % len(message))
        for chunk in chunks:
            reader.feed(chunk)
            assert reader.next_event() is None
        reader.feed(b"\r\n")
        framed = reader.next_event()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    cursor = ArgCursor(framed.segments)
    cursor.match(re.compile(rb"a APPEND INBOX "), "the head")
    assert cursor.literal() == message
    # The literal's buffer (with its growth slack) and the one bytes object made of it.
    assert peak < 2.3 * len(message), peak / len(message)


@pytest_twisted.ensureDeferred
async def test_the_message_is_released_once_the_store_has_it(store):
    message = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * (4 * MIB // 16)
    client = await logged_in(store)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        send(client, b"a APPEND INBOX {%d+}\r\n" % len(message))
        for start in range(0, len(message), 65536):
            send(client, message[start:start + 65536])
        reply = await client.cmd(b"", b"a")
        assert reply.startswith(b"a OK [APPENDUID "), reply
        # Neither the session nor the store's threads keep it once it is committed.
        deadline = time.monotonic() + 30
        while tracemalloc.get_traced_memory()[0] - base > len(message) // 4:
            assert time.monotonic() < deadline, tracemalloc.get_traced_memory()[0] - base
            await deferLater(reactor, 0.01, lambda: None)
    finally:
        tracemalloc.stop()
    assert stored(store) == [message]
