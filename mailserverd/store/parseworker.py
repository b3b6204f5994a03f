"""Message parsing in worker processes, beside the GIL.

Parsing a message into its IMAP facts is pure Python: in threads it competes
with the reactor and the writers for the one GIL, so on a busy server it is
the largest share of the CPU a delivery costs. A :class:`ParseWorker` runs it
in a child process (``python -m mailserverd.store.parseworker``), so it uses
another core.

Wire format, over the child's stdin and stdout: each request is a 4-byte
big-endian length, a kind byte and its data; each reply a 4-byte length and
a msgpack value. Kind ``F``: the data is a message, the reply
``[blob_id, facts_record]`` where ``facts_record`` is already encoded by
:func:`mailserverd.store.records.encode_facts`, so the parent stores it
without decoding it. Kind ``C`` (:meth:`ParseWorker.call`): the data is the
msgpack of ``[target, args]``, a ``module:function`` of this package that
the parent names, and the reply is what it returns. Other packages use a
worker so for their own CPU work (the search indexer's text extraction)
without this module knowing them.

``python -m mailserverd.store.parseworker --nice N`` lowers the child's
priority: a worker for background work then yields its core to deliveries.

The child exits when its stdin closes, which happens also when the parent is
killed (no other process holds that pipe), so a ``kill -9`` of the daemon
leaves no worker behind. It ignores SIGINT: Ctrl-C reaches the whole process
group, and the parent decides when its workers stop.
"""

from __future__ import annotations

import importlib
import os
import signal
import struct
import subprocess
import sys
import threading

import msgpack
from twisted.logger import Logger

import mailserverd
from mailserverd.store import records
from mailserverd.store.blobs import blob_id_of

log = Logger()

_LENGTH = struct.Struct(">I")
_FACTS, _CALL = b"F", b"C"


def prepare_message(raw: bytes) -> tuple[bytes, bytes]:
    """``(blob_id, encoded facts record)`` of a message. Never raises."""
    from mailserverd.mail.facts import compute_facts

    try:
        facts = compute_facts(raw)
    except Exception as exc:  # a message must be stored even when it cannot be parsed
        print(f"mailserverd parse worker: facts of a {len(raw)}-byte message failed: {exc!r}",
              file=sys.stderr, flush=True)
        facts = {"size": len(raw)}
    return blob_id_of(raw), records.encode_facts(facts)


def _read_exact(stream, size: int) -> bytes | None:
    """``size`` bytes from ``stream``, or None at end of file."""
    data = stream.read(size)
    if data is None or len(data) < size:
        return None
    return data


def run_call(target: str, args: list):
    """Call ``target`` (``module:function``, in this package) with ``args``."""
    module, _, name = target.partition(":")
    if not module.startswith("mailserverd."):
        raise ValueError(f"not a mailserverd function: {target!r}")
    return getattr(importlib.import_module(module), name)(*args)


def _answer(request: bytes) -> object:
    """The reply to one request (kind byte, then its data)."""
    if request[:1] == _CALL:
        target, args = msgpack.unpackb(memoryview(request)[1:], raw=False)
        return run_call(target, args)
    return list(prepare_message(request[1:]))


def main(argv: list[str] | None = None) -> int:
    """The child's loop: answer each request until stdin closes."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--nice"]:
        os.nice(int(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = _read_exact(requests, _LENGTH.size)
        if header is None:
            return 0
        request = _read_exact(requests, _LENGTH.unpack(header)[0])
        if request is None:
            return 0
        reply = msgpack.packb(_answer(request), use_bin_type=True)
        del request  # not kept while waiting for the next request (it may be megabytes)
        try:
            replies.write(_LENGTH.pack(len(reply)) + reply)
            replies.flush()
        except BrokenPipeError:  # the parent is gone (kill -9): as the end of input
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
            return 0


class ParseWorker:
    """The parent's end of one worker process, used by one thread at a time.

    :meth:`parse` (and :meth:`call`) start the child on first use and again
    after it died; if the child fails mid-request the work is done in the
    calling thread instead, so a broken worker costs speed, never a message.
    ``nice`` is added to the child's nice value (background work).
    """

    def __init__(self, name: str, nice: int = 0):
        self.name = name
        self._nice = nice
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def parse(self, raw: bytes) -> tuple[bytes, bytes]:
        """``(blob_id, encoded facts)`` of ``raw``, computed in the child."""
        reply = self._ask(_FACTS, raw)
        if reply is None:
            return prepare_message(raw)
        blob_id, facts = reply
        return bytes(blob_id), bytes(facts)

    def call(self, target: str, *args):
        """``target(*args)`` (``module:function`` of this package; arguments and
        result msgpack values) computed in the child; in this process if the
        child fails. Exceptions of ``target`` itself are the caller's to avoid."""
        reply = self._ask(_CALL, msgpack.packb([target, list(args)], use_bin_type=True))
        return run_call(target, list(args)) if reply is None else reply

    def _ask(self, kind: bytes, data: bytes):
        """The child's reply to one request, or None (logged) when the child failed."""
        with self._lock:
            try:
                process = self._running()
                process.stdin.write(_LENGTH.pack(len(data) + 1) + kind)
                process.stdin.write(data)
                process.stdin.flush()
                header = _read_exact(process.stdout, _LENGTH.size)
                body = None if header is None else _read_exact(process.stdout, _LENGTH.unpack(header)[0])
                if body is None:
                    raise EOFError("parse worker closed its output")
                return msgpack.unpackb(body, raw=False)
            except (OSError, ValueError, EOFError) as exc:
                log.warn("parse worker {name} failed ({error}); working in-process",
                         name=self.name, error=str(exc) or type(exc).__name__)
                self._stop_locked(timeout=0)
        return None

    def _running(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            package_root = os.path.dirname(os.path.dirname(os.path.abspath(mailserverd.__file__)))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
            self._process = subprocess.Popen(
                [sys.executable, "-m", "mailserverd.store.parseworker", "--nice", str(self._nice)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            )
        return self._process

    def stop(self, timeout: float = 10.0) -> None:
        """Close the child's input and wait for it to exit (killing it after ``timeout``)."""
        with self._lock:
            self._stop_locked(timeout)

    def _stop_locked(self, timeout: float) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
