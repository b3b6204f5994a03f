"""``mailserverd queue flush|retry|hold|release|remove`` against a running daemon.

Retries are an hour apart and the daemon's own periodic look at the queue
is an hour apart too, so a deferred recipient is tried again within the
test's deadline only because the CLI said so and the daemon noticed.
"""

from __future__ import annotations

import json

import pytest

from clients import make_message
from conftest import wait_for
from outbound import ALICE, DEADLINE, inbox, peers, publish_mx, queue_json, sender_daemon, submit  # noqa: F401

pytestmark = pytest.mark.e2e

SLOW_RETRIES = dict(queue_retry_min=3600, queue_retry_max=7200, queue_scan_interval=3600)


def deferred_id(daemon, subject_rcpt: str) -> str:
    """The queue id of the message for ``subject_rcpt`` once its first attempt deferred it."""
    def find():
        return [m["queue_id"] for m in queue_json(daemon) for e in m["entries"]
                if e["recipient"] == subject_rcpt and e["state"] == "deferred" and e["attempts"] == 1]
    return wait_for(find, timeout=DEADLINE, what=f"{subject_rcpt} deferred")[0]


def states(daemon) -> dict[str, str]:
    return {e["recipient"]: e["state"] for m in queue_json(daemon) for e in m["entries"]}


def subjects(peer) -> list[bytes]:
    return [line for raw in peer.messages for line in raw.split(b"\r\n") if line.startswith(b"Subject:")]


def test_retry_hold_flush_release_and_remove_act_on_the_running_daemon(tmp_path, dns_server, peers):
    peer = peers(["451 4.2.0 later", "250 2.1.5 ok", "451 4.2.0 later", "451 4.2.0 later",
                  "250 2.1.5 ok", "250 2.1.5 ok", "451 4.2.0 later"])
    publish_mx(dns_server, "later.test")
    a = sender_daemon(tmp_path, dns_server, peer.port, **SLOW_RETRIES)
    a.start()

    submit(a, ["one@later.test"], make_message("one"))
    first = deferred_id(a, "one@later.test")
    assert a.cli("queue", "retry", first.lower()).stdout == f"{first}: 1 recipient due now\n"
    wait_for(lambda: subjects(peer) == [b"Subject: one"], timeout=DEADLINE, what="the retried message")

    submit(a, ["two@later.test"], make_message("two"))
    second = deferred_id(a, "two@later.test")
    held = json.loads(a.cli("queue", "hold", second, "--json").stdout)
    assert held == {"action": "hold", "queue_id": second, "recipients": 1}
    submit(a, ["three@later.test"], make_message("three"))
    deferred_id(a, "three@later.test")
    assert a.cli("queue", "flush").stdout == "queue: 1 recipient due now\n"  # the held one is not
    wait_for(lambda: b"Subject: three" in subjects(peer), timeout=DEADLINE, what="the flushed message")
    assert b"Subject: two" not in subjects(peer)
    assert states(a)["two@later.test"] == "held"
    shown = a.cli("queue", "list").stdout
    assert "<two@later.test>  held  attempts=1  next=-" in shown

    assert a.cli("queue", "release", second).stdout == f"{second}: 1 recipient released\n"
    wait_for(lambda: b"Subject: two" in subjects(peer), timeout=DEADLINE, what="the released message")

    submit(a, ["four@later.test"], make_message("four"))
    fourth = deferred_id(a, "four@later.test")
    assert a.cli("queue", "remove", fourth).stdout == f"{fourth}: 1 recipient removed\n"
    wait_for(lambda: queue_json(a) == [], timeout=DEADLINE, what="the queue to empty")
    assert b"Subject: four" not in subjects(peer) and inbox(a, ALICE) == []  # removed without a report

    missing = a.cli("queue", "hold", "ABCDEF123456", check=False)
    assert missing.returncode == 1 and "no queued message ABCDEF123456" in missing.stderr
    assert "queue-changed-by-operator" in a.log()
    a.stop()
