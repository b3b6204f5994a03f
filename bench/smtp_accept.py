"""SMTP accept benchmark: Postfix's smtp-source into our MX listener, and into smtp-sink as the ceiling.

Prints figures; asserts nothing about time. Steps:

1. starts a test DNS server (tests/dnsserver.py) that answers for the
   sender's domain (A, SPF, DMARC), so the daemon's SPF/DKIM/DMARC checks get
   local answers, and writes a daemon config pointing at it (tests/conftest.py's
   make_daemon: trustme CA, free 127.0.0.1 ports) in a temporary directory
   beside the repository;
2. starts ``mailserverd serve`` and Postfix's ``smtp-sink`` (accepts and
   discards, stores nothing) on another free port;
3. ``--runs`` times, alternating: ``smtp-source`` sends ``--messages``
   messages with ``--size`` bytes of payload over ``--sessions`` parallel SMTP
   sessions (one message per session, as MX traffic comes, unless
   ``--reuse``), to our MX listener, then the same to smtp-sink; a run's time
   is smtp-source's wall-clock time;
4. after each of our runs, checks over IMAP that the INBOX grew by exactly the
   number of messages smtp-source counted as accepted: smtp-source stops at
   the first reply that is not 2xx, and every 250 must mean a stored message
   (RFC 5321 §4.2.5: the reply is sent only once the message is durable).

Prints messages/s of each run, the medians, and ours as a share of smtp-sink's.

``--no-checks`` and ``--log-level`` are diagnostics: they show what the
inbound checks and the log lines cost. ``--profile FILE`` runs the daemon under cProfile (the reactor thread only;
the store's writer threads are not in it) and prints its top functions.

Run: .venv/bin/python bench/smtp_accept.py [--messages N] [--sessions N] [--size BYTES] [--runs N]
"""

from __future__ import annotations

import argparse
import imaplib
import os
import pstats
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

RECIPIENT = "alice@example.test"
PASSWORD = "bench-password-1"
SENDER = "bench@remote.test"
CLIENT_NAME = "client.remote.test"  # smtp-source's HELO name


def program(name: str) -> str:
    """The path of a Postfix test program, or exit naming the Debian package."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit(f"{name} not found: install the Debian package postfix")


def start_dns():
    """A TestDNSServer with passing SPF and a DMARC record for the sender's domain."""
    from dnsserver import TestDNSServer

    dns = TestDNSServer().start()
    dns.add("remote.test", "A", "127.0.0.1")
    dns.add(CLIENT_NAME, "A", "127.0.0.1")
    dns.add("remote.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns.add("_dmarc.remote.test", "TXT", "v=DMARC1; p=none")
    dns.add("1.0.0.127.in-addr.arpa", "PTR", f"{CLIENT_NAME}.")
    return dns


def start_sink(port: int) -> subprocess.Popen:
    """Postfix's smtp-sink on 127.0.0.1:``port``; it needs an unprivileged user when run as root."""
    command = [program("smtp-sink")]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    command += [f"127.0.0.1:{port}", "256"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def send(port: int, arguments) -> tuple[int, float, str]:
    """Run smtp-source against 127.0.0.1:``port``; return (messages accepted, seconds, error text)."""
    command = [program("smtp-source"), "-c", "-s", str(arguments.sessions),
               "-l", str(arguments.size), "-m", str(arguments.messages), "-M", CLIENT_NAME,
               "-f", SENDER, "-t", RECIPIENT]
    if arguments.reuse:
        command.append("-d")
    command.append(f"127.0.0.1:{port}")
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, timeout=3600)
    elapsed = time.monotonic() - started
    # -c prints the running count of completed DATA commands, each after a CR.
    counts = re.findall(rb"(\d+)", result.stdout)
    accepted = int(counts[-1]) if counts else 0
    error = "" if result.returncode == 0 else result.stderr.decode(errors="replace").strip()
    return accepted, elapsed, error


def inbox_count(daemon) -> int:
    """Messages in the recipient's INBOX (SELECT's EXISTS), read over IMAPS."""
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=300)
    try:
        client.login(RECIPIENT, PASSWORD)
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK", data
        return int(data[0])
    finally:
        client.logout()


def profiled_command(profile_path: Path):
    """The daemon command line under cProfile (replaces conftest's, for ``serve`` only)."""
    return lambda: [sys.executable, "-m", "cProfile", "-o", str(profile_path), "-m", "mailserverd"]


def diagnostic_config(arguments) -> str:
    """Config tables for the diagnostic switches (which part of the cost is what)."""
    tables = ""
    if arguments.no_checks:
        tables += "\n[inbound]\nspf = false\ndkim = false\ndmarc = false\n"
    if arguments.log_level:
        tables += f'\n[log]\nlevel = "{arguments.log_level}"\n'
    return tables


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process (all its threads) and its running child
    processes (the store's parse workers) have used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += cpu_seconds(int(child))
            except OSError:
                pass  # it exited meanwhile
    return total


def report(label: str, rates: list[float]) -> float:
    median = statistics.median(rates)
    runs = ", ".join(f"{rate:.0f}" for rate in rates)
    print(f"{label:34s} median {median:8.0f} messages/s   (runs: {runs})")
    return median


def run(arguments, workdir: Path) -> None:
    import conftest
    from conftest import free_ports, make_daemon

    dns = start_dns()
    daemon = sink = None
    try:
        daemon = make_daemon(workdir / "d", shards=arguments.shards, dns=dns,
                             extra_config=diagnostic_config(arguments))
        daemon.cli("domain", "add", "example.test")
        daemon.add_user(RECIPIENT, PASSWORD)
        if arguments.profile:
            conftest.mailserverd_command = profiled_command(Path(arguments.profile).resolve())
        daemon.start()
        [sink_port] = free_ports(1)
        sink = start_sink(sink_port)
        conftest.wait_for(lambda: _accepts(sink_port), timeout=30, what="smtp-sink")
        print(f"work dir: {workdir} (same disk as the repository); cpus: {os.cpu_count()}; "
              f"{arguments.messages} messages of {arguments.size} bytes payload over "
              f"{arguments.sessions} sessions ({'reused' if arguments.reuse else 'one per message'})")

        ours, ceiling, cpu_per_message = [], [], []
        stored = inbox_count(daemon)
        for number in range(1, arguments.runs + 1):
            cpu_before = cpu_seconds(daemon.proc.pid)
            accepted, elapsed, error = send(daemon.ports["smtp"], arguments)
            cpu = cpu_seconds(daemon.proc.pid) - cpu_before
            now = inbox_count(daemon)
            cpu_per_message.append(cpu / max(accepted, 1))
            print(f"run {number}: mailserverd MX  {accepted:6d} accepted in {elapsed:7.2f} s = "
                  f"{accepted / elapsed:7.0f} messages/s; INBOX +{now - stored}; "
                  f"daemon CPU {cpu / max(accepted, 1) * 1000:.2f} ms/message")
            if error:
                print(f"  smtp-source stopped: {error}")
            if now - stored != accepted:
                raise SystemExit(f"INBOX grew by {now - stored}, but {accepted} messages were accepted")
            stored = now
            ours.append(accepted / elapsed)
            accepted, elapsed, error = send(sink_port, arguments)
            print(f"run {number}: smtp-sink       {accepted:6d} accepted in {elapsed:7.2f} s = "
                  f"{accepted / elapsed:7.0f} messages/s")
            if error:
                print(f"  smtp-source stopped: {error}")
            ceiling.append(accepted / elapsed)
        mine = report("mailserverd MX (durable)", ours)
        best = report("smtp-sink (no storage)", ceiling)
        print(f"mailserverd / smtp-sink: {mine / best:.0%} (target >= 50%)")
        # What the machine can reach at all: every message costs this much CPU (all
        # threads and the parse worker processes), whatever the parallelism.
        per_message = statistics.median(cpu_per_message)
        print(f"daemon CPU per message: median {per_message * 1000:.2f} ms "
              f"(at most {os.cpu_count() / per_message:.0f} messages/s on {os.cpu_count()} cpus "
              f"with nothing else running)")
        daemon.stop()
        if arguments.profile:
            print(f"\nprofile of the daemon's main thread ({arguments.profile}):")
            pstats.Stats(arguments.profile).sort_stats("tottime").print_stats(25)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(timeout=30)
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        dns.stop()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per run")
    parser.add_argument("--size", type=int, default=20 * 1024, help="payload bytes per message")
    parser.add_argument("--sessions", type=int, default=50, help="parallel SMTP sessions")
    parser.add_argument("--runs", type=int, default=3, help="runs against each server, alternating")
    parser.add_argument("--shards", type=int, default=2, help="store shards of the daemon")
    parser.add_argument("--reuse", action="store_true", help="send every message of a session over one connection")
    parser.add_argument("--no-checks", action="store_true",
                        help="diagnostic: turn the SPF, DKIM and DMARC checks off")
    parser.add_argument("--log-level", choices=("debug", "info", "warn", "error"),
                        help="diagnostic: the daemon's log level (default: the config's default)")
    parser.add_argument("--profile", metavar="FILE", help="run the daemon under cProfile, writing FILE")
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix=".smtp-bench-", dir=str(REPO)))
    try:
        run(arguments, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
