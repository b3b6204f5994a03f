"""AUTHENTICATE (RFC 3501 §6.2.2, RFC 9051 §6.2.2) with SASL-IR (RFC 4959),
driving the shared SASL exchange of :mod:`mailserverd.auth.sasl`.

Wire rules:

- ``AUTHENTICATE SP mechanism [SP initial-response]``; an initial response
  of ``=`` is an empty one (RFC 4959 §3).
- Server challenges are ``+ base64`` (an empty challenge is ``+ ``); each
  client response is one line of base64, read through the session's line
  limit with :meth:`ImapSession.read_next_line`. ``*`` cancels and a line
  that is not base64 fails: both tagged BAD (RFC 9051 §6.2.2).
- SCRAM's server-final data goes out as one more challenge, answered by an
  empty line before the OK (see mailserverd.auth.sasl).
- Failures: wrong credentials ``NO [AUTHENTICATIONFAILED]``, a foreign
  authorization identity ``NO [AUTHORIZATIONFAILED]``, throttled or
  unavailable ``NO [UNAVAILABLE]`` (RFC 5530 §3); a malformed mechanism
  message BAD.

No mechanism is offered before TLS unless ``auth.allow_plaintext`` (the
policy of :func:`mailserverd.auth.sasl.mechanisms`); asking for one then is
``NO [PRIVACYREQUIRED]``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from mailserverd.auth import sasl
from mailserverd.errors import MailError
from mailserverd.imap import responses
from mailserverd.imap.commands import State
from mailserverd.imap.parser import ParseError
from mailserverd.imap.responses import CRLF, Completion

#: The SASL mechanisms IMAP offers, best first (a subset of mailserverd.auth.sasl's).
IMAP_MECHANISMS = (sasl.SCRAM_SHA_256, sasl.PLAIN)

_FAILED = responses.mail_error("NO", responses.AUTHENTICATIONFAILED, "Authentication failed")
_UNAVAILABLE = responses.mail_error(
    "NO", responses.UNAVAILABLE, "Authentication temporarily unavailable, try again later", True)


@dataclass(frozen=True)
class ImapChallenge:
    """A challenge to send as ``+ base64`` (RFC 9051 §7.5 continue-req)."""

    data: bytes

    def to_bytes(self) -> bytes:
        return b"+ " + base64.b64encode(self.data) + CRLF


#: RFC 9051 §6.2.2 and RFC 5530 §3: the IMAP words of a SASL exchange.
IMAP_SASL = sasl.SaslWire(
    challenge=ImapChallenge,
    cancelled=responses.mail_error("BAD", None, "Authentication cancelled"),
    bad_base64=responses.mail_error("BAD", None, "Invalid base64 in authentication response"),
    failures={
        sasl.FAILURE_CREDENTIALS: _FAILED,
        sasl.FAILURE_AUTHORIZATION: responses.mail_error(
            "NO", "AUTHORIZATIONFAILED", "Not allowed to act as that user"),
        sasl.FAILURE_THROTTLED: _UNAVAILABLE,
        sasl.FAILURE_UNAVAILABLE: _UNAVAILABLE,
        sasl.FAILURE_MALFORMED: responses.mail_error("BAD", None, "Malformed authentication message"),
    },
)


def offered_mechanisms(session) -> list[str]:
    """The mechanism names AUTHENTICATE accepts now, best first."""
    allowed = sasl.mechanisms(session.tls_active, session.ctx.config.auth.allow_plaintext)
    return [name for name in allowed if name in IMAP_MECHANISMS]


def auth_capabilities(session) -> list[str]:
    """``AUTH=...`` capabilities for CAPABILITY (RFC 9051 §6.2.2): before login only,
    and only the mechanisms offered now (``SASL-IR``, RFC 4959 §6, is listed always)."""
    if session.state is not State.NOT_AUTHENTICATED:
        return []
    return ["AUTH=" + name for name in offered_mechanisms(session)]


def run(session, command) -> Deferred:
    """``AUTHENTICATE SP auth-type [SP (base64 / "=")]``.

    Returns a Deferred that fires with the tagged OK (carrying the new
    capabilities) once the exchange succeeds and the session is logged in,
    or fails with the MailError of the tagged NO/BAD. Raises MailError
    ``NO`` for a mechanism not offered, ParseError for bad syntax or an
    initial response that is not base64.
    """
    args = command.args
    args.expect_sp()
    name = args.atom().decode("ascii").upper()
    initial_token = None
    if not args.at_end():
        args.expect_sp()
        initial_token = args.atom()
    args.expect_end()
    initial: bytes | None = None
    if initial_token is not None:
        initial = sasl.decode_initial_response(initial_token)
        if initial is None:
            raise ParseError("Invalid base64 in initial response")
    if name not in IMAP_MECHANISMS and name not in sasl.PLAINTEXT_MECHANISMS:
        raise responses.mail_error("NO", None, "Unsupported authentication mechanism")
    if name not in offered_mechanisms(session):
        if not session.login_allowed():
            raise responses.mail_error("NO", responses.PRIVACYREQUIRED,
                                       "Authenticate over TLS (use STARTTLS)")
        raise responses.mail_error("NO", None, "Unsupported authentication mechanism")
    mechanism = sasl.create_mechanism(
        name, session.ctx.authenticator, session.client_ip, session.tls_active,
        allow_plaintext=session.ctx.config.auth.allow_plaintext, protocol="imap")
    return _ImapExchange(session, mechanism).start(initial)


class _ImapExchange:
    """Runs one SaslExchange over the IMAP session: sends each challenge, then
    claims the client's next line; ends the command with the outcome."""

    def __init__(self, session, mechanism: sasl.SaslMechanism):
        self._session = session
        self._done: Deferred = Deferred()
        self._line_handler = None
        self._exchange = sasl.SaslExchange(mechanism, IMAP_SASL, self._remember_line_handler,
                                           self._succeeded)

    def start(self, initial: bytes | None) -> Deferred:
        self._answer(self._exchange.step(initial))
        return self._done

    def _remember_line_handler(self, handler) -> None:
        # The exchange asks for the next line before its challenge is sent;
        # the line is claimed only after the challenge is written (_answer),
        # so a line already buffered can never be answered before it.
        self._line_handler = handler

    def _succeeded(self, user: str) -> Completion:
        self._session.logged_in(user)
        return Completion("Authenticated", "CAPABILITY " + " ".join(self._session.capabilities()))

    def _answer(self, outcome) -> None:
        """Act on what the exchange gave: a Deferred of it, a challenge, or the end."""
        if isinstance(outcome, Deferred):
            outcome.addCallbacks(self._answer, self._done.errback)
        elif isinstance(outcome, ImapChallenge):
            self._session.send(outcome.to_bytes())
            handler, self._line_handler = self._line_handler, None
            self._session.read_next_line(lambda line: self._answer(maybeDeferred(handler, line)))
        elif isinstance(outcome, (MailError, ParseError)):
            self._done.errback(Failure(outcome))
        else:
            self._done.callback(outcome)
