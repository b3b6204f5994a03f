"""The transcript harness itself: it passes a right dialogue and fails every kind
of wrong one, naming the line (so a transcript test can fail)."""

from __future__ import annotations

import pytest
import pytest_twisted

from transcript_store import store  # noqa: F401 (the fixture; first: it puts tests/unit on the path)
from imap_transcript import TranscriptSyntaxError, parse, replay

RIGHT = b"""\
# A NOOP and a FETCH of a message put in by the preamble.
state: selected INBOX
message: INBOX (\\Seen)
| Subject: hi
|
| body
C: a NOOP
S: a OK NOOP completed
C: b FETCH 1 (FLAGS INTERNALDATE)
S: * 1 FETCH (FLAGS (\\Seen) INTERNALDATE " 2-Jan-2024 03:04:05 +0000")
S: b OK Fetch completed
C: c LOGOUT
S: * BYE Logging out
S: c OK Logout completed
E: close
"""

# A few lines' distance from turns of ~1 ms: a missing line fails soon.
SHORT = 200


async def failure(text: bytes, store) -> str:
    """The failure message of replaying ``text`` (which must fail)."""
    with pytest.raises(pytest.fail.Exception) as info:
        await replay(parse(text, "t.txt"), store, SHORT)
    return str(info.value)


@pytest_twisted.ensureDeferred
async def test_a_right_transcript_passes(store):
    await replay(parse(RIGHT, "t.txt"), store)


@pytest_twisted.ensureDeferred
async def test_a_wrong_expected_line_fails_naming_it(store):
    message = await failure(RIGHT.replace(b"(\\Seen) INTERNALDATE", b"(\\Flagged) INTERNALDATE"), store)
    assert message.startswith("t.txt:10: this line differs (reply line 1)"), message
    assert "> expected S: * 1 FETCH (FLAGS (\\Flagged)" in message
    assert "> actual   S: * 1 FETCH (FLAGS (\\Seen)" in message


@pytest_twisted.ensureDeferred
async def test_a_missing_server_line_fails(store):
    message = await failure(RIGHT.replace(b"S: a OK NOOP completed\n",
                                          b"S: * 0 EXISTS\nS: a OK NOOP completed\n"), store)
    assert message.startswith("t.txt:8: this line differs"), message


@pytest_twisted.ensureDeferred
async def test_a_line_that_never_comes_fails(store):
    message = await failure(RIGHT.replace(b"S: a OK NOOP completed\n",
                                          b"S: a OK NOOP completed\nS: * never\n"), store)
    assert message.startswith("t.txt:9: the server sent no such line"), message


@pytest_twisted.ensureDeferred
async def test_an_unexpected_server_line_fails(store):
    message = await failure(RIGHT.replace(b"S: * BYE Logging out\n", b""), store)
    assert "t.txt:13: this line differs" in message, message
    message = await failure(RIGHT.replace(b"S: c OK Logout completed\n", b""), store)
    assert "the server sent more lines than expected" in message, message


@pytest_twisted.ensureDeferred
async def test_an_unexpected_action_fails(store):
    message = await failure(RIGHT.replace(b"E: close\n", b""), store)
    assert message.startswith("t.txt:end: the session also did ['close']"), message
    message = await failure(RIGHT.replace(b"C: c LOGOUT", b"C: c NOOP").replace(
        b"S: * BYE Logging out\nS: c OK Logout completed\n", b"S: c OK NOOP completed\n"), store)
    assert message.startswith("t.txt:14: expected the session to close"), message


STATUS = b"""\
state: authenticated
C: a STATUS INBOX (UIDVALIDITY)
S: * STATUS "INBOX" (UIDVALIDITY {uidvalidity:x})
S: a OK STATUS completed
C: b STATUS INBOX (UIDVALIDITY)
S: * STATUS "INBOX" (UIDVALIDITY {uidvalidity:x})
S: b OK STATUS completed
C: c STATUS Sent (UIDVALIDITY)
S: * STATUS "Sent" (UIDVALIDITY {uidvalidity:y})
S: c OK STATUS completed
C: {uidvalidity:x} NOOP
S: {uidvalidity:x} OK NOOP completed
"""


@pytest_twisted.ensureDeferred
async def test_placeholders_bind_and_a_bound_value_must_repeat(store):
    await replay(parse(STATUS, "t.txt"), store)
    message = await failure(STATUS.replace(b"{uidvalidity:y}", b"{uidvalidity:x}"), store)
    assert message.startswith("t.txt:9: this line differs"), message  # Sent's differs from INBOX's
    message = await failure(STATUS.replace(b"C: {uidvalidity:x} NOOP", b"C: {uidvalidity:z} NOOP"), store)
    assert message.startswith("t.txt:11: C: uses {uidvalidity:z}, which no S: line has bound"), message


@pytest_twisted.ensureDeferred
async def test_a_literal_in_client_lines_is_sent_as_is(store):
    text = b"""\
C: a LOGIN {18}
S: + Ready for literal data
C: alice@example.test {12}
S: + Ready for literal data
C: alice secret
S: a OK [CAPABILITY {caps}] Logged in
"""
    with pytest.raises(TranscriptSyntaxError, match="unknown placeholder"):
        parse(text)
    text = text.replace(b"[CAPABILITY {caps}] ", b"")
    message = await failure(text, store)
    assert "> actual   S: a OK [CAPABILITY IMAP4rev1 " in message, message


def test_an_xfail_directive_is_read():
    assert parse(b"xfail: the server says otherwise\nC: a NOOP\n").xfail == "the server says otherwise"


def test_malformed_files_are_refused():
    for text, error in ((b"bogus line\n", "not a directive"), (b"state: selected\n", "state:"),
                        (b"C: a NOOP\nstate: authenticated\n", "belongs in the preamble"),
                        (b"E: explode\n", "unknown event"), (b"S:x\n", "followed by a space")):
        with pytest.raises(TranscriptSyntaxError, match=error):
            parse(text)
