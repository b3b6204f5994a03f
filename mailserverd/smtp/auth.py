"""SMTP AUTH (RFC 4954): a SASL exchange over SMTP lines, driving mailserverd.auth.sasl.

Wire rules (RFC 4954 §4):

- ``AUTH mechanism [initial-response]``; an initial response of ``=`` is an
  empty one. Only after EHLO, outside a mail transaction, once per session.
- Challenges are ``334 base64``; each client response is one line of base64
  (through the session's line limit). ``*`` cancels: 501 5.0.0; a response
  that is not base64: 501 5.5.2.
- SCRAM's server-final data goes out as one more 334; the client must answer
  it with an empty line before the 235 (see mailserverd.auth.sasl).
- Replies (RFC 4954 §6): 235 2.7.0 success, 535 5.7.8 bad credentials,
  454 4.7.0 throttled or unavailable, 504 5.5.4 unknown mechanism, 538 5.7.11
  a plaintext mechanism without TLS. After ``smtp_auth_failures_max`` failed
  exchanges in one session: 421 4.7.0 and close (Postfix's
  smtpd_hard_error_limit idea), on top of the Authenticator's per-IP and
  per-account throttling.

Only listeners whose policy offers AUTH (submission, smtps) accept it; the
MX answers 503 5.5.1. No mechanism is offered before TLS unless
``auth.allow_plaintext`` (the policy of :func:`mailserverd.auth.sasl.mechanisms`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from twisted.internet.defer import Deferred

from mailserverd.auth import sasl
from mailserverd.smtp import replies
from mailserverd.smtp.params import ArgumentError
from mailserverd.smtp.replies import Reply

if TYPE_CHECKING:  # pragma: no cover
    from mailserverd.smtp.session import SMTPSession

#: RFC 4954 §4: the initial response that stands for an empty one, and the cancel line.
_EMPTY_INITIAL_RESPONSE = b"="
_CANCEL = b"*"

_FAILURE_REPLIES = {
    sasl.FAILURE_CREDENTIALS: replies.S535_AUTH_FAILED,
    sasl.FAILURE_AUTHORIZATION: replies.S535_AUTH_FAILED,
    sasl.FAILURE_THROTTLED: replies.S454_AUTH_TEMPORARY,
    sasl.FAILURE_UNAVAILABLE: replies.S454_AUTH_TEMPORARY,
    sasl.FAILURE_MALFORMED: replies.S501_AUTH_MALFORMED,
}

ExchangeResult = Union[Reply, "Deferred[Reply]"]
SYNTAX = "AUTH mechanism [initial-response]"


def offered_mechanisms(session: "SMTPSession") -> list[str]:
    """The mechanisms EHLO advertises and AUTH accepts now, best first ([] = no AUTH)."""
    if not session.policy.auth_offered or session.authenticated_user:
        return []
    return sasl.mechanisms(session.tls_active, session.policy.allow_plaintext)


def smtp_auth(session: "SMTPSession", arg: bytes) -> ExchangeResult:
    """AUTH mechanism [initial-response] (RFC 4954 §4)."""
    if not session.policy.auth_offered:
        return replies.S503_AUTH_NOT_ENABLED
    if session.authenticated_user:
        return replies.S503_ALREADY_AUTHENTICATED  # RFC 4954 §4: once per session
    parts = arg.split(b" ")
    if not 1 <= len(parts) <= 2 or not parts[0]:
        raise ArgumentError(replies.syntax_error(SYNTAX))
    try:
        mechanism = sasl.create_mechanism(
            parts[0], session.authenticator, session.peer.ip, session.tls_active,
            allow_plaintext=session.policy.allow_plaintext)
    except sasl.UnknownMechanism:
        return replies.S504_UNKNOWN_MECHANISM
    except sasl.MechanismNotAllowed:
        return replies.S538_ENCRYPTION_REQUIRED
    initial: bytes | None = None
    if len(parts) == 2:
        initial = b"" if parts[1] == _EMPTY_INITIAL_RESPONSE else sasl.decode_response(parts[1])
        if initial is None:
            return replies.S501_AUTH_BAD_BASE64
    return SaslExchange(session, mechanism).step(initial)


class SaslExchange:
    """One AUTH exchange: feeds client lines to a mechanism and turns its steps into replies."""

    def __init__(self, session: "SMTPSession", mechanism: sasl.SaslMechanism):
        self._session = session
        self._mechanism = mechanism

    def step(self, client_data: bytes | None) -> "Deferred[Reply]":
        """Give ``client_data`` to the mechanism; fires with the reply to send."""
        return self._mechanism.step(client_data).addCallback(self._reply_for_step)

    def _reply_for_step(self, step: sasl.SaslStep) -> Reply:
        if isinstance(step, sasl.SaslChallenge):
            self._session.read_next_line(self._client_response)
            return replies.challenge(step.data)
        if isinstance(step, sasl.SaslFailure):
            return self._failed(_FAILURE_REPLIES[step.kind])
        if step.server_data is not None:
            # RFC 4422 §3.6 via mailserverd.auth.sasl: the success data goes as a challenge.
            self._session.read_next_line(lambda line: self._success_acknowledged(step.user, line))
            return replies.challenge(step.server_data)
        return self._succeeded(step.user)

    def _client_response(self, line: bytes) -> ExchangeResult:
        """The client's answer to a challenge: "*" cancels, else base64 for the mechanism."""
        if line == _CANCEL:
            return replies.S501_AUTH_CANCELLED
        client_data = sasl.decode_response(line)
        if client_data is None:
            return replies.S501_AUTH_BAD_BASE64
        return self.step(client_data)

    def _success_acknowledged(self, user: str, line: bytes) -> Reply:
        """The answer to the server-final challenge must be empty; anything else fails AUTH."""
        if line:
            return self._failed(replies.S535_AUTH_FAILED)
        return self._succeeded(user)

    def _succeeded(self, user: str) -> Reply:
        self._session.authenticated_user = user
        return replies.S235_AUTH_OK

    def _failed(self, reply: Reply) -> Reply:
        """Count a failed exchange; past the limit, 421 and close instead."""
        session = self._session
        session.auth_failures += 1
        if session.auth_failures >= session.limits.smtp_auth_failures_max:
            session.close_after_reply()
            return replies.S421_TOO_MANY_AUTH_FAILURES
        return reply
