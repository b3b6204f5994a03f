"""Crash safety: kill -9 during 200 concurrent deliveries loses no acknowledged mail.

Every message that got its 250 after DATA must be in the mailbox after a restart
on the same data dir, byte for byte; nothing half-written may appear; the store
must open cleanly.
"""

from __future__ import annotations

import asyncio
import hashlib
import imaplib
import re

import pytest

from conftest import make_daemon

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CONCURRENT = 200
KILL_AFTER_ACKS = 60


def message(n: int) -> bytes:
    body = b"".join(b"crash test line %d of message %d\r\n" % (i, n) for i in range(300))
    return (
        b"From: <load@remote.test>\r\nTo: <alice@example.test>\r\n"
        b"Subject: crash %d\r\nMessage-ID: <crash-%d@remote.test>\r\n\r\n" % (n, n)
    ) + body


async def deliver(port: int, n: int, acked: set, enough: asyncio.Event) -> None:
    """One SMTP session; adds ``n`` to ``acked`` only when DATA got its 250."""
    try:
        # Bounded: a connect still waiting for its SYN's retry when the daemon dies
        # was never accepted, so never acknowledged (TimeoutError is an OSError).
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)

        async def reply() -> bytes:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("closed")
                if line[3:4] != b"-":
                    return line

        await reply()
        writer.write(b"EHLO load.test\r\n")
        await reply()
        writer.write(b"MAIL FROM:<load@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for expected in (b"250", b"250", b"354"):
            line = await reply()
            assert line.startswith(expected), line
        writer.write(message(n) + b".\r\n")
        line = await reply()
        if line.startswith(b"250"):
            acked.add(n)
            if len(acked) >= KILL_AFTER_ACKS:
                enough.set()
        writer.close()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass  # the server was killed under us: this one was not acknowledged


async def load_and_kill(daemon) -> set:
    acked: set = set()
    enough = asyncio.Event()
    tasks = [asyncio.create_task(deliver(daemon.ports["smtp"], n, acked, enough)) for n in range(CONCURRENT)]
    await asyncio.wait_for(enough.wait(), timeout=240)
    daemon.kill()  # SIGKILL mid-load
    snapshot = set(acked)  # what was acknowledged before the kill
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    return snapshot | acked


def fetch_all(daemon) -> list[bytes]:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=60)
    client.login("alice@example.test", daemon.users["alice@example.test"])
    typ, data = client.select("INBOX")
    count = int(data[0])
    out = []
    if count:
        typ, data = client.fetch(f"1:{count}", "(BODY.PEEK[])")
        out = [part[1] for part in data if isinstance(part, tuple)]
    client.logout()
    return out


def test_kill9_during_concurrent_deliveries_loses_nothing_acknowledged(tmp_path):
    # 200 connections at once, all from 127.0.0.1
    daemon = make_daemon(tmp_path / "d", extra_config="connections_per_ip_max = 1000")
    daemon.cli("domain", "add", "example.test")
    daemon.add_user("alice@example.test", "alice-secret-1")
    daemon.start()
    acked = asyncio.run(load_and_kill(daemon))
    assert len(acked) >= KILL_AFTER_ACKS

    daemon.start()  # same data dir: must open cleanly
    stored = fetch_all(daemon)
    by_number = {}
    for raw in stored:
        match = re.search(rb"Message-ID: <crash-(\d+)@remote.test>", raw)
        assert match, raw[:300]
        n = int(match.group(1))
        # intact: the stored message is the sent one behind its Received header
        assert raw.endswith(message(n)), f"message {n} is damaged"
        by_number[n] = hashlib.sha256(raw).hexdigest()
    missing = acked - set(by_number)
    assert not missing, f"acknowledged but lost: {sorted(missing)}"
    assert len(stored) == len(by_number), "duplicate deliveries"
    daemon.stop()
