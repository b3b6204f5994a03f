"""IMAP APPEND memory: what one large APPEND costs the daemon, and the IMAP framing alone.

Prints figures; asserts nothing. Two measurements:

1. the framing layer in this process: a ``--size``-byte literal fed to
   :class:`~mailserverd.imap.parser.CommandReader` in 64 KiB chunks (as the
   transport delivers them) and taken out with ``ArgCursor.literal``;
   tracemalloc's peak beyond the literal itself, in copies of the literal;
2. the real daemon (tests/conftest.py's make_daemon: trustme CA, free
   127.0.0.1 ports, ``message_size_max`` raised to fit): a raw TLS client
   sends ``APPEND INBOX {size}`` and the message in 64 KiB writes while a
   sampler reads the daemon's RssAnon (heap, its parse workers included)
   every few milliseconds; printed: before, peak during, and after the
   tagged OK (what stays allocated once the store has the message).

Run: .venv/bin/python bench/imap_append_memory.py [--size BYTES] [--binary]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

CHUNK = 64 * 1024
USER = "bench@example.test"
PASSWORD = "bench-password-1"


def make_message(size: int, binary: bool) -> bytes:
    """A ``size``-byte message; with ``binary`` its body is octets with NULs."""
    header = (b"From: a@remote.test\r\nTo: " + USER.encode() + b"\r\nSubject: big\r\n"
              b"Content-Type: application/octet-stream\r\n"
              + (b"Content-Transfer-Encoding: binary\r\n" if binary else b"") + b"\r\n")
    line = (bytes(range(256)) if binary else b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n")
    body = line * ((size - len(header)) // len(line) + 1)
    return header + body[:size - len(header)]


def measure_framing(message: bytes) -> None:
    """Print tracemalloc's peak while framing ``message`` as an APPEND literal."""
    from mailserverd.imap.parser import ArgCursor, CommandReader, FramedCommand

    reader = CommandReader(8192, lambda first, size, total: True)
    binary = message.find(b"\x00") >= 0
    head = b"a APPEND INBOX " + (b"~" if binary else b"") + b"{%d+}\r\n" % len(message)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    reader.feed(head)
    assert reader.next_event() is None
    for start in range(0, len(message), CHUNK):
        reader.feed(message[start:start + CHUNK])
        assert reader.next_event() is None
    reader.feed(b"\r\n")
    framed = reader.next_event()
    assert isinstance(framed, FramedCommand)
    cursor = ArgCursor(framed.segments)
    cursor.match(re.compile(rb"a APPEND INBOX "), "head")
    data = cursor.literal8() if binary else cursor.literal()
    assert data == message
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = len(message)
    print(f"framing {size / 1e6:.0f} MB in {CHUNK // 1024} KiB chunks: peak {(peak - base) / 1e6:.1f} MB "
          f"({(peak - base) / size:.2f} x the literal), held after {(held - base) / 1e6:.1f} MB", flush=True)


def own_anon_kib(pid: int) -> int:
    """RssAnon of ``pid`` alone, in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def anon_kib(pid: int) -> tuple[int, int]:
    """(RssAnon of the daemon with its parse workers, of the daemon process alone), KiB.

    The workers are started by the store's pool threads, so they are found
    among the children of every thread, not only the main one's.
    """
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except FileNotFoundError:
            pass
    own = own_anon_kib(pid)
    return own + sum(own_anon_kib(child) for child in children), own


class Sampler(threading.Thread):
    """Reads :func:`anon_kib` every few milliseconds until stopped; keeps the peaks."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = (0, 0)
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = tuple(map(max, self.peak, anon_kib(self.pid)))
            time.sleep(0.003)

    def stop(self) -> tuple[int, int]:
        self.running = False
        self.join()
        return self.peak


def measure_daemon(message: bytes) -> None:
    """Print the daemon's RssAnon before, at its peak during, and after one APPEND."""
    from clients import RawImap
    from conftest import make_daemon, wait_for

    workdir = Path(tempfile.mkdtemp(prefix=".imap-append-bench-", dir=str(REPO)))
    daemon = None
    try:
        limit = max(len(message), 64 * 1024)
        daemon = make_daemon(workdir / "d", shards=1, extra_config=(
            f"message_size_max = {limit}\nimap_append_bytes_max = {max(limit, 128 * 1024 * 1024)}\n"))
        daemon.cli("domain", "add", "example.test")
        daemon.add_user(USER, PASSWORD)
        daemon.start()
        pid = daemon.proc.pid
        client = RawImap(daemon)
        client.login(USER)
        assert client.command(b"w", b"NOOP")[-1].startswith(b"w OK")
        before = anon_kib(pid)
        sampler = Sampler(pid)
        sampler.start()
        marker = b"~{%d}" if b"\x00" in message else b"{%d}"
        client.send(b"a APPEND INBOX " + marker % len(message) + b"\r\n")
        assert client.read_line().startswith(b"+ ")
        started = time.monotonic()
        for start in range(0, len(message), CHUNK):
            client.send(message[start:start + CHUNK])
        client.send(b"\r\n")
        reply = client.until_tagged(b"a")[-1]
        elapsed = time.monotonic() - started
        assert reply.startswith(b"a OK [APPENDUID "), reply
        peak = sampler.stop()
        # What stays: a second of samples once the reply is in, the lowest kept.
        settled = [anon_kib(pid)]
        wait_for(lambda: settled.append(anon_kib(pid)) or len(settled) > 20, timeout=30,
                 interval=0.05, what="samples")
        after = tuple(map(min, *settled[-10:]))
        size = len(message)
        kind = "literal8 with NULs" if b"\x00" in message else "literal"
        print(f"daemon APPEND of {size / 1e6:.0f} MB ({kind}) in {elapsed:.1f} s:", flush=True)
        for which, label in ((0, "with its parse workers"), (1, "daemon process alone")):
            print(f"  RssAnon {label}: {before[which] / 1024:.0f} MiB before, peak "
                  f"{peak[which] / 1024:.0f} MiB (+{(peak[which] - before[which]) * 1024 / size:.2f} x "
                  f"the message), {after[which] / 1024:.0f} MiB after "
                  f"(+{(after[which] - before[which]) / 1024:.0f} MiB)", flush=True)
        client.command(b"z", b"LOGOUT")
        client.close()
        daemon.stop()
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=50_000_000, help="bytes in the message")
    parser.add_argument("--binary", action="store_true", help="a literal8 whose body holds NULs")
    arguments = parser.parse_args()
    message = make_message(arguments.size, arguments.binary)
    measure_framing(message)
    measure_daemon(message)


if __name__ == "__main__":
    main()
