"""IMAP benchmark: UID FETCH of a large mailbox over TLS, SELECT of a huge one, memory in IDLE.

Prints figures; asserts nothing about time. Steps:

1. writes a daemon config (tests/conftest.py's make_daemon: trustme CA, free
   127.0.0.1 ports; connection limits raised for the IDLE run) in a temporary
   directory beside the repository, and raises RLIMIT_NOFILE (the daemon
   inherits it);
2. in a child process, through the store API before the daemon starts (so the
   fill is not what is measured): ``--messages`` distinct messages of
   ``--size`` bytes in one INBOX, and ``--select-messages`` small messages in
   another account's INBOX;
3. starts ``mailserverd serve`` and measures with a raw-socket TLS client that
   parses literals itself (imaplib would be the bottleneck):
   - ``UID FETCH 1:* (UID FLAGS BODY.PEEK[])`` of the whole mailbox with 1 and
     with ``--clients`` concurrent clients (processes; each fetches the whole
     mailbox in its own session): messages/s and MB/s from the barrier to the
     last tagged OK; every literal's length is checked;
   - first, on the fresh daemon, its VmRSS (and RssAnon) before and with
     ``--idle`` connections logged in, SELECTed and in IDLE;
   - SELECT of the ``--select-messages`` mailbox (tagged OK time, 5 runs).

Targets quoted by the issue: 5,000 messages/s with 20 clients; SELECT of
100,000 messages < 300 ms; 5,000 IDLE connections < 500 MB.

Run: .venv/bin/python bench/imap_fetch.py [--messages N] [--size BYTES] [--clients N]
     [--select-messages N] [--idle N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

USER = "bench@example.test"  # the FETCH mailbox
BIG_USER = "big@example.test"  # the SELECT mailbox
IDLE_USER = "idle@example.test"  # an empty INBOX for the IDLE connections
PASSWORD = "bench-password-1"
LINE = b"the quick brown fox jumps over the lazy dog while the mail server streams it out\r\n"
RECV_SIZE = 256 * 1024


def make_message(serial: int, size: int) -> bytes:
    """A ``size``-byte message, distinct per ``serial`` (so each is its own blob)."""
    header = (f"From: Sender <a@remote.test>\r\nTo: {USER}\r\nSubject: bench {serial}\r\n"
              f"Message-ID: <{serial}.bench@remote.test>\r\n\r\n").encode()
    body = LINE * (size // len(LINE) + 1)
    return header + body[: size - len(header) - 2] + b"\r\n"


# --- the fill (child process, under the reactor) ----------------------------

def fill(data_dir: str, shards: int, count: int, size: int, select_count: int) -> None:
    """Create the accounts and append the messages; runs the reactor."""
    from twisted.internet import task
    from twisted.internet.defer import gatherResults

    from mailserverd.auth.passwords import make_credentials
    from mailserverd.limits import Limits
    from mailserverd.store.lmdbstore import LMDBStore

    async def append_all(store, user: str, total: int, make) -> None:
        window = 256  # appends in flight: enough for group commit, bounded memory
        for first in range(0, total, window):
            await gatherResults([store.append(user, "INBOX", make(n))
                                 for n in range(first, min(total, first + window))], consumeErrors=True)

    async def main(reactor):
        store = LMDBStore.open(data_dir, shards, Limits())
        store.start()
        try:
            await store.add_domain("example.test")
            credentials = make_credentials(PASSWORD, bcrypt_cost=4, scram_iterations=4096)
            for address in (USER, BIG_USER, IDLE_USER):
                await store.add_user(address, credentials)
            await append_all(store, USER, count, lambda n: make_message(n, size))
            await append_all(store, BIG_USER, select_count, lambda n: make_message(n, 1024))
        finally:
            await store.stop()

    task.react(lambda reactor: task.Deferred.fromCoroutine(main(reactor)))


# --- a raw IMAP client --------------------------------------------------------

class RawImap:
    """A blocking TLS IMAP client that reads responses and literals itself."""

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float = 600):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.buf = bytearray()
        self.pos = 0
        self.serial = 0
        self._line()  # greeting

    def _fill(self) -> None:
        if self.pos > 4 * RECV_SIZE:
            del self.buf[:self.pos]
            self.pos = 0
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos:end])
                self.pos = end + 2
                return line
            self._fill()

    def _skip(self, count: int) -> None:
        while len(self.buf) - self.pos < count:
            self._fill()
        self.pos += count

    def send(self, text: bytes) -> bytes:
        """Send ``tag SP text``; return the tag."""
        self.serial += 1
        tag = b"t%d" % self.serial
        self.sock.sendall(tag + b" " + text + b"\r\n")
        return tag

    def command(self, text: bytes, literal_size: int | None = None) -> tuple[int, int, bytes]:
        """Run a command; return (FETCH responses, literal octets, tagged line).

        Checks that every literal is ``literal_size`` bytes when given. Raises
        on a tagged reply other than OK.
        """
        tag = self.send(text)
        fetches = octets = 0
        prefix = tag + b" "
        while True:
            line = self._line()
            if line.startswith(b"* ") and b" FETCH (" in line:
                fetches += 1
            if line.endswith(b"}"):
                size = int(line[line.rindex(b"{") + 1:-1])
                if literal_size is not None and size != literal_size:
                    raise AssertionError(f"literal of {size} bytes, expected {literal_size}")
                self._skip(size)
                octets += size
                continue  # the response goes on after the literal
            if line.startswith(prefix):
                if not line.startswith(prefix + b"OK"):
                    raise AssertionError(line.decode("ascii", "replace"))
                return fetches, octets, line

    def login(self, user: str) -> None:
        self.command(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))

    def idle(self) -> None:
        """Start IDLE and wait for the continuation (RFC 2177 §3)."""
        self.send(b"IDLE")
        while not self._line().startswith(b"+"):
            pass

    def close(self) -> None:
        self.sock.close()


def fetch_client(port: int, ca: str, barrier, expected: tuple[int, int]) -> tuple:
    """Log in, EXAMINE, wait at ``barrier``, ``UID FETCH 1:* (UID FLAGS BODY.PEEK[])``.

    Returns (messages, octets, start, end)."""
    client = RawImap(port, ssl.create_default_context(cafile=ca))
    client.login(USER)
    client.command(b"EXAMINE INBOX")
    barrier.wait(timeout=300)
    start = time.monotonic()
    messages, octets, _ = client.command(b"UID FETCH 1:* (UID FLAGS BODY.PEEK[])", literal_size=expected[1])
    end = time.monotonic()
    if messages != expected[0]:
        raise AssertionError(f"{messages} FETCH responses, expected {expected[0]}")
    client.command(b"LOGOUT")
    client.close()
    return messages, octets, start, end


def run_fetch(port: int, ca: str, clients: int, expected: tuple[int, int], label: str = "") -> float:
    """Run ``clients`` fetch processes; print messages/s and MB/s over the whole
    run (after ``label``), and return the messages/s."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(clients)
        with ctx.Pool(clients) as pool:
            results = pool.starmap(fetch_client, [(port, ca, barrier, expected)] * clients)
    messages = sum(r[0] for r in results)
    octets = sum(r[1] for r in results)
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    print(f"{label}UID FETCH 1:* (UID FLAGS BODY.PEEK[]) {clients:3d} client(s): {messages / elapsed:8.0f} "
          f"messages/s {octets / elapsed / 1e6:7.1f} MB/s  ({messages} messages in {elapsed:6.2f} s)", flush=True)
    return messages / elapsed


def run_select(port: int, ca: str, count: int) -> None:
    """SELECT the big mailbox 5 times; print each tagged-OK time."""
    client = RawImap(port, ssl.create_default_context(cafile=ca))
    client.login(BIG_USER)
    times = []
    for _ in range(5):
        start = time.monotonic()
        client.command(b"SELECT INBOX")
        times.append(time.monotonic() - start)
        client.command(b"UNSELECT")
    client.close()
    print(f"SELECT of {count} messages: min {min(times) * 1000:.0f} ms, median "
          f"{statistics.median(times) * 1000:.0f} ms, first {times[0] * 1000:.0f} ms", flush=True)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """``field`` of /proc/PID/status (VmRSS, RssAnon, RssFile) summed over ``pid`` and
    its child processes (the store's parse workers), in KiB. RssFile is mostly
    LMDB's memory map (page cache the kernel can drop), RssAnon the heap."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def run_idle(port: int, ca: str, pid: int, count: int) -> None:
    """Open ``count`` connections in IDLE; print the daemon's memory before and with them."""
    context = ssl.create_default_context(cafile=ca)
    before = rss_kib(pid)
    anon_before = rss_kib(pid, "RssAnon")
    clients = []
    start = time.monotonic()
    try:
        for _ in range(count):
            client = RawImap(port, context)
            client.login(IDLE_USER)
            client.command(b"SELECT INBOX")
            client.idle()
            clients.append(client)
        opened = time.monotonic() - start
        time.sleep(1)  # let the daemon settle; a measurement, not a synchronisation
        with_idle = rss_kib(pid)
        anon = rss_kib(pid, "RssAnon")
        print(f"IDLE: {count} connections opened (TLS, LOGIN, SELECT, IDLE) in {opened:.1f} s; daemon VmRSS "
              f"{before / 1024:.0f} MiB before, {with_idle / 1024:.0f} MiB with them (RssAnon "
              f"{anon_before / 1024:.0f} -> {anon / 1024:.0f} MiB; "
              f"{(with_idle - before) / count:.1f} KiB per connection)", flush=True)
    finally:
        for client in clients:
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the FETCH mailbox")
    parser.add_argument("--size", type=int, default=20 * 1024, help="bytes per message")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients of the second FETCH run")
    parser.add_argument("--select-messages", type=int, default=100_000, help="messages in the SELECT mailbox")
    parser.add_argument("--idle", type=int, default=5_000, help="connections in IDLE")
    parser.add_argument("--fill-only", nargs=2, metavar=("DATA_DIR", "SHARDS"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.fill_only:
        fill(arguments.fill_only[0], int(arguments.fill_only[1]), arguments.messages, arguments.size,
             arguments.select_messages)
        return

    from conftest import make_daemon, raise_nofile

    nofile = raise_nofile(arguments.idle * 2 + 1000)  # client and daemon ends, plus headroom
    workdir = Path(tempfile.mkdtemp(prefix=".imap-bench-", dir=str(REPO)))
    daemon = None
    try:
        shards = 2
        connections = arguments.idle + arguments.clients + 100
        daemon = make_daemon(workdir / "d", shards=shards, extra_config=(
            f"connections_max = {connections}\nconnections_per_ip_max = {connections}\n"))
        print(f"work dir: {workdir} (same disk as the repository); cpus: {os.cpu_count()}; "
              f"RLIMIT_NOFILE {nofile}", flush=True)
        started = time.monotonic()
        subprocess.run([sys.executable, __file__, "--messages", str(arguments.messages),
                        "--size", str(arguments.size), "--select-messages", str(arguments.select_messages),
                        "--fill-only", str(daemon.data_dir), str(shards)], check=True, cwd=REPO)
        print(f"filled {arguments.messages} messages of {arguments.size} bytes and "
              f"{arguments.select_messages} of 1 KiB through the store API in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        daemon.start()
        port = daemon.ports["imaps"]
        ca = str(daemon.ca_path)
        expected = (arguments.messages, len(make_message(0, arguments.size)))
        # IDLE first, on a fresh daemon: what the connections cost, not what FETCH left behind.
        run_idle(port, ca, daemon.proc.pid, arguments.idle)
        for clients in (1, arguments.clients):
            run_fetch(port, ca, clients, expected)
        run_select(port, ca, arguments.select_messages)
        daemon.stop()
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
