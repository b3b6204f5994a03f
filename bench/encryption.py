"""Encryption at rest benchmark: the same work on a daemon without and one with
a master key, side by side in one run.

Prints figures; asserts nothing about time. Steps:

1. starts a test DNS server for the sender's domain (as bench/smtp_accept.py)
   and writes two daemon configs (tests/conftest.py's make_daemon) in a
   temporary directory beside the repository: ``plain``, and ``sealed`` with
   ``[encryption] master_key_file`` naming a key made by ``mailserverd keys new``;
2. fills each, through the store API before it starts (a child process per
   daemon, opening the store as the daemon would, so with its key):
   ``--fetch-messages`` distinct messages of ``--size`` bytes in one INBOX;
3. starts both; ``--runs`` times, alternating plain and sealed:
   - Postfix's ``smtp-source`` sends ``--messages`` messages of ``--size``
     bytes over ``--sessions`` sessions to the MX listener (every 250 is
     durable; the INBOX is checked to have grown by what was accepted);
   - ``UID FETCH 1:* (UID FLAGS BODY.PEEK[])`` of the filled INBOX over TLS,
     with one client and with ``--clients`` (bench/imap_fetch.py's client,
     which checks every literal's size);
4. prints the medians and how much slower the sealed daemon is (target: at
   most 15% for each).

Run: .venv/bin/python bench/encryption.py [--messages N] [--fetch-messages N]
     [--size BYTES] [--sessions N] [--clients N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from imap_fetch import USER, make_message, run_fetch  # noqa: E402
from smtp_accept import PASSWORD, RECIPIENT, inbox_count, send, start_dns  # noqa: E402


def fill(config_path: str, count: int, size: int) -> None:
    """Create the domain and the two accounts, append ``count`` messages to
    USER's INBOX; the store is opened as the daemon opens it (with its key)."""
    from twisted.internet import task
    from twisted.internet.defer import gatherResults

    from mailserverd.auth.passwords import make_credentials
    from mailserverd.config import load_config
    from mailserverd.service import open_store

    async def main(reactor):
        store = open_store(load_config(config_path), reactor)
        store.start()
        try:
            await store.add_domain("example.test")
            credentials = make_credentials(PASSWORD, bcrypt_cost=4, scram_iterations=4096)
            for address in (USER, RECIPIENT):
                await store.add_user(address, credentials)
            window = 256  # appends in flight: enough for group commit, bounded memory
            for first in range(0, count, window):
                await gatherResults([store.append(USER, "INBOX", make_message(n, size))
                                     for n in range(first, min(count, first + window))], consumeErrors=True)
        finally:
            await store.stop()

    task.react(lambda reactor: task.Deferred.fromCoroutine(main(reactor)))


def make_pair(workdir: Path, dns, arguments) -> dict:
    """``{"plain": daemon, "sealed": daemon}``, filled, not started."""
    from conftest import make_daemon, mailserverd_command

    daemons = {}
    for label in ("plain", "sealed"):
        root = workdir / label
        tables = ""
        if label == "sealed":
            root.mkdir(parents=True)
            key = root / "master.key"
            subprocess.run(mailserverd_command() + ["keys", "new", str(key)], check=True, capture_output=True)
            tables = f'\n[encryption]\nmaster_key_file = "{key}"\n'
        daemon = make_daemon(root, shards=2, dns=dns, extra_config=tables)
        subprocess.run([sys.executable, __file__, "--fill-only", str(daemon.config_path),
                        "--fetch-messages", str(arguments.fetch_messages), "--size", str(arguments.size)],
                       check=True, cwd=REPO)
        daemons[label] = daemon
    return daemons


def slower(label: str, plain: list[float], sealed: list[float]) -> None:
    plain_median, sealed_median = statistics.median(plain), statistics.median(sealed)
    print(f"{label:28s} plain median {plain_median:8.0f}/s   sealed median {sealed_median:8.0f}/s   "
          f"sealed slower by {1 - sealed_median / plain_median:6.1%} (target <= 15%)")


def run(arguments, workdir: Path) -> None:
    dns = start_dns()
    daemons = {}
    try:
        daemons = make_pair(workdir, dns, arguments)
        for daemon in daemons.values():
            daemon.start()
        print(f"work dir: {workdir} (same disk as the repository); cpus: {os.cpu_count()}; "
              f"SMTP: {arguments.messages} messages of {arguments.size} bytes over {arguments.sessions} "
              f"sessions; FETCH: {arguments.fetch_messages} messages", flush=True)
        accepts = {label: [] for label in daemons}
        fetches = {(label, clients): [] for label in daemons for clients in (1, arguments.clients)}
        expected = (arguments.fetch_messages, len(make_message(0, arguments.size)))
        stored = {label: inbox_count(daemon) for label, daemon in daemons.items()}
        for number in range(1, arguments.runs + 1):
            for label, daemon in daemons.items():
                accepted, elapsed, error = send(daemon.ports["smtp"], arguments)
                now = inbox_count(daemon)
                print(f"run {number}: {label:6s} SMTP {accepted:6d} accepted in {elapsed:7.2f} s = "
                      f"{accepted / elapsed:6.0f} messages/s; INBOX +{now - stored[label]}", flush=True)
                if error:
                    print(f"  smtp-source stopped: {error}")
                if now - stored[label] != accepted:
                    raise SystemExit(f"INBOX grew by {now - stored[label]}, but {accepted} were accepted")
                stored[label] = now
                accepts[label].append(accepted / elapsed)
            for clients in (1, arguments.clients):
                for label, daemon in daemons.items():
                    fetches[(label, clients)].append(run_fetch(
                        daemon.ports["imaps"], str(daemon.ca_path), clients, expected, f"run {number}: {label:6s} "))
        slower("SMTP accept (durable)", accepts["plain"], accepts["sealed"])
        for clients in (1, arguments.clients):
            slower(f"UID FETCH, {clients} client(s)", fetches[("plain", clients)], fetches[("sealed", clients)])
        for daemon in daemons.values():
            daemon.stop()
    finally:
        for daemon in daemons.values():
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill()
        dns.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="SMTP messages per run")
    parser.add_argument("--fetch-messages", type=int, default=5000, help="messages in the FETCH mailbox")
    parser.add_argument("--size", type=int, default=20 * 1024, help="bytes per message")
    parser.add_argument("--sessions", type=int, default=50, help="parallel SMTP sessions")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the second FETCH")
    parser.add_argument("--runs", type=int, default=3, help="runs against each daemon, alternating")
    parser.add_argument("--fill-only", metavar="CONFIG", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    arguments.reuse = False  # smtp_accept.send's: one message per session, as MX traffic comes
    if arguments.fill_only:
        fill(arguments.fill_only, arguments.fetch_messages, arguments.size)
        return
    workdir = Path(tempfile.mkdtemp(prefix=".encryption-bench-", dir=str(REPO)))
    try:
        run(arguments, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
