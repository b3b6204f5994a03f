"""Crash safety of the outbound queue: kill -9 during 200 outbound deliveries.

200 messages, one recipient each in four destination domains, are submitted
(each acknowledged, so durably queued) while the receiving peer holds every
session before its greeting; then the peer lets them through, and once 60
have arrived the daemon is killed with SIGKILL mid-delivery. After a restart
on the same data dir every recipient must get its message, at most twice
(a message the peer took before the daemon could record it is sent again:
RFC 5321 §6.1 prefers a duplicate to a loss), and the queue must empty.
"""

from __future__ import annotations

import re
import smtplib
import threading
from collections import Counter

import pytest

from conftest import wait_for
from outbound import ALICE, peers, publish_mx, queue_json, sender_daemon  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MESSAGES = 200
KILL_AFTER = 60
DOMAINS = [f"sink{n}.test" for n in range(4)]
DEADLINE = 240


def recipient(n: int) -> str:
    return f"r{n}@{DOMAINS[n % len(DOMAINS)]}"


def message(n: int) -> bytes:
    body = b"".join(b"outbound crash line %d of message %d\r\n" % (i, n) for i in range(200))
    return (b"From: <alice@example.test>\r\nTo: <%s>\r\nSubject: crash %d\r\n"
            b"Message-ID: <outbound-crash-%d@example.test>\r\n\r\n" % (recipient(n).encode(), n, n)) + body


def submit_all(daemon) -> None:
    """Submit every message in one authenticated session; each must get its 250."""
    with smtplib.SMTP("127.0.0.1", daemon.ports["submission"], timeout=60) as client:
        client.starttls(context=daemon.ssl_context())
        client.login(ALICE, daemon.users[ALICE])
        for n in range(MESSAGES):
            assert client.sendmail(ALICE, [recipient(n)], message(n)) == {}


def received(peer) -> Counter:
    """How many times the peer got each message, by number (each intact)."""
    counts: Counter = Counter()
    for raw in list(peer.messages):
        match = re.search(rb"Message-ID: <outbound-crash-(\d+)@example.test>", raw)
        assert match, raw[:300]
        n = int(match.group(1))
        assert raw.endswith(message(n)), f"message {n} arrived damaged"
        counts[n] += 1
    return counts


def test_kill9_during_outbound_deliveries_loses_none_and_duplicates_at_most_once(tmp_path, dns_server, peers):
    gate = threading.Event()
    peer = peers(["250 2.1.5 ok"], gate=gate)
    for domain in DOMAINS:
        publish_mx(dns_server, domain)
    a = sender_daemon(tmp_path, dns_server, peer.port)
    a.start()
    submit_all(a)
    gate.set()
    wait_for(lambda: len(peer.messages) >= KILL_AFTER, timeout=DEADLINE, what=f"{KILL_AFTER} deliveries")
    a.kill()
    before = received(peer)
    assert len(before) < MESSAGES, "every message was out before the kill: the test proves nothing"

    a.start()  # same data dir: the queue must open and resume
    wait_for(lambda: len(received(peer)) == MESSAGES, timeout=DEADLINE, what="every recipient delivered")
    wait_for(lambda: queue_json(a) == [], timeout=DEADLINE, what="the queue to empty")
    counts = received(peer)
    assert set(counts) == set(range(MESSAGES))
    twice = {n: count for n, count in counts.items() if count > 1}
    assert all(count == 2 for count in twice.values()), f"more than one duplicate: {twice}"
    a.stop()
