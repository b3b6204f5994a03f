"""What the atheris harnesses (``fuzz_*.py`` beside this file) share.

Each harness is a script: ``python tests/fuzz/fuzz_mime.py CORPUS_DIR -max_total_time=60``
fuzzes one parser (libFuzzer's options), ``python tests/fuzz/fuzz_mime.py FILE`` replays
one input. A harness defines ``test_one_input(data)`` and ends with
``main(test_one_input)``; it imports the code under test inside
``atheris.instrument_imports(include=["mailserverd"])`` so that coverage guides
the fuzzer. Whatever the parser's contract allows (its own error, a protocol
error reply) returns normally; anything else raised is a crash, and libFuzzer
keeps the input that caused it.

The session harnesses take inputs of one layout (:func:`split_input`): an
option byte, a piece-size byte, then the bytes the client sends.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable, Iterator

import atheris
from twisted.logger import globalLogBeginner, globalLogPublisher

#: tests/unit: the unit tests' fakes (stores, authenticators, recorders) the session
#: harnesses drive the protocol cores with, as the property tests there do.
UNIT_TESTS = str(Path(__file__).resolve().parents[1] / "unit")
if UNIT_TESTS not in sys.path:
    sys.path.insert(0, UNIT_TESTS)

#: The messages in the mailboxes the IMAP harnesses search and fetch: a plain one,
#: a multipart with an encoded word and a base64 part, one without any header.
SAMPLE_MESSAGES = (
    b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: hello\r\n"
    b"Date: Tue, 02 Jan 2024 03:04:05 +0000\r\nMessage-ID: <1@example.test>\r\n\r\nbody text\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
    b"part one\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\nAAECAw==\r\n--b--\r\n",
    b"no header at all",
)


def fill_inbox(store, user: str) -> list:
    """Give ``user`` an INBOX in the unit tests' in-memory IMAP ``store`` holding
    :data:`SAMPLE_MESSAGES` (all but the first \\Seen); return their MessageInfos."""
    store.add_mailbox(user, "INBOX")
    return [store.add_message(user, "INBOX", raw, flags=("\\Seen",) if number else ())
            for number, raw in enumerate(SAMPLE_MESSAGES)]


def split_input(data: bytes) -> tuple[int, list[bytes]]:
    """Split a session harness's input into ``(options, pieces)``.

    Byte 0 holds the harness's option bits; byte 1 is the size of the pieces
    the rest is fed in (0: all in one piece), so that the fuzzer explores
    every way the transport may cut the stream; the rest is the stream.
    """
    options = data[0] if data else 0
    size = data[1] if len(data) > 1 else 0
    stream = data[2:]
    if not size:
        return options, [stream]
    return options, [stream[start:start + size] for start in range(0, len(stream), size)]


@contextlib.contextmanager
def logged_failures_raised() -> Iterator[None]:
    """Within the block, collect log events that carry a failure; at its end,
    re-raise the first one's exception with its own traceback.

    The sessions catch a handler's unexpected exception, log it with its
    traceback and answer a generic temporary error (the house rule for unexpected errors): for
    the fuzzer that logged failure is the crash, and its traceback is what
    the report must show.
    """
    failures = []

    def observe(event: dict) -> None:
        if event.get("log_failure") is not None:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observe)
    if failures:
        failures[0].raiseException()


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Run libFuzzer on ``test_one_input`` with the command line's options.

    Twisted's log is started with no observer but :func:`logged_failures_raised`'s:
    until logging starts it keeps the last 64k events (with their tracebacks'
    frames), which a long run would fill with the sessions' own log lines.
    """
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
