"""The send API: ``POST /api/v1/messages`` and ``GET /api/v1/messages/{id}``.

A message sent here takes the submission path of port 587, not a copy of
it: the sender must belong to the user (``LocalDelivery.sender_allowed``,
RFC 6409 §6.1), each recipient is checked as RCPT is (``check_recipient``
with other domains allowed), and ``LocalDelivery.deliver`` stores local
recipients and queues the others (DKIM-signed by the queue) in one step,
durable before it fires, with our ``Received:`` (``with HTTPSA``). Only then
is the message recorded for the status endpoint and 202 answered. Every
check comes before ``deliver``: a refused request has queued nothing.

Who is asking: ``Authorization: Bearer TOKEN`` (a token made by
``mailserverd token create``) or ``Basic`` with the account's password,
over TLS only, both through the :class:`~mailserverd.auth.accounts.Authenticator`
(failures are throttled per IP and account, and answered after the same
delay as any login). Then at most ``http_requests_per_minute`` per token
or account (429).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from mailserverd.auth.accounts import AuthFailed, AuthThrottled, AuthUnavailable
from mailserverd.delivery.local import ClientInfo
from mailserverd.errors import MailError, fresh
from mailserverd.mail.address import AddressError, canonical, split
from mailserverd.smtp.params import Transaction
from mailserverd.store.errors import StoreError
from mailserverd.store.webapi import WebMessage
from mailserverd.web import compose, problems
from mailserverd.web.tokens import parse_authorization, token_hash
from mailserverd.web.wire import HTTPRequest, HTTPResponse, json_response

log = Logger(namespace="mailserverd.web")

#: RFC 3848-style ``with`` keyword in Received: HTTP, over TLS, authenticated.
WITH_PROTOCOL = "HTTPSA"
#: The name in ``Received: from`` (HTTP has no HELO).
CLIENT_NAME = "http-api"
# An idempotency key: printable ASCII, short enough for an LMDB key beside the address.
_IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,100}\Z")
# Queue states as the status endpoint names them.
_STATES = {"active": "queued", "deferred": "deferred", "held": "held",
           "delivered": "delivered", "bounced": "bounced"}


class Principal:
    """An authenticated caller: ``user`` (canonical address) and ``rate_key``."""

    def __init__(self, user: str, rate_key: str):
        self.user = user
        self.rate_key = rate_key


@inlineCallbacks
def authenticate(gateway: Any, request: HTTPRequest):
    """The :class:`Principal` of ``request`` (a Deferred); fails with Problem
    403 without TLS, 401 for bad credentials, 429 when throttled or over the
    rate, 503 when passwords cannot be checked now."""
    if not request.secure:
        raise fresh(problems.TLS_REQUIRED)
    credentials = parse_authorization(request.headers.get("authorization"))
    authenticator = gateway.authenticator
    try:
        if credentials.scheme == "bearer":
            principal = yield _token_principal(gateway, credentials.token, request.client_ip)
        else:
            user = yield authenticator.authenticate(credentials.user, credentials.password,
                                                    request.client_ip, mechanism="BASIC",
                                                    protocol="http")
            principal = Principal(user, "user:" + user)
    except AuthFailed:
        raise problems.UNAUTHORIZED.with_detail("invalid credentials") from None
    except AuthThrottled:
        raise problems.too_many_requests(gateway.limits.auth_failure_window) from None
    except AuthUnavailable:
        raise problems.UNAVAILABLE.with_detail("credentials cannot be checked now") from None
    wait = gateway.rate.take(principal.rate_key)
    if wait:
        raise problems.too_many_requests(wait)
    return principal


@inlineCallbacks
def _token_principal(gateway: Any, token: str, client_ip: str):
    """Look the token up by its hash; the throttle counts failures as for passwords."""
    digest = token_hash(token)
    found = gateway.store.get_web_token(digest)
    if found is not None and gateway.store.get_user(found.user) is None:
        found = None  # the account was removed: its tokens die with it
    # An unknown token counts against the client's IP and that token, never a shared name.
    key = found.user if found is not None else "token:" + digest[:8].hex()
    authenticator = gateway.authenticator
    yield authenticator.check_throttle(key, client_ip, mechanism="TOKEN", protocol="http")
    user = yield authenticator.record_result(key, client_ip, succeeded=found is not None,
                                             mechanism="TOKEN", protocol="http")
    return Principal(user, "token:" + found.token_id)


def _parse_body(body: bytes, media_type: str, hostname: str, when: float):
    """(Composed, idempotency key from the JSON or ""): runs in a thread."""
    if media_type == "message/rfc822":
        return compose.compose_raw(body, hostname, when), ""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        raise problems.BAD_JSON.with_detail("the body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise problems.BAD_JSON.with_detail("the JSON is nested too deeply") from None
    key = doc.get("idempotency_key", "") if isinstance(doc, dict) else ""
    return compose.compose_json(doc, hostname, when), key


def _idempotency_key(request: HTTPRequest, from_body: object) -> str:
    header = request.headers.get("idempotency-key", b"").decode("latin-1").strip()
    key = header or from_body or ""
    if not isinstance(key, str) or (key and not _IDEMPOTENCY_KEY.match(key)):
        raise problems.BAD_REQUEST.with_detail("the idempotency key must be 1-100 printable ASCII characters")
    return key


def _accepted(message_id: str, recipients: list[tuple[str, str]], replayed: bool = False) -> HTTPResponse:
    headers = (("Location", f"/api/v1/messages/{message_id}"),)
    if replayed:
        headers += (("Idempotent-Replayed", "true"),)
    return json_response(202, {"id": message_id, "status": "accepted",
                               "recipients": [address for address, _ in recipients]}, headers)


@inlineCallbacks
def send_message(gateway: Any, request: HTTPRequest, _: str):
    """``POST /api/v1/messages``: JSON or message/rfc822 in, 202 with the id out."""
    principal = yield authenticate(gateway, request)
    media_type = request.media_type()
    if media_type not in ("application/json", "message/rfc822"):
        raise problems.UNSUPPORTED_TYPE.with_detail(f"got {media_type or 'no Content-Type'}")
    now = gateway.clock.seconds()
    composed, body_key = yield gateway.in_thread(_parse_body, request.body, media_type,
                                                 gateway.config.server.hostname, now)
    key = _idempotency_key(request, body_key)
    if key:
        earlier_id = gateway.store.find_web_idempotent(principal.user, key)
        earlier = gateway.store.get_web_message(principal.user, earlier_id) if earlier_id else None
        if earlier is not None:
            return _accepted(earlier.message_id, list(earlier.recipients), replayed=True)
        if (principal.user, key) in gateway.sending:
            raise fresh(problems.CONFLICT)
        gateway.sending.add((principal.user, key))
    try:
        result = yield _submit(gateway, principal.user, composed, request, key, now)
    finally:
        gateway.sending.discard((principal.user, key))
    return result


@inlineCallbacks
def _submit(gateway: Any, user: str, composed: compose.Composed, request: HTTPRequest,
            key: str, now: float):
    """Port 587's checks and delivery for ``composed`` (see the module docstring)."""
    limits, delivery = gateway.limits, gateway.delivery
    if len(composed.raw) > limits.message_size_max:
        raise problems.TOO_LARGE.with_detail(f"the message exceeds {limits.message_size_max} octets")
    if len(composed.recipients) > limits.smtp_recipients_max:
        raise problems.TOO_MANY_RECIPIENTS.with_detail(f"at most {limits.smtp_recipients_max}")
    if not delivery.sender_allowed(user, composed.sender):
        raise problems.SENDER_NOT_OWNED.with_detail(composed.sender)
    envelope = Transaction(sender=composed.sender, body="8BITMIME" if composed.eight_bit else "7BIT")
    placed: list[tuple[str, str]] = []
    try:
        for address in composed.recipients:
            recipient = canonical(address)
            users = yield maybeDeferred(delivery.check_recipient, recipient, remote_allowed=True,
                                        size=len(composed.raw))
            if not users:
                raise problems.RECIPIENT_REFUSED.with_detail(f"550 5.1.1 {recipient}: no such user here")
            envelope.add_recipient(recipient, users)
            local = gateway.store.get_domain(split(recipient)[1]) is not None
            placed.append((recipient, "local" if local else "remote"))
        client = ClientInfo(helo=CLIENT_NAME, ip=request.client_ip, protocol=WITH_PROTOCOL,
                            tls=request.tls, authenticated_user=user)
        delivered = yield delivery.deliver(composed.sender, list(envelope.recipients),
                                           list(envelope.users), composed.raw, client, envelope=envelope)
    except MailError as error:
        raise problems.from_mail_error(error) from None
    except AddressError as error:
        raise problems.BAD_ADDRESS.with_detail(str(error)) from None
    record = WebMessage(delivered.queue_id, int(now * 1000), tuple(placed), key)
    expire_before = int((now - limits.http_status_retention) * 1000)
    try:
        yield gateway.store.add_web_message(user, record, expire_before)
    except StoreError as error:
        # The message is durable and goes out: say so; only its status cannot be shown.
        log.warn("http-status-not-recorded id={id} error={error!r}", id=delivered.queue_id, error=error)
    return _accepted(delivered.queue_id, placed)


@inlineCallbacks
def message_status(gateway: Any, request: HTTPRequest, message_id: str):
    """``GET /api/v1/messages/{id}``: each recipient's state (local ones are
    delivered when accepted; others as the queue has them)."""
    principal = yield authenticate(gateway, request)
    record = gateway.store.get_web_message(principal.user, message_id)
    if record is None:
        raise problems.NOT_FOUND.with_detail(f"no message {message_id}")
    queued = {entry.recipient: entry for entry in _queue_entries(gateway, message_id)}
    recipients = []
    for address, where in record.recipients:
        entry = queued.get(address)
        if where == "local":
            recipients.append({"address": address, "state": "delivered"})
        elif entry is None:
            recipients.append({"address": address, "state": "unknown"})
        else:
            recipients.append({"address": address, "state": _STATES.get(entry.state, entry.state),
                               "attempts": entry.attempts, "last_reply": entry.last_reply})
    created = datetime.fromtimestamp(record.created / 1000, timezone.utc)
    return json_response(200, {"id": message_id, "created": created.isoformat().replace("+00:00", "Z"),
                               "recipients": recipients})


def _queue_entries(gateway: Any, message_id: str) -> list:
    """The queue's entries of ``message_id``, those still queued and the finished ones."""
    queue = gateway.queue
    if queue is None:
        return []
    return queue.entries(message_id) + queue.final_entries(message_id)
