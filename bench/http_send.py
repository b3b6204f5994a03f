"""HTTP send API benchmark: accepted messages/s through POST /api/v1/messages beside SMTP submission.

Prints figures; asserts nothing about time. One daemon (tests/conftest.py's
make_daemon: trustme CA, free 127.0.0.1 ports, plus an https listener) with
alice and bob; alice has an API token. ``--runs`` times, alternating:

1. ``--clients`` threads (20) each keep one HTTPS connection (http.client,
   TLS verified against the test CA) and POST ``--messages``/clients JSON
   messages of ``--size`` bytes of text from alice to bob, one after another;
2. the same number of threads each keep one submission session (port 587,
   STARTTLS, AUTH PLAIN once) and send as many messages of the same text,
   built the same way (the API's composer), with smtplib.

Every 202 and every 250 must be a stored message: after each run the
INBOX must have grown by exactly the number accepted. The rate of a run
is accepted messages over its wall-clock time; the daemon's CPU time per
message (all its threads and parse workers) is printed beside it. Clients
run in this process on the same 2 cores as the daemon (both pay that alike).

Run: .venv/bin/python bench/http_send.py [--messages N] [--clients N] [--size BYTES] [--runs N]
"""

from __future__ import annotations

import argparse
import http.client
import imaplib
import json
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

ALICE, BOB = "alice@example.test", "bob@example.test"
PASSWORDS = {ALICE: "bench-alice-1", BOB: "bench-bob-2"}


def text_of(size: int) -> str:
    line = "The quick brown fox jumps over the lazy dog 0123456789.\n"
    return (line * (size // len(line) + 1))[:size]


def in_threads(count: int, work) -> tuple[int, float]:
    """Run ``work(index)`` (returns messages accepted) in ``count`` threads; (total, seconds)."""
    results = [0] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException as error:  # reported after the run
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        raise SystemExit(f"a client failed: {errors[0]!r}")
    return sum(results), elapsed


def http_run(daemon, token: str, count: int, clients: int, body: bytes) -> tuple[int, float]:
    def work(index: int) -> int:
        share = count // clients + (index < count % clients)
        conn = http.client.HTTPSConnection("127.0.0.1", daemon.ports["https"],
                                           context=daemon.ssl_context(), timeout=300)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        accepted = 0
        for _ in range(share):
            conn.request("POST", "/api/v1/messages", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 202:
                raise RuntimeError(f"HTTP {response.status}")
            accepted += 1
        conn.close()
        return accepted

    return in_threads(clients, work)


def smtp_run(daemon, count: int, clients: int, message: bytes) -> tuple[int, float]:
    def work(index: int) -> int:
        share = count // clients + (index < count % clients)
        with smtplib.SMTP("127.0.0.1", daemon.ports["submission"], timeout=300) as smtp:
            smtp.starttls(context=daemon.ssl_context())
            smtp.login(ALICE, PASSWORDS[ALICE])
            for _ in range(share):
                smtp.sendmail(ALICE, [BOB], message)
        return share

    return in_threads(clients, work)


def inbox_count(daemon) -> int:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=300)
    try:
        client.login(BOB, PASSWORDS[BOB])
        typ, data = client.select("INBOX", readonly=True)
        return int(data[0])
    finally:
        client.logout()


def report(label: str, rates: list[float]) -> float:
    median = statistics.median(rates)
    print(f"{label:30s} median {median:7.0f} messages/s   (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    return median


def run(arguments, workdir: Path) -> None:
    from conftest import make_daemon
    from mailserverd.web.compose import compose_json
    from smtp_accept import cpu_seconds
    from webclient import create_token, gateway_config

    listeners, ports = gateway_config(
        "http_requests_burst = 1000000\nhttp_requests_per_minute = 1000000\n")
    daemon = make_daemon(workdir / "d", shards=arguments.shards, extra_config=listeners)
    daemon.ports.update(ports)
    daemon.cli("domain", "add", "example.test")
    for user, password in PASSWORDS.items():
        daemon.add_user(user, password)
    token, _ = create_token(daemon, ALICE)
    daemon.start()
    try:
        doc = {"from": ALICE, "to": [BOB], "subject": "bench", "text": text_of(arguments.size)}
        body = json.dumps(doc).encode()
        message = compose_json(doc, "bench.example.test", time.time()).raw
        print(f"work dir: {workdir}; {arguments.messages} messages of {arguments.size} bytes of text "
              f"over {arguments.clients} concurrent clients; HTTP body {len(body)} bytes, "
              f"message {len(message)} bytes")
        http_rates, smtp_rates = [], []
        stored = inbox_count(daemon)
        for number in range(1, arguments.runs + 1):
            for label, rates, go in (
                    ("HTTP API ", http_rates, lambda: http_run(daemon, token, arguments.messages,
                                                               arguments.clients, body)),
                    ("SMTP 587 ", smtp_rates, lambda: smtp_run(daemon, arguments.messages,
                                                               arguments.clients, message))):
                cpu_before = cpu_seconds(daemon.proc.pid)
                accepted, elapsed = go()
                cpu = cpu_seconds(daemon.proc.pid) - cpu_before
                now = inbox_count(daemon)
                print(f"run {number}: {label} {accepted:6d} accepted in {elapsed:6.2f} s = "
                      f"{accepted / elapsed:6.0f} messages/s; INBOX +{now - stored}; "
                      f"daemon CPU {cpu / max(accepted, 1) * 1000:.2f} ms/message")
                if now - stored != accepted:
                    raise SystemExit(f"INBOX grew by {now - stored}, but {accepted} were accepted")
                stored = now
                rates.append(accepted / elapsed)
        api = report("HTTP API (durable, 202)", http_rates)
        smtp = report("SMTP submission (durable, 250)", smtp_rates)
        print(f"HTTP API / SMTP submission: {api / smtp:.0%}")
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run and protocol")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--size", type=int, default=2000, help="bytes of text per message")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="http-bench-", dir=REPO.parent) as workdir:
        run(arguments, Path(workdir))


if __name__ == "__main__":
    main()
