"""POP3 AUTH (RFC 5034): a SASL exchange over POP3 lines, driving mailserverd.auth.sasl.

Wire rules (RFC 5034 §4):

- ``AUTH mechanism [initial-response]``; an initial response of ``=`` is an
  empty one. ``AUTH`` alone lists the mechanisms, one a line, as Dovecot does
  (an extension clients such as fetchmail probe with).
- Server challenges are ``+ base64``; each client response is one line of
  base64, read through the session's line limit. ``*`` cancels (-ERR); a
  response that is not base64 ends the exchange with -ERR.
- SCRAM's server-final data goes out as one more challenge; the client must
  answer it with an empty line before the +OK (see mailserverd.auth.sasl).
- Failures: wrong credentials ``-ERR [AUTH]``; throttled or unavailable
  ``-ERR [SYS/TEMP]`` (RFC 3206). Success opens the maildrop as PASS does,
  including ``-ERR [IN-USE]`` (RFC 2449 §8.1.2).

No mechanism is offered before TLS unless ``auth.allow_plaintext`` (the
policy of :func:`mailserverd.auth.sasl.mechanisms`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from twisted.internet.defer import Deferred

from mailserverd.auth import sasl
from mailserverd.pop3 import replies
from mailserverd.pop3.maildrop import open_maildrop
from mailserverd.pop3.replies import Challenge, Reply

if TYPE_CHECKING:  # pragma: no cover
    from mailserverd.pop3.session import POP3Session

#: The SASL mechanisms POP3 offers, best first (a subset of mailserverd.auth.sasl's).
POP3_MECHANISMS = (sasl.SCRAM_SHA_256, sasl.PLAIN)

#: RFC 5034 §4 and RFC 3206: the POP3 words of a SASL exchange.
POP3_SASL = sasl.SaslWire(
    challenge=Challenge,
    cancelled=replies.AUTH_CANCELLED,
    bad_base64=replies.AUTH_BAD_BASE64,
    failures={
        sasl.FAILURE_CREDENTIALS: replies.AUTH_FAILED,
        sasl.FAILURE_AUTHORIZATION: replies.AUTH_FAILED,
        sasl.FAILURE_THROTTLED: replies.AUTH_TEMPORARILY_UNAVAILABLE,
        sasl.FAILURE_UNAVAILABLE: replies.AUTH_TEMPORARILY_UNAVAILABLE,
        sasl.FAILURE_MALFORMED: replies.AUTH_MALFORMED,
    },
)

ExchangeResult = Union[Reply, Challenge, Deferred]


def offered_mechanisms(session: "POP3Session") -> list[str]:
    """The mechanism names AUTH accepts now (and CAPA's SASL line lists), best first."""
    allowed = sasl.mechanisms(session.tls_active, session.ctx.config.auth.allow_plaintext)
    return [name for name in allowed if name in POP3_MECHANISMS]


def cmd_auth(session: "POP3Session", args: list[bytes]) -> ExchangeResult:
    """RFC 5034 §4 AUTH mechanism [initial-response]; AUTH alone lists the mechanisms.

    Returns the first challenge, or a Deferred of the final reply; later
    client lines go to the exchange through ``session.read_next_line``.
    """
    offered = offered_mechanisms(session)
    if not args:
        names = tuple(name.encode("ascii") for name in offered)
        return replies.ok(replies.MECHANISMS_FOLLOW, names)
    if not offered:
        return replies.AUTH_DISALLOWED_WITHOUT_TLS
    name = args[0].decode("ascii", "replace").upper()
    if name not in offered:
        return replies.UNSUPPORTED_MECHANISM
    session.pending_user = None  # AUTH replaces any USER given before it
    initial: bytes | None = None
    if len(args) == 2:
        initial = sasl.decode_initial_response(args[1])
        if initial is None:
            return replies.AUTH_BAD_BASE64
    mechanism = sasl.create_mechanism(
        name, session.ctx.authenticator, session.client_ip, session.tls_active,
        allow_plaintext=session.ctx.config.auth.allow_plaintext, protocol="pop3",
    )
    exchange = sasl.SaslExchange(mechanism, POP3_SASL, session.read_next_line,
                                 lambda user: open_maildrop(session, user))
    return exchange.step(initial)
