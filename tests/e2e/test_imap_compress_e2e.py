"""End to end: COMPRESS=DEFLATE (RFC 4978) with the real daemon, over TLS, with zlib on the client.

The client is :class:`clients.RawImap` with raw DEFLATE both ways inside TLS
(RFC 4978 §3: compress first, then TLS). Decompression bombs and corrupt
compressed input are normal input: they cost the daemon a bounded amount
of memory and end (or answer) only the connection that sent them.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from clients import RawImap, make_message, smtp_send, stored_tail
from conftest import wait_for

pytestmark = pytest.mark.e2e

MIB = 1 << 20
#: How much a bomb may cost the daemon's peak memory: far above a step of
#: inflation (imap_inflate_step) and a command line, below what one TLS
#: record of zeros inflates to at once (16 KiB x 1032, DEFLATE's best ratio).
MEMORY_BOUND = 12 * MIB


def memory_bytes(pid: int, field: str) -> int:
    """A /proc/PID/status memory figure: VmRSS (now) or VmHWM (the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def compressed_session(daemon, *, plain: bool = False, pipelined: bytes = b"") -> RawImap:
    """A RawImap logged in as alice and compressing, over 993 or STARTTLS on 143."""
    raw = RawImap(daemon, plain=plain, timeout=60)
    if plain:
        assert raw.command(b"T", b"STARTTLS") == [b"T OK Begin TLS negotiation now"]
        raw.start_tls()
    raw.login()
    raw.start_compression(pipelined)
    return raw


def zeros_compressed(raw: RawImap, size: int) -> bytes:
    """``size`` NUL bytes through the session's compressor (1,000:1 or better), unflushed."""
    chunk = bytes(MIB)
    return b"".join(raw.compressor.compress(chunk) for _ in range(size // MIB))


def test_select_fetch_idle_logout_all_compressed(daemon):
    big = make_message("big and compressed", body_lines=60_000)  # ~1.3 MB
    smtp_send(daemon, big)
    raw = compressed_session(daemon)
    try:
        assert b" COMPRESS=DEFLATE" in raw.command(b"c", b"CAPABILITY")[0]
        reply = raw.command(b"s", b"SELECT INBOX")
        assert b"* 1 EXISTS" in reply and reply[-1].startswith(b"s OK [READ-WRITE]")
        fetched = raw.command(b"f", b"FETCH 1 (BODY.PEEK[])")
        assert fetched[-1] == b"f OK Fetch completed"
        head, literal = fetched[0].split(b"}\r\n", 1)
        assert head.startswith(b"* 1 FETCH (BODY[] {")
        body = literal[:int(head.rsplit(b"{", 1)[1])]
        stored_tail(body, big)  # the delivered bytes, exactly

        raw.send(b"i IDLE\r\n")
        assert raw.read_line() == b"+ idling"
        smtp_send(daemon, make_message("while idling compressed"))
        assert raw.read_line() == b"* 2 EXISTS"  # the socket's timeout is the deadline
        raw.send(b"DONE\r\n")
        assert raw.until_tagged(b"i")[-1] == b"i OK IDLE terminated"

        raw.send(b"o LOGOUT\r\n")
        rest = raw.read_to_end()  # returns once the daemon closed the connection
        assert rest.startswith(b"* BYE ") and rest.endswith(b"o OK Logout completed\r\n")
    finally:
        raw.close()
    assert "compress protocol=imap mechanism=DEFLATE" in daemon.log()


def test_commands_pipelined_with_compress_after_starttls(daemon):
    raw = compressed_session(daemon, plain=True, pipelined=b"a NOOP\r\nb SELECT INBOX\r\n")
    try:
        assert raw.until_tagged(b"a") == [b"a OK NOOP completed"]
        assert raw.until_tagged(b"b")[-1].startswith(b"b OK [READ-WRITE]")
        assert raw.command(b"d", b"COMPRESS DEFLATE") == \
            [b"d NO [COMPRESSIONACTIVE] DEFLATE is already active"]
        assert raw.command(b"e", b"NOOP") == [b"e OK NOOP completed"]
    finally:
        raw.close()


def test_commands_behind_one_that_waits_on_the_store_run_in_order(daemon):
    """FETCH BODY[] sets \\Seen, a store write: the NOOPs sent with it (more
    than a step of inflation) wait, compressed, with the socket unread; then
    they all run, in order."""
    smtp_send(daemon, make_message("to be seen"))
    raw = compressed_session(daemon)
    try:
        assert raw.command(b"s", b"SELECT INBOX")[-1].startswith(b"s OK [READ-WRITE]")
        raw.send(b"f FETCH 1 (BODY[])\r\n" + b"".join(b"n%d NOOP\r\n" % n for n in range(20_000)))
        assert raw.until_tagged(b"f")[-1] == b"f OK Fetch completed"
        for n in range(20_000):
            assert raw.read_response() == b"n%d OK NOOP completed" % n
        assert b"\\Seen" in raw.command(b"g", b"FETCH 1 FLAGS")[0]
    finally:
        raw.close()


def test_unknown_mechanism_is_bad_and_leaves_the_session_uncompressed(daemon):
    raw = RawImap(daemon)
    try:
        raw.login()
        assert raw.command(b"c", b"COMPRESS FOO") == [b"c BAD Unknown compression mechanism"]
        assert raw.command(b"n", b"NOOP") == [b"n OK NOOP completed"]
        raw.start_compression()  # and DEFLATE still works afterwards
        assert raw.command(b"m", b"NOOP") == [b"m OK NOOP completed"]
    finally:
        raw.close()


def test_a_literal_bomb_is_answered_and_costs_no_memory(daemon):
    """512 MiB of literal in about 0.5 MB: refused as too big, swallowed a step
    at a time; the session goes on (RFC 7888 §4)."""
    raw = compressed_session(daemon)
    before = memory_bytes(daemon.proc.pid, "VmHWM")
    try:
        size = 512 * MIB
        compressor = raw.compressor
        raw.sock.sendall(compressor.compress(b"s SEARCH TEXT {%d+}\r\n" % size)
                         + zeros_compressed(raw, size)
                         + compressor.compress(b"\r\nn NOOP\r\n") + compressor.flush(zlib.Z_SYNC_FLUSH))
        assert raw.until_tagged(b"s") == [b"s BAD [TOOBIG] Literal too big"]
        assert raw.until_tagged(b"n") == [b"n OK NOOP completed"]
    finally:
        raw.close()
    grown = memory_bytes(daemon.proc.pid, "VmHWM") - before
    assert grown < MEMORY_BOUND, grown


def test_a_line_bomb_closes_only_that_connection_and_costs_no_memory(daemon):
    raw = compressed_session(daemon)
    before = memory_bytes(daemon.proc.pid, "VmHWM")
    try:
        try:
            raw.sock.sendall(raw.compressor.compress(b"a NOOP ") + zeros_compressed(raw, 256 * MIB)
                             + raw.compressor.flush(zlib.Z_SYNC_FLUSH))
            answer = raw.read_to_end()
        except OSError:  # the daemon closed while we were still sending: reset
            answer = None
        if answer is not None:  # else the reset may have destroyed the BYE
            assert answer == b"* BAD [TOOBIG] Command line too long\r\n* BYE Too long command line\r\n"
    finally:
        raw.close()
    grown = memory_bytes(daemon.proc.pid, "VmHWM") - before
    assert grown < MEMORY_BOUND, grown
    other = compressed_session(daemon)  # the daemon serves the next client as before
    try:
        assert other.command(b"n", b"NOOP") == [b"n OK NOOP completed"]
    finally:
        other.close()


def test_corrupt_compressed_input_closes_only_that_connection(daemon):
    bystander = compressed_session(daemon)
    raw = compressed_session(daemon)
    try:
        raw.sock.sendall(b"\xff" * 64)  # not DEFLATE
        assert raw.read_to_end() == b"* BYE Corrupt compressed data\r\n"
    finally:
        raw.close()
    wait_for(lambda: "corrupt input, closing" in daemon.log(), what="the log line")
    try:
        assert bystander.command(b"n", b"NOOP") == [b"n OK NOOP completed"]
    finally:
        bystander.close()
