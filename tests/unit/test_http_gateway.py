"""The HTTP gateway's sans-I/O parts: composing messages, setup documents, tokens,
request rates, problems, and its records in the store (real LMDB in tmp_path)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from mailserverd.config import ListenerConfig
from mailserverd.limits import MIB, Limits
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import QueuedMessage, QueueEntry
from mailserverd.store.webapi import WebMessage, WebToken
from mailserverd.web import autoconfig, problems
from mailserverd.web.compose import compose_json, compose_raw
from mailserverd.ratelimit import TokenBuckets
from mailserverd.web.tokens import new_token, parse_authorization, token_hash

ALICE = "alice@example.test"


def problem_of(call, *args) -> problems.Problem:
    with pytest.raises(problems.Problem) as caught:
        call(*args)
    return caught.value


# --- composing


def test_json_message_is_7bit_mime_with_every_part():
    data = bytes(range(256)) * 10
    composed = compose_json({
        "from": {"address": ALICE, "name": "Zoë"}, "to": ["b@x.test", "B@X.test"], "cc": "c@y.test",
        "bcc": ["d@z.test"], "subject": "héllo", "text": "tëxt", "html": "<p>h</p>",
        "attachments": [{"filename": "f.bin", "content": base64.b64encode(data).decode()}],
    }, "mx.example.test", 0)
    assert composed.sender == ALICE
    assert composed.recipients == ("b@x.test", "B@X.test", "c@y.test", "d@z.test")
    assert not composed.eight_bit and b"\r\n" in composed.raw and b"\n" not in composed.raw.replace(b"\r\n", b"")
    message = email.message_from_bytes(composed.raw, policy=email.policy.default)
    assert "d@z.test" not in composed.raw.decode()  # Bcc is envelope only
    assert str(message["Subject"]) == "héllo" and message["From"].addresses[0].display_name == "Zoë"
    assert message["Message-ID"].endswith("@mx.example.test>")
    assert message["Date"] == "Thu, 01 Jan 1970 00:00:00 +0000"
    [attachment] = message.iter_attachments()
    assert attachment.get_content() == data and attachment.get_filename() == "f.bin"
    assert message.get_body(("plain",)).get_content().strip() == "tëxt"


@pytest.mark.parametrize("doc, code", [
    ({"from": ALICE, "to": "b@x.test", "subject": "a\r\nBcc: e@x.test", "text": "t"}, "header-injection"),
    ({"from": ALICE, "to": "b@x.test", "subject": "a\x00", "text": "t"}, "header-injection"),
    ({"from": ALICE, "to": "b@x.test", "subject": "a\u2028b", "text": "t"}, "header-injection"),
    ({"from": ALICE, "to": "b@x.test", "subject": "a\x85b", "text": "t"}, "header-injection"),
    ({"from": ALICE + "\n", "to": "b@x.test", "text": "t"}, "header-injection"),
    ({"from": ALICE, "to": ["b@x.test>\r\nRCPT TO:<e@x.test"], "text": "t"}, "header-injection"),
    ({"from": ALICE, "to": "b@x.test", "text": "t", "headers": {"X-A": "1\nBcc: e@x.test"}},
     "header-injection"),
    ({"from": ALICE, "to": "b@x.test", "text": "t", "headers": {"X A": "1"}}, "header-injection"),
    ({"from": ALICE, "to": "b@x.test", "text": "t", "headers": {"Received": "x"}}, "bad-request"),
    ({"from": ALICE, "to": "b@x.test", "attachments": [{"filename": "a", "content": "@@@"}]}, "bad-base64"),
    ({"from": ALICE, "to": "b@x.test", "attachments": [{"filename": "a", "content": 5}]}, "bad-base64"),
    ({"from": ALICE, "to": "b@x.test", "attachments": [{"filename": "a", "content": "",
                                                       "content_type": "bad"}]}, "bad-request"),
    ({"from": "no-at-sign", "to": "b@x.test", "text": "t"}, "bad-address"),
    ({"from": ALICE, "to": "b@x.test <b@x.test>", "text": "t"}, "bad-address"),
    ({"from": "zoë@example.test", "to": "b@x.test", "text": "t"}, "bad-address"),
    ({"from": ALICE, "text": "t"}, "bad-request"),
    ({"from": ALICE, "to": "b@x.test"}, "bad-request"),
    ({"from": ALICE, "to": "b@x.test", "text": 5}, "bad-request"),
    ({"from": ALICE, "to": "b@x.test", "text": "t", "colour": "red"}, "bad-request"),
    ([], "malformed-json"),
])
def test_bad_json_messages_are_refused_naming_the_member(doc, code):
    assert problem_of(compose_json, doc, "h", 0).code == code


def test_raw_message_envelope_from_its_header_and_bcc_removed():
    raw = (b"From: Alice <alice@example.test>\nTo: b@x.test, c@y.test\nBcc: d@z.test,\n e@z.test\n"
           b"X-After: kept\nSubject: s\n\nbody\n")
    composed = compose_raw(raw, "mx.example.test", 0)
    assert composed.sender == ALICE
    assert composed.recipients == ("b@x.test", "c@y.test", "d@z.test", "e@z.test")
    assert b"Bcc" not in composed.raw and b"e@z.test" not in composed.raw
    assert composed.raw.endswith(b"X-After: kept\r\nSubject: s\r\n\r\nbody\r\n")
    assert composed.raw.startswith(b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\nMessage-ID: <")
    dated = compose_raw(b"From: a@b.test\r\nTo: c@d.test\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\n", "h", 0)
    assert dated.raw == b"From: a@b.test\r\nTo: c@d.test\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\n"


@pytest.mark.parametrize("raw", [
    b"", b"no header at all", b"To: b@x.test\r\n\r\nno from", b"From: a@b.test, c@d.test\r\nTo: x@y.test\r\n\r\n",
    b"From: a@b.test\r\n\r\nnobody to send to", b"From: a@b.test\r\nTo: x@y.test\r\n\r\nbare\rCR",
    b"\xff\xfe\x00garbage",
])
def test_bad_raw_messages_are_refused(raw):
    assert problem_of(compose_raw, raw, "h", 0).status == 400


# --- setup documents


LISTENERS = [ListenerConfig(kind=kind, port=port) for kind, port in (
    ("smtp", 25), ("submission", 587), ("smtps", 465), ("imap", 143), ("imaps", 993),
    ("https", 443), ("http", 80))]


def test_mail_servers_are_the_client_listeners_implicit_tls_first():
    servers = autoconfig.mail_servers(LISTENERS)
    assert [(s.protocol, s.port, s.implicit_tls) for s in servers] == [
        ("imap", 993, True), ("imap", 143, False), ("smtp", 465, True), ("smtp", 587, False)]


def test_autoconfig_document():
    root = ET.fromstring(autoconfig.render_autoconfig("example.test", "mail.example.test",
                                                      autoconfig.mail_servers(LISTENERS)))
    provider = root.find("emailProvider")
    assert root.get("version") == "1.1" and provider.get("id") == "example.test"
    incoming = provider.findall("incomingServer")
    assert [(s.get("type"), s.findtext("port"), s.findtext("socketType")) for s in incoming] == [
        ("imap", "993", "SSL"), ("imap", "143", "STARTTLS")]
    assert {s.findtext("username") for s in provider.iter() if s.find("username") is not None} == {
        "%EMAILADDRESS%"}


def test_autodiscover_request_parsing():
    body = (f'<Autodiscover xmlns="{autoconfig.AUTODISCOVER_REQUEST_NS}"><Request>'
            f"<EMailAddress> {ALICE} </EMailAddress></Request></Autodiscover>").encode()
    assert autoconfig.parse_autodiscover_request(body) == ALICE
    assert autoconfig.parse_autodiscover_request(
        b"<Autodiscover><Request><EMailAddress>a@b.test</EMailAddress></Request></Autodiscover>") == "a@b.test"
    for bad in (b"<Autodiscover/>", b"not xml", b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",
                b"<Autodiscover><Request><EMailAddress/></Request></Autodiscover>"):
        assert problem_of(autoconfig.parse_autodiscover_request, bad).status == 400


# --- tokens, rates, problems


def test_tokens_are_long_random_and_parsed_from_bearer_or_basic():
    token, token_id = new_token()
    assert token.startswith("msd_") and len(token) == 47 and len(token_id) == 8
    assert token_hash(token) != token_hash(new_token()[0]) and len(token_hash(token)) == 32
    assert parse_authorization(b"Bearer " + token.encode()).token == token
    basic = parse_authorization(b"Basic " + base64.b64encode("zoë@x.test:pa:ss".encode()))
    assert (basic.scheme, basic.user, basic.password) == ("basic", "zoë@x.test", "pa:ss")
    for bad in (None, b"", b"Bearer", b"Digest x", b"Basic !!!", b"Basic " + base64.b64encode(b"nocolon"),
                b"Bearer " + b"x" * 5000):
        problem = problem_of(parse_authorization, bad)
        assert problem.status == 401 and ("WWW-Authenticate", 'Bearer realm="mailserverd"') in problem.headers


def test_request_rate_allows_a_burst_then_the_sustained_rate_per_key():
    clock = Clock()
    rate = TokenBuckets.per_minute(clock, per_minute=60, burst=3)
    assert [rate.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.take("a") == 1.0 and rate.take("b") == 0.0
    clock.advance(1)
    assert rate.take("a") == 0.0 and rate.take("a") >= 1.0
    clock.advance(10)
    assert [rate.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]


def test_problem_document_is_rfc_9457():
    doc = json.loads(problems.render(problems.SENDER_NOT_OWNED.with_detail("bob@example.test")))
    assert doc == {"type": problems.TYPE_BASE + "sender-not-owned", "status": 403,
                   "code": "sender-not-owned", "title": problems.SENDER_NOT_OWNED.title,
                   "detail": "bob@example.test"}
    assert problems.too_many_requests(7).headers == (("Retry-After", "7"),)


# --- records in the store


@pytest.fixture
def store(tmp_path):
    opened = LMDBStore.open(str(tmp_path / "data"), 1, Limits(store_map_size=32 * MIB))
    opened.start()
    yield opened
    pytest_twisted.blockon(opened.stop())


@pytest_twisted.ensureDeferred
async def test_tokens_are_stored_by_hash_listed_per_user_and_revoked(store):
    await store.add_web_token(b"h" * 32, WebToken("id1", ALICE, "ci", 10))
    await store.add_web_token(b"i" * 32, WebToken("id2", "bob@example.test", "", 20))
    assert store.get_web_token(b"h" * 32) == WebToken("id1", ALICE, "ci", 10)
    assert store.get_web_token(b"x" * 32) is None
    assert [t.token_id for t in store.list_web_tokens(ALICE)] == ["id1"]
    with pytest.raises(Exception):
        await store.revoke_web_token("bob@example.test", "id1")  # not bob's
    await store.revoke_web_token(ALICE, "id1")
    assert store.get_web_token(b"h" * 32) is None and store.list_web_tokens(ALICE) == []


@pytest_twisted.ensureDeferred
async def test_sent_messages_are_per_user_with_idempotency_keys_and_expire(store):
    first = WebMessage("AAA", 1000, (("b@x.test", "remote"), (ALICE, "local")), "key-1")
    await store.add_web_message(ALICE, first, expire_before=0)
    assert store.get_web_message(ALICE, "AAA") == first
    assert store.get_web_message("bob@example.test", "AAA") is None
    assert store.find_web_idempotent(ALICE, "key-1") == "AAA"
    assert store.find_web_idempotent("bob@example.test", "key-1") is None
    await store.add_web_message(ALICE, WebMessage("BBB", 5000, ((ALICE, "local"),)), expire_before=2000)
    assert store.get_web_message(ALICE, "AAA") is None and store.find_web_idempotent(ALICE, "key-1") is None
    assert store.get_web_message(ALICE, "BBB") is not None


# --- the queue's final entries (store/queuedone.py)


def test_a_finished_message_leaves_its_final_entries_behind(tmp_path):
    from test_queue import CONTENT, entries_for, open_queue, wait

    queue = open_queue(tmp_path)
    try:
        message = QueuedMessage("CCCC00000001", ALICE, 100.0, len(CONTENT), 2)
        first, second = entries_for("CCCC00000001", "b@x.test", "c@y.test")
        wait(queue.enqueue(message, [first, second], CONTENT))
        wait(queue.update([replace(first, state="delivered", attempts=1, last_reply="250 ok")]))
        assert queue.final_entries("CCCC00000001") == []  # not finished yet
        wait(queue.update([replace(second, state="bounced", attempts=1, last_reply="550 no")]))
        assert queue.entries("CCCC00000001") == []
        kept = queue.final_entries("CCCC00000001")
        assert [(e.recipient, e.state, e.last_reply) for e in kept] == [
            ("b@x.test", "delivered", "250 ok"), ("c@y.test", "bounced", "550 no")]
        assert all(isinstance(e, QueueEntry) for e in kept)
    finally:
        wait(queue.stop())
