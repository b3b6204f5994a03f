"""Outbound delivery end to end: submission -> the queue -> MX routing -> a peer on loopback.

The sending daemon's resolver is the test DNS server, which gives the
recipient domains MX records pointing at 127.0.0.1; its outbound port is
the peer's port (TESTING.md "Ports"). Peers are a second mailserverd that
hosts remote.test, or a small scripted SMTP peer for replies a real server
would not give on demand. Retries are driven by a short ``queue_retry_min``
(1 s), never by sleeping: every wait polls with a deadline.
"""

from __future__ import annotations

import pytest

from clients import make_message
from conftest import free_ports, wait_for
from outbound import (ALICE, BOB_REMOTE, DEADLINE, inbox, peer_daemon, peers, publish_mx,  # noqa: F401
                      queue_json, report_parts, sender_daemon, submit)

pytestmark = pytest.mark.e2e


# --- (a) to a second mailserverd


def test_submission_to_a_remote_domain_arrives_in_the_peers_inbox(tmp_path, dns_server):
    publish_mx(dns_server, "remote.test")
    b = peer_daemon(tmp_path, dns_server)
    b.start()
    a = sender_daemon(tmp_path, dns_server, b.ports["smtp"])
    a.start()
    sent = make_message("to the world")
    submit(a, [BOB_REMOTE], sent)
    [got] = wait_for(lambda: inbox(b, BOB_REMOTE), timeout=DEADLINE, what="bob's message at the peer")
    assert got.endswith(sent)
    assert b"by mx.example.test (mailserverd)" in got  # our Received: went with it
    wait_for(lambda: queue_json(a) == [], timeout=DEADLINE, what="the queue to empty")
    log = a.log()
    assert "delivery-attempt id=" in log and f"to=<{BOB_REMOTE}>" in log and "state=delivered" in log
    assert "tls=TLSv1" in log  # opportunistic STARTTLS with the peer
    a.stop()
    b.stop()


# --- (c)-(g): replies, DNS and peers that come and go


def test_451_once_then_accepted_is_retried_and_delivered(tmp_path, dns_server, peers):
    peer = peers(["451 4.2.0 greylisted, come back later", "250 2.1.5 ok"])
    publish_mx(dns_server, "grey.test")
    a = sender_daemon(tmp_path, dns_server, peer.port)
    a.start()
    sent = make_message("greylisted")
    submit(a, ["carol@grey.test"], sent)
    [got] = wait_for(lambda: peer.messages, timeout=DEADLINE, what="the retried delivery")
    assert got.endswith(sent)
    assert peer.connections >= 2
    wait_for(lambda: queue_json(a) == [], timeout=DEADLINE, what="the queue to empty")
    assert "state=deferred attempts=1 reply='451 4.2.0 greylisted" in a.log()
    assert inbox(a, ALICE) == []  # no bounce for a recipient that got its mail
    a.stop()


def test_550_bounces_with_a_delivery_status_report_in_the_senders_inbox(tmp_path, dns_server, peers):
    peer = peers(["550 5.1.1 no such user here"])
    publish_mx(dns_server, "hard.test")
    a = sender_daemon(tmp_path, dns_server, peer.port)
    a.start()
    sent = make_message("to nobody")
    submit(a, ["nobody@hard.test"], sent)
    [raw] = wait_for(lambda: inbox(a, ALICE), timeout=DEADLINE, what="the bounce in alice's INBOX")
    report, blocks = report_parts(raw)
    assert report["To"].addresses[0].addr_spec == ALICE
    assert report["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.example.test"
    assert blocks[0]["Reporting-MTA"] == "dns; mx.example.test"
    assert blocks[1]["Final-Recipient"] == "rfc822; nobody@hard.test"
    assert blocks[1]["Action"] == "failed" and blocks[1]["Status"] == "5.1.1"
    assert "550 5.1.1 no such user here" in blocks[1]["Diagnostic-Code"]
    headers = [part for part in report.walk() if part.get_content_type() == "text/rfc822-headers"]
    assert headers and b"Subject: to nobody" in headers[0].get_payload(decode=True)
    assert peer.messages == []
    wait_for(lambda: queue_json(a) == [], timeout=DEADLINE, what="the queue to empty")
    a.stop()


def test_null_mx_bounces_at_once(tmp_path, dns_server):
    dns_server.add("nomail.test", "MX", "0 .")
    [unused_port] = free_ports(1)
    a = sender_daemon(tmp_path, dns_server, unused_port)
    a.start()
    submit(a, ["someone@nomail.test"], make_message("to a null MX"))
    [raw] = wait_for(lambda: inbox(a, ALICE), timeout=DEADLINE, what="the null MX bounce")
    _, blocks = report_parts(raw)
    assert blocks[1]["Status"] == "5.1.10"  # RFC 7505 §4.2
    assert "null MX" in blocks[1]["Diagnostic-Code"]
    assert "state=bounced attempts=1" in a.log()
    a.stop()


def sending_to_nobody(tmp_path, dns_server, rcpts: list[str], subject: str):
    """A started sender whose MX for the recipients' domain has nothing listening
    yet; ``rcpts`` submitted. Returns the daemon and the port the peer will use."""
    [port] = free_ports(1)
    publish_mx(dns_server, rcpts[0].rpartition("@")[2])
    a = sender_daemon(tmp_path, dns_server, port)
    a.start()
    submit(a, rcpts, make_message(subject))
    return a, port


def test_peer_down_defers_then_delivers_when_it_comes_up(tmp_path, dns_server, peers):
    a, port = sending_to_nobody(tmp_path, dns_server, ["dave@later.test"], "peer down")
    wait_for(lambda: [e for m in queue_json(a) for e in m["entries"]
                      if e["state"] == "deferred" and "cannot connect" in e["last_reply"]],
             timeout=DEADLINE, what="a deferral for the unreachable peer")
    shown = a.cli("queue", "show", queue_json(a)[0]["queue_id"]).stdout
    assert "<dave@later.test>  deferred" in shown and "4.4.1 cannot connect" in shown
    peer = peers(["250 2.1.5 ok"], port=port)
    wait_for(lambda: peer.messages, timeout=DEADLINE, what="delivery once the peer is up")
    wait_for(lambda: queue_json(a) == [], timeout=DEADLINE, what="the queue to empty")
    a.stop()


def test_deferred_mail_is_delivered_after_a_restart(tmp_path, dns_server, peers):
    a, port = sending_to_nobody(tmp_path, dns_server, ["erin@restart.test", "frank@restart.test"],
                                "across a restart")
    wait_for(lambda: all(e["state"] == "deferred" for m in queue_json(a) for e in m["entries"])
             and queue_json(a), timeout=DEADLINE, what="both recipients deferred")
    a.stop()
    peer = peers(["250 2.1.5 ok"], port=port)
    a.start()
    [got] = wait_for(lambda: peer.messages, timeout=DEADLINE, what="delivery after the restart")
    assert b"Subject: across a restart" in got
    wait_for(lambda: queue_json(a) == [], timeout=DEADLINE, what="the queue to empty")
    a.stop()
