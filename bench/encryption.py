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
   - (after waiting for both daemons' search indexers to catch up, on their
     metrics endpoints) Postfix's ``smtp-source`` sends ``--messages`` messages of ``--size``
     bytes over ``--sessions`` sessions to the MX listener (every 250 is
     durable; the INBOX is checked to have grown by what was accepted);
   - ``UID FETCH 1:* (UID FLAGS BODY.PEEK[])`` of the filled INBOX over TLS,
     with one client and with ``--clients`` (bench/imap_fetch.py's client,
     which checks every literal's size);
4. prints the medians, the daemon's CPU per message (all its threads and
   its parse workers: the steadier figure on a shared machine), and how much
   slower the sealed daemon is (target: at most 15% for each).

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
from smtp_accept import PASSWORD, RECIPIENT, cpu_seconds, inbox_count, send, start_dns  # noqa: E402


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
    from conftest import free_ports, make_daemon, mailserverd_command

    daemons = {}
    for label in ("plain", "sealed"):
        root = workdir / label
        [metrics_port] = free_ports(1)
        tables = f'\n[metrics]\nenabled = true\naddress = "127.0.0.1"\nport = {metrics_port}\n'
        if label == "sealed":
            root.mkdir(parents=True)
            key = root / "master.key"
            subprocess.run(mailserverd_command() + ["keys", "new", str(key)], check=True, capture_output=True)
            tables += f'\n[encryption]\nmaster_key_file = "{key}"\n'
        daemon = make_daemon(root, shards=2, dns=dns, extra_config=tables)
        subprocess.run([sys.executable, __file__, "--fill-only", str(daemon.config_path),
                        "--fetch-messages", str(arguments.fetch_messages), "--size", str(arguments.size)],
                       check=True, cwd=REPO)
        daemon.ports["metrics"] = metrics_port
        daemons[label] = daemon
    return daemons


def quiet(daemons: dict) -> None:
    """Wait until both daemons' search indexers have caught up: indexing what
    was just delivered would weigh on what is measured next (more on the
    sealed side, whose index is sealed too)."""
    from e2e.search_support import wait_indexed

    for daemon in daemons.values():
        wait_indexed(daemon)


def slower(label: str, plain: list[float], sealed: list[float], cpu: dict) -> None:
    """Print the rates' medians and the daemon CPU per message of each side;
    the CPU figure is the steadier one on a shared machine."""
    plain_median, sealed_median = statistics.median(plain), statistics.median(sealed)
    plain_cpu, sealed_cpu = statistics.median(cpu["plain"]), statistics.median(cpu["sealed"])
    print(f"{label:26s} plain {plain_median:7.0f}/s {plain_cpu * 1e6:6.0f} us CPU/message   "
          f"sealed {sealed_median:7.0f}/s {sealed_cpu * 1e6:6.0f} us CPU/message   "
          f"sealed slower by {1 - sealed_median / plain_median:6.1%}, "
          f"CPU {sealed_cpu / plain_cpu - 1:+6.1%} (target: at most 15% slower)")


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
        cpu = {kind: {label: [] for label in daemons} for kind in ("smtp", 1, arguments.clients)}
        expected = (arguments.fetch_messages, len(make_message(0, arguments.size)))
        stored = {label: inbox_count(daemon) for label, daemon in daemons.items()}
        for number in range(1, arguments.runs + 1):
            quiet(daemons)
            for label, daemon in daemons.items():
                before = cpu_seconds(daemon.proc.pid)
                accepted, elapsed, error = send(daemon.ports["smtp"], arguments)
                cpu["smtp"][label].append((cpu_seconds(daemon.proc.pid) - before) / max(accepted, 1))
                now = inbox_count(daemon)
                print(f"run {number}: {label:6s} SMTP {accepted:6d} accepted in {elapsed:7.2f} s = "
                      f"{accepted / elapsed:6.0f} messages/s; INBOX +{now - stored[label]}", flush=True)
                if error:
                    print(f"  smtp-source stopped: {error}")
                if now - stored[label] != accepted:
                    raise SystemExit(f"INBOX grew by {now - stored[label]}, but {accepted} were accepted")
                stored[label] = now
                accepts[label].append(accepted / elapsed)
            quiet(daemons)
            for clients in (1, arguments.clients):
                for label, daemon in daemons.items():
                    before = cpu_seconds(daemon.proc.pid)
                    fetches[(label, clients)].append(run_fetch(
                        daemon.ports["imaps"], str(daemon.ca_path), clients, expected, f"run {number}: {label:6s} "))
                    used = cpu_seconds(daemon.proc.pid) - before
                    cpu[clients][label].append(used / (clients * arguments.fetch_messages))
        slower("SMTP accept (durable)", accepts["plain"], accepts["sealed"], cpu["smtp"])
        for clients in (1, arguments.clients):
            slower(f"UID FETCH, {clients} client(s)", fetches[("plain", clients)], fetches[("sealed", clients)],
                   cpu[clients])
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
    parser.add_argument("--fetch-messages", type=int, default=10000, help="messages in the FETCH mailbox")
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
