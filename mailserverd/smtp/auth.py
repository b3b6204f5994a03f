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

#: RFC 4954 §4, §6: the SMTP words of a SASL exchange.
SMTP_SASL = sasl.SaslWire(
    challenge=replies.challenge,
    cancelled=replies.S501_AUTH_CANCELLED,
    bad_base64=replies.S501_AUTH_BAD_BASE64,
    failures={
        sasl.FAILURE_CREDENTIALS: replies.S535_AUTH_FAILED,
        sasl.FAILURE_AUTHORIZATION: replies.S535_AUTH_FAILED,
        sasl.FAILURE_THROTTLED: replies.S454_AUTH_TEMPORARY,
        sasl.FAILURE_UNAVAILABLE: replies.S454_AUTH_TEMPORARY,
        sasl.FAILURE_MALFORMED: replies.S501_AUTH_MALFORMED,
    },
)

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
            allow_plaintext=session.policy.allow_plaintext, protocol="smtp")
    except sasl.UnknownMechanism:
        return replies.S504_UNKNOWN_MECHANISM
    except sasl.MechanismNotAllowed:
        return replies.S538_ENCRYPTION_REQUIRED
    initial: bytes | None = None
    if len(parts) == 2:
        initial = sasl.decode_initial_response(parts[1])
        if initial is None:
            return replies.S501_AUTH_BAD_BASE64

    def succeeded(user: str) -> Reply:
        guard = session.guard
        if guard is not None and not guard.session_opened(user, session, session.peer.ip, "smtp"):
            return replies.S454_TOO_MANY_SESSIONS
        session.authenticated_user = user
        return replies.S235_AUTH_OK

    exchange = sasl.SaslExchange(mechanism, SMTP_SASL, session.read_next_line, succeeded,
                                 lambda reply: _failed(session, reply))
    return exchange.step(initial)


def _failed(session: "SMTPSession", reply: Reply) -> Reply:
    """Count a failed exchange; past the limit, 421 and close instead."""
    session.auth_failures += 1
    if session.auth_failures >= session.limits.smtp_auth_failures_max:
        session.close_after_reply()
        return replies.S421_TOO_MANY_AUTH_FAILURES
    return reply
