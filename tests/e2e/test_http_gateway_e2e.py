"""The HTTP gateway end to end: the real daemon, real TLS (the trustme CA), http.client.

Sending through the API must be sending through submission: the same sender
rule, the same delivery and queue, the same trace. Bad input must be refused
with problem details and leave nothing queued or delivered.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os

import pytest

from clients import imap_fetch_all
from conftest import wait_for
from outbound import BOB_REMOTE, DEADLINE, inbox, peer_daemon, publish_mx, queue_json
from webclient import (ALICE, BOB, create_token, gateway_daemon, read_reply, request, send_json,
                       tls_socket)

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(tmp_path):
    """A running daemon with the HTTP listeners, a small body limit, and alice's token."""
    d = gateway_daemon(tmp_path / "d", limits="http_body_max = 1_048_576\n")
    token, _ = create_token(d)
    d.start()
    d.token = token
    yield d
    if d.proc.poll() is None:
        d.stop()


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_json_with_attachments_arrives_in_the_local_inbox_byte_correct(gateway):
    blob = os.urandom(200_000)
    pdf = b"%PDF-1.4\n" + os.urandom(5000)
    reply = send_json(gateway, {
        "from": {"address": ALICE, "name": "Alice Å"}, "to": [BOB], "cc": [], "bcc": [],
        "subject": "Report for Zoë", "text": "Hello Bob,\nsee attached. – A",
        "html": "<p>Hello <b>Bob</b></p>", "headers": {"X-Campaign": "q3", "Reply-To": ALICE},
        "attachments": [
            {"filename": "data.bin", "content_type": "application/octet-stream",
             "content": base64.b64encode(blob).decode()},
            {"filename": "report.pdf", "content_type": "application/pdf",
             "content": base64.b64encode(pdf).decode()}],
    }, gateway.token)
    assert reply.status == 202, reply.body
    message_id = reply.json()["id"]
    assert reply.headers["Location"] == f"/api/v1/messages/{message_id}"
    [raw] = imap_fetch_all(gateway, BOB)
    message = parsed(raw)
    assert message["From"].addresses[0].display_name == "Alice Å"
    assert str(message["Subject"]) == "Report for Zoë"
    assert message["X-Campaign"] == "q3"
    assert message["Message-ID"] and message["Date"]
    # The same trace as port 587, with HTTP as the protocol (RFC 3848 style).
    received = message.get_all("Received")[0]
    assert f"with HTTPSA id {message_id}" in received and f"Authenticated sender: {ALICE}" in received
    assert "using TLSv1." in received
    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert attachments["data.bin"].get_content() == blob
    assert attachments["report.pdf"].get_content_type() == "application/pdf"
    assert attachments["report.pdf"].get_content() == pdf
    body = message.get_body(("plain",))
    assert body.get_content().replace("\r\n", "\n") == "Hello Bob,\nsee attached. – A\n"
    assert message.get_body(("html",)).get_content().strip() == "<p>Hello <b>Bob</b></p>"
    status = request(gateway, "GET", f"/api/v1/messages/{message_id}", token=gateway.token)
    assert status.status == 200
    assert status.json()["recipients"] == [{"address": BOB, "state": "delivered"}]


def test_raw_message_goes_to_to_cc_and_bcc_with_bcc_removed(gateway):
    raw = (f"From: {ALICE}\r\nTo: {BOB}\r\nBcc: {ALICE}\r\nSubject: raw\r\n\r\nas is\r\n").encode()
    reply = request(gateway, "POST", "/api/v1/messages", raw, token=gateway.token,
                    content_type="message/rfc822")
    assert reply.status == 202, reply.body
    assert sorted(reply.json()["recipients"]) == [ALICE, BOB]
    for user in (ALICE, BOB):
        [got] = imap_fetch_all(gateway, user)
        assert got.endswith(b"Subject: raw\r\n\r\nas is\r\n")
        assert b"\r\nBcc:" not in got and b"Message-ID: <" in got


def test_basic_auth_with_the_account_password_and_idempotency(gateway):
    doc = {"from": ALICE, "to": BOB, "text": "once", "idempotency_key": "order-1234"}
    first = send_json(gateway, doc, "", basic=(ALICE, "alice-secret-1"))
    assert first.status == 202, first.body
    again = send_json(gateway, doc, "", basic=(ALICE, "alice-secret-1"))
    assert again.status == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(imap_fetch_all(gateway, BOB)) == 1
    wrong = send_json(gateway, doc, "", basic=(ALICE, "wrong"))
    assert wrong.status == 401 and wrong.content_type == "application/problem+json"
    # Bob cannot read alice's message status: to him it does not exist.
    other = request(gateway, "GET", f"/api/v1/messages/{first.json()['id']}",
                    basic=(BOB, "bob-secret-2"))
    assert other.status == 404


def refused(reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    assert reply.content_type == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == status and problem["code"] == code
    assert problem["type"].endswith("#" + code) and problem["title"]


def test_bad_input_is_refused_with_problem_details_and_nothing_is_sent(gateway):
    ok = {"from": ALICE, "to": [BOB], "subject": "s", "text": "t"}
    token = gateway.token
    post = lambda body, **kw: request(gateway, "POST", "/api/v1/messages", body, token=token, **kw)  # noqa: E731
    refused(post(b'{"from": "alice@example.test", "to": '), 400, "malformed-json")
    refused(post(b"[1, 2]"), 400, "malformed-json")
    refused(post(b"\xff\xfe{}"), 400, "malformed-json")
    refused(post(json.dumps(ok).encode(), content_type="text/plain"), 415, "unsupported-media-type")
    refused(post(json.dumps(ok).encode(), content_type=""), 415, "unsupported-media-type")
    refused(send_json(gateway, {**ok, "attachments": [{"filename": "a", "content": "no base64!"}]}, token),
            400, "bad-base64")
    refused(send_json(gateway, {**ok, "subject": "hi\r\nBcc: victim@remote.test"}, token),
            400, "header-injection")
    refused(send_json(gateway, {**ok, "to": ["bob@example.test\r\nRCPT TO:<x@y.test>"]}, token),
            400, "header-injection")
    refused(send_json(gateway, {**ok, "from": {"address": ALICE, "name": "A\nBcc: x@y.test"}}, token),
            400, "header-injection")
    refused(send_json(gateway, {**ok, "headers": {"X-A": "1\r\nBcc: x@y.test"}}, token),
            400, "header-injection")
    refused(send_json(gateway, {**ok, "headers": {"Bcc": "x@y.test"}}, token), 400, "bad-request")
    refused(send_json(gateway, {**ok, "to": ["not an address"]}, token), 400, "bad-address")
    refused(send_json(gateway, {**ok, "from": BOB}, token), 403, "sender-not-owned")
    refused(send_json(gateway, {**ok, "from": "someone@remote.test"}, token), 403, "sender-not-owned")
    refused(send_json(gateway, {**ok, "to": ["nobody@example.test"]}, token), 422, "recipient-refused")
    refused(send_json(gateway, ok, "msd_" + "A" * 43), 401, "unauthorized")
    refused(request(gateway, "POST", "/api/v1/messages", json.dumps(ok).encode()), 401, "unauthorized")
    refused(request(gateway, "GET", "/api/v1/messages/NOPE", token=token), 404, "not-found")
    refused(request(gateway, "DELETE", "/api/v1/messages", token=token), 405, "method-not-allowed")
    # The API is not on the plain-HTTP listener at all.
    refused(request(gateway, "POST", "/api/v1/messages", json.dumps(ok).encode(), token=token,
                    kind="http"), 404, "not-found")
    assert imap_fetch_all(gateway, BOB) == [] and imap_fetch_all(gateway, ALICE) == []
    assert queue_json(gateway) == []
    assert "Traceback" not in gateway.log()


def test_a_revoked_token_is_refused_from_the_next_request_on(gateway):
    second, second_id = create_token(gateway, name="ci")
    listed = gateway.cli("token", "list", ALICE).stdout
    assert second_id in listed and "ci" in listed and second not in listed
    doc = {"from": ALICE, "to": BOB, "text": "t"}
    assert send_json(gateway, doc, second).status == 202
    gateway.cli("token", "revoke", ALICE, second_id)
    refused(send_json(gateway, doc, second), 401, "unauthorized")
    assert send_json(gateway, doc, gateway.token).status == 202  # the other token still works
    assert second_id not in gateway.cli("token", "list", ALICE).stdout
    assert len(imap_fetch_all(gateway, BOB)) == 2


def test_a_100_mb_body_is_refused_by_its_content_length_before_it_is_sent(gateway):
    sock = tls_socket(gateway)
    sock.sendall(f"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                 f"{gateway.token}\r\nContent-Type: application/json\r\nContent-Length: {100 * 2**20}"
                 "\r\n\r\n".encode())
    answer = read_reply(sock)  # no body byte was sent: the 413 comes anyway
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"application/problem+json" in answer and b'"too-large"' in answer


def test_a_chunked_body_growing_past_the_limit_is_cut_off(gateway):
    sock = tls_socket(gateway)
    sock.sendall(f"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                 f"{gateway.token}\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    try:
        for _ in range(40):  # 2.5 MiB against a 1 MiB limit
            sock.sendall(chunk)
    except OSError:
        pass  # the server may close before we are done: that is the point
    answer = read_reply(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert queue_json(gateway) == [] and imap_fetch_all(gateway, BOB) == []


def test_a_flood_of_requests_gets_429_with_retry_after(tmp_path):
    d = gateway_daemon(tmp_path / "d", limits="http_requests_burst = 3\nhttp_requests_per_minute = 1\n")
    token, _ = create_token(d)
    d.start()
    statuses = [request(d, "GET", "/api/v1/messages/X", token=token) for _ in range(6)]
    assert [reply.status for reply in statuses[:3]] == [404, 404, 404]
    for reply in statuses[3:]:
        refused(reply, 429, "too-many-requests")
        assert int(reply.headers["Retry-After"]) >= 1
    # Another account has its own allowance.
    assert request(d, "GET", "/api/v1/messages/X", basic=(BOB, "bob-secret-2")).status == 404
    d.stop()


def test_remote_recipient_is_queued_delivered_to_the_peer_and_the_status_says_so(tmp_path, dns_server):
    publish_mx(dns_server, "remote.test")
    b = peer_daemon(tmp_path, dns_server)
    b.start()
    a = gateway_daemon(tmp_path / "a", dns=dns_server, limits=(
        "queue_retry_min = 1\nqueue_retry_max = 2\nqueue_scan_interval = 1\n"
        f"\n[outbound]\nport = {b.ports['smtp']}\n"))
    token, _ = create_token(a)
    a.start()
    reply = send_json(a, {"from": ALICE, "to": [BOB_REMOTE, BOB], "subject": "to the world",
                          "text": "over HTTP"}, token)
    assert reply.status == 202, reply.body
    message_id = reply.json()["id"]
    [got] = wait_for(lambda: inbox(b, BOB_REMOTE), timeout=DEADLINE, what="bob's message at the peer")
    assert b"with HTTPSA id " + message_id.encode() in got
    assert parsed(got).get_body(("plain",)).get_content().strip() == "over HTTP"

    def states():
        status = request(a, "GET", f"/api/v1/messages/{message_id}", token=token).json()
        return {item["address"]: item["state"] for item in status["recipients"]}

    wait_for(lambda: states() == {BOB_REMOTE: "delivered", BOB: "delivered"}, timeout=DEADLINE,
             what="the status to show the remote delivery")
    assert queue_json(a) == []
    a.stop()
    b.stop()


def test_sigterm_closes_idle_keep_alive_connections_at_once(gateway):
    sock = tls_socket(gateway)
    sock.sendall(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ")  # the connection stays open (HTTP/1.1 keep-alive)
    assert gateway.stop() == 0
    assert read_reply(sock) is not None
    sock.close()
    assert "shutdown-forced" not in gateway.log()  # it did not wait for the timeout
