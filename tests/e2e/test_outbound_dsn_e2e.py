"""Delivery status notifications end to end (RFC 3461, 3464): one delay notice,
then the bounce when the lifetime runs out; success reports for NOTIFY=SUCCESS,
"relayed" from us to a peer without DSN, "delivered" from a peer with DSN.

Lifetimes and warning times are seconds here (limits in the test config),
so the reports come within the tests' deadlines; waits poll, never sleep.
"""

from __future__ import annotations

import smtplib

import pytest

from clients import make_message
from conftest import wait_for
from outbound import (ALICE, BOB_REMOTE, DEADLINE, inbox, peer_daemon, peers, publish_mx,  # noqa: F401
                      queue_json, report_parts, route_back, sender_daemon)

pytestmark = pytest.mark.e2e


def submit_with(daemon, rcpt: str, message: bytes, notify: str) -> None:
    """Submit as alice with ``NOTIFY=notify`` on the recipient (RFC 3461 §4.1)."""
    with smtplib.SMTP("127.0.0.1", daemon.ports["submission"], timeout=30) as client:
        client.starttls(context=daemon.ssl_context())
        client.login(ALICE, daemon.users[ALICE])
        assert client.sendmail(ALICE, [rcpt], message, rcpt_options=[f"NOTIFY={notify}"]) == {}


def actions(daemon) -> list[tuple[str, str]]:
    """(Action, Status) of the one recipient block of each report in alice's INBOX."""
    found = []
    for raw in inbox(daemon, ALICE):
        _, blocks = report_parts(raw)
        found.append((blocks[1]["Action"], blocks[1]["Status"]))
    return found


def test_a_delay_notice_once_then_a_bounce_when_the_lifetime_expires(tmp_path, dns_server, peers):
    peer = peers(["451 4.2.0 not now"])
    publish_mx(dns_server, "slow.test")
    a = sender_daemon(tmp_path, dns_server, peer.port, queue_delay_warning=2, queue_lifetime=8)
    a.start()
    submit_with(a, "carol@slow.test", make_message("will expire"), "DELAY,FAILURE")
    wait_for(lambda: len(inbox(a, ALICE)) == 2, timeout=DEADLINE, what="the delay notice and the bounce")
    wait_for(lambda: queue_json(a) == [], timeout=DEADLINE, what="the queue to empty")
    assert actions(a) == [("delayed", "4.2.0"), ("failed", "4.4.7")]  # 4.4.7: delivery time expired
    delayed, failed = inbox(a, ALICE)
    _, blocks = report_parts(delayed)
    assert blocks[1]["Will-Retry-Until"] and "451 4.2.0 not now" in blocks[1]["Diagnostic-Code"]
    report, blocks = report_parts(failed)
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert "delivery time expired" in blocks[1]["Diagnostic-Code"]
    assert a.log().count("state=deferred") >= 2 and peer.messages == []  # several tries, one notice
    a.stop()


def test_notify_success_to_a_peer_without_dsn_is_reported_relayed(tmp_path, dns_server, peers):
    peer = peers(["250 2.1.5 ok"])  # its EHLO offers no DSN
    publish_mx(dns_server, "plain.test")
    a = sender_daemon(tmp_path, dns_server, peer.port)
    a.start()
    submit_with(a, "dave@plain.test", make_message("tell me"), "SUCCESS")
    wait_for(lambda: inbox(a, ALICE), timeout=DEADLINE, what="the success report")
    assert peer.messages and actions(a) == [("relayed", "2.0.0")]  # the reply to the final dot
    report, _ = report_parts(inbox(a, ALICE)[0])
    assert report["Subject"] == "Successful Mail Delivery Report"
    a.stop()


def test_notify_success_to_a_peer_with_dsn_is_reported_delivered_by_the_peer(tmp_path, dns_server):
    publish_mx(dns_server, "remote.test")
    publish_mx(dns_server, "example.test")  # the peer's report comes back to us
    b = peer_daemon(tmp_path, dns_server)
    a = sender_daemon(tmp_path, dns_server, b.ports["smtp"])
    route_back(b, a)
    b.start()
    a.start()
    submit_with(a, BOB_REMOTE, make_message("tell me again"), "SUCCESS,FAILURE")
    wait_for(lambda: inbox(b, BOB_REMOTE), timeout=DEADLINE, what="the message at the peer")
    wait_for(lambda: inbox(a, ALICE), timeout=DEADLINE, what="the peer's success report")
    wait_for(lambda: queue_json(a) == [] and queue_json(b) == [], timeout=DEADLINE, what="both queues to empty")
    assert actions(a) == [("delivered", "2.0.0")]  # the peer's only; we passed NOTIFY on (RFC 3461 §5.2.2)
    _, blocks = report_parts(inbox(a, ALICE)[0])
    assert blocks[1]["Final-Recipient"] == f"rfc822; {BOB_REMOTE}"
    b.stop()
    a.stop()
