"""POP3 benchmark: RETR of a large maildrop over TLS (995), IMAP FETCH over 993 as the reference.

Prints figures; asserts nothing about time. Steps:

1. writes a daemon config (tests/conftest.py's make_daemon: trustme CA, free
   127.0.0.1 ports) in a temporary directory beside the repository;
2. fills one mailbox with ``--messages`` messages of ``--size`` bytes, each
   distinct, and the same messages again spread over ``--clients`` other
   mailboxes, through the store API in a child process before the daemon
   starts (so the fill is not what is measured);
3. starts ``mailserverd serve`` and measures, with Python's own clients,
   - POP3 over 995: login (the maildrop snapshot), then RETR of every message,
     with 1 client on the full mailbox, and with ``--clients`` concurrent
     clients (separate processes), each on its own mailbox: a POP3 maildrop
     takes one session at a time (a second gets ``-ERR [IN-USE]``);
   - IMAP over 993: SELECT, then FETCH n (BODY.PEEK[]) of every message, one
     per command, with 1 and with ``--clients`` clients, the same way.

Each client process logs in, waits at a barrier, then retrieves; a run's time
is from the barrier to the last client's last message. Every retrieved
message's length is checked against the stored size.

Run: .venv/bin/python bench/pop3_retr.py [--messages N] [--clients N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import imaplib
import multiprocessing
import os
import poplib
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

USER = "bench@example.test"  # holds every message


def share_user(share: int) -> str:
    """The account of concurrent client ``share``: messages share, share + clients, ..."""
    return f"bench{share}@example.test"

PASSWORD = "bench-password-1"
LINE = b"the quick brown fox jumps over the lazy dog while the mail server streams it out\r\n"


def make_message(serial: int, size: int) -> bytes:
    """A ``size``-byte message, distinct per ``serial`` (so each is its own blob)."""
    header = (f"From: Sender <a@remote.test>\r\nTo: {USER}\r\nSubject: bench {serial}\r\n"
              f"Message-ID: <{serial}.bench@remote.test>\r\n\r\n").encode()
    body = LINE * (size // len(LINE) + 1)
    message = header + body[: size - len(header) - 2] + b"\r\n"
    return message


# --- the fill (child process, under the reactor) ----------------------------

def fill(data_dir: str, shards: int, count: int, size: int, clients: int) -> None:
    """Create the accounts and append the messages to their INBOXes; runs the reactor."""
    from twisted.internet import task
    from twisted.internet.defer import gatherResults

    from mailserverd.auth.passwords import make_credentials
    from mailserverd.limits import Limits
    from mailserverd.store.lmdbstore import LMDBStore

    async def main(reactor):
        store = LMDBStore.open(data_dir, shards, Limits())
        store.start()
        try:
            await store.add_domain("example.test")
            credentials = make_credentials(PASSWORD, bcrypt_cost=4, scram_iterations=4096)
            for address in [USER, *(share_user(i) for i in range(clients))]:
                await store.add_user(address, credentials)
            window = 200  # appends in flight: enough for group commit, bounded memory
            for first in range(0, count, window):
                batch = []
                for n in range(first, min(count, first + window)):
                    message = make_message(n, size)
                    batch.append(store.append(USER, "INBOX", message))
                    batch.append(store.append(share_user(n % clients), "INBOX", message))
                await gatherResults(batch, consumeErrors=True)
        finally:
            await store.stop()

    task.react(lambda reactor: task.Deferred.fromCoroutine(main(reactor)))


# --- the clients (one process each) ------------------------------------------

def pop3_client(port: int, ca: str, share: int, clients: int, barrier, expected_size: int) -> tuple:
    """Log in over 995 (the full mailbox alone, else mailbox ``share``), wait at ``barrier``, RETR all.

    Returns (messages, octets, start, end, login seconds)."""
    context = ssl.create_default_context(cafile=ca)
    client = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=300)
    started = time.monotonic()
    client.user(USER if clients == 1 else share_user(share))
    client.pass_(PASSWORD)
    login = time.monotonic() - started
    count, _ = client.stat()
    barrier.wait(timeout=120)
    start = time.monotonic()
    octets = done = 0
    for number in range(1, count + 1):
        _resp, lines, _ = client.retr(number)
        length = sum(len(line) + 2 for line in lines)
        if length != expected_size:
            raise AssertionError(f"message {number}: {length} octets, expected {expected_size}")
        octets += length
        done += 1
    end = time.monotonic()
    client.quit()
    return done, octets, start, end, login


def imap_client(port: int, ca: str, share: int, clients: int, barrier, expected_size: int) -> tuple:
    """Log in over 993 and SELECT like pop3_client, wait at ``barrier``, FETCH n (BODY.PEEK[]) of each."""
    context = ssl.create_default_context(cafile=ca)
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=300)
    started = time.monotonic()
    client.login(USER if clients == 1 else share_user(share), PASSWORD)
    typ, data = client.select("INBOX", readonly=True)
    login = time.monotonic() - started
    count = int(data[0])
    barrier.wait(timeout=120)
    start = time.monotonic()
    octets = done = 0
    for number in range(1, count + 1):
        typ, data = client.fetch(str(number), "(BODY.PEEK[])")
        [literal] = [part[1] for part in data if isinstance(part, tuple)]
        if typ != "OK" or len(literal) != expected_size:
            raise AssertionError(f"message {number}: {typ} {len(literal)} octets, expected {expected_size}")
        octets += len(literal)
        done += 1
    end = time.monotonic()
    client.logout()
    return done, octets, start, end, login


def run_clients(kind: str, target, port: int, ca: str, clients: int, count: int, expected_size: int) -> None:
    """Run ``clients`` client processes and print messages/s and MB/s for the whole run."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(clients)
        with ctx.Pool(clients) as pool:
            results = pool.starmap(target, [(port, ca, share, clients, barrier, expected_size)
                                            for share in range(clients)])
    messages = sum(r[0] for r in results)
    octets = sum(r[1] for r in results)
    if messages != count:
        raise AssertionError(f"{kind}: retrieved {messages} of {count} messages")
    elapsed = max(r[3] for r in results) - min(r[2] for r in results)
    login = max(r[4] for r in results)
    print(f"{kind:34s} {clients:3d} client(s): {messages / elapsed:8.0f} messages/s  "
          f"{octets / elapsed / 1e6:7.1f} MB/s  ({messages} messages in {elapsed:6.2f} s; "
          f"slowest login+snapshot {login * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the mailbox")
    parser.add_argument("--size", type=int, default=20 * 1024, help="bytes per message as sent")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients of the second run")
    parser.add_argument("--fill-only", nargs=2, metavar=("DATA_DIR", "SHARDS"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.fill_only:
        fill(arguments.fill_only[0], int(arguments.fill_only[1]), arguments.messages, arguments.size,
             arguments.clients)
        return

    from conftest import make_daemon

    workdir = Path(tempfile.mkdtemp(prefix=".pop3-bench-", dir=str(REPO)))
    daemon = None
    try:
        shards = 2
        daemon = make_daemon(workdir / "d", shards=shards)
        print(f"work dir: {workdir} (same disk as the repository); cpus: {os.cpu_count()}")
        started = time.monotonic()
        subprocess.run([sys.executable, __file__, "--messages", str(arguments.messages),
                        "--size", str(arguments.size), "--clients", str(arguments.clients),
                        "--fill-only", str(daemon.data_dir), str(shards)],
                       check=True, cwd=REPO)
        print(f"filled {arguments.messages} messages of {arguments.size} bytes through the store API "
              f"in {time.monotonic() - started:.1f} s")
        daemon.users[USER] = PASSWORD
        daemon.start()
        ca = str(daemon.ca_path)
        # The stored message is the appended one: the store adds no trace header on APPEND.
        expected = len(make_message(0, arguments.size))
        for clients in (1, arguments.clients):
            run_clients("POP3 RETR over TLS (995)", pop3_client, daemon.ports["pop3s"], ca,
                        clients, arguments.messages, expected)
            run_clients("IMAP FETCH BODY.PEEK[] over TLS (993)", imap_client, daemon.ports["imaps"], ca,
                        clients, arguments.messages, expected)
        daemon.stop()
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
