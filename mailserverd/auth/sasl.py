"""SASL server mechanisms, sans-I/O: PLAIN, LOGIN and SCRAM-SHA-256.

Every protocol drives a mechanism the same way::

    mech = create_mechanism(name, authenticator, client_ip, tls_active,
                            allow_plaintext=config_allows_plaintext, protocol="imap")
    step = yield mech.step(initial_response)   # bytes, b"" for "=", or None
    while isinstance(step, SaslChallenge):
        send base64(step.data) as a challenge (SMTP 334, IMAP "+", POP3 "+")
        read the client's line; "*" cancels: drop ``mech``, answer as the
        protocol says (SMTP 501, IMAP BAD, POP3 -ERR); bad base64 likewise
        step = yield mech.step(base64-decoded line)
    SaslSuccess  -> if step.server_data is not None (SCRAM's "v=..."), it
                    must still reach the client. Our success replies carry no
                    data, so (RFC 4422 §3.6) send it as one more challenge
                    (SMTP "334 <b64>", IMAP "+ <b64>", POP3 "+ <b64>"), read
                    the client's response, which must be empty (anything
                    else, "*" included, fails the AUTH), then send the
                    success reply. The user is ``step.user``.
    SaslFailure  -> reply by ``step.kind`` (see the FAILURE_* constants).

Base64 on the wire is the protocol's job; mechanisms see and give raw bytes.
Password checks, throttling, the failure delay and login logging all go
through the :class:`~mailserverd.auth.accounts.Authenticator`, so they apply
to SASL exactly as to IMAP LOGIN and POP3 PASS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Callable, Union

from twisted.internet import defer
from twisted.python.failure import Failure

from mailserverd.auth.accounts import (
    AuthError,
    Authenticator,
    AuthThrottled,
    AuthUnavailable,
)
from mailserverd.auth.passwords import PasswordError, saslprep
from mailserverd.store.errors import StoreError
from mailserverd.store.types import ScramSecrets

SCRAM_SHA_256 = "SCRAM-SHA-256"
PLAIN = "PLAIN"
LOGIN = "LOGIN"
#: Mechanisms that send the password itself; offered only over TLS unless allowed.
PLAINTEXT_MECHANISMS = (PLAIN, LOGIN)

#: Wrong user or password. SMTP 535 5.7.8; IMAP NO [AUTHENTICATIONFAILED]; POP3 -ERR [AUTH].
FAILURE_CREDENTIALS = "credentials"
#: Authenticated, but may not act as the requested authorization identity.
#: SMTP 535 5.7.8; IMAP NO [AUTHORIZATIONFAILED]; POP3 -ERR [AUTH].
FAILURE_AUTHORIZATION = "authorization"
#: Too many recent failures. SMTP 454 4.7.0; IMAP NO [UNAVAILABLE]; POP3 -ERR [SYS/TEMP].
FAILURE_THROTTLED = "throttled"
#: Passwords cannot be checked now. SMTP 454 4.7.0; IMAP NO [UNAVAILABLE]; POP3 -ERR [SYS/TEMP].
FAILURE_UNAVAILABLE = "unavailable"
#: The client's message breaks the mechanism's syntax. SMTP 501 5.5.2; IMAP BAD; POP3 -ERR.
FAILURE_MALFORMED = "malformed"


@dataclass(frozen=True)
class SaslChallenge:
    """Send ``data`` to the client as a challenge and feed its response to ``step``."""

    data: bytes


@dataclass(frozen=True)
class SaslSuccess:
    """Authenticated as ``user`` (canonical address). ``server_data``: see the module docstring."""

    user: str
    server_data: bytes | None = None


@dataclass(frozen=True)
class SaslFailure:
    """The exchange failed; ``kind`` is a FAILURE_* constant, ``reason`` text for logs."""

    kind: str
    reason: str


SaslStep = Union[SaslChallenge, SaslSuccess, SaslFailure]


class UnknownMechanism(ValueError):
    """The client asked for a mechanism this server does not implement.
    SMTP 504 5.5.4; IMAP NO; POP3 -ERR."""


class MechanismNotAllowed(ValueError):
    """A plaintext mechanism was asked for without TLS while that is not allowed.
    SMTP 538 5.7.11; IMAP NO [PRIVACYREQUIRED]; POP3 -ERR."""


class SaslStateError(RuntimeError):
    """``step`` was called after the exchange ended: a bug in the calling protocol."""


def mechanisms(tls_active: bool, allow_plaintext: bool) -> list[str]:
    """The mechanism names to advertise, best first.

    None before TLS unless the configuration allows plaintext authentication
    (RFC 4954 §4, RFC 9051 §6.2.2): SCRAM-SHA-256 would not reveal the
    password, but without TLS nothing protects the session that follows, so
    every mechanism waits for TLS, as the project's policy says.
    """
    if tls_active or allow_plaintext:
        return [SCRAM_SHA_256, PLAIN, LOGIN]
    return []


def decode_response(line: bytes) -> bytes | None:
    """A client response line decoded from base64 (RFC 4648 §4, padded), or None if it is not.

    Strict: no characters outside the alphabet, no missing or surplus padding.
    SMTP (RFC 4954 §4), IMAP (RFC 9051 §6.2.2) and POP3 (RFC 5034 §4) all
    send responses this way.
    """
    if len(line) % 4:
        return None  # strict_mode alone lets surplus "=" after a whole quantum through
    try:
        return binascii.a2b_base64(line, strict_mode=True)
    except binascii.Error:
        return None


def decode_initial_response(token: bytes) -> bytes | None:
    """An initial response as sent after the mechanism name: ``=`` is an empty
    one (RFC 4954 §4, RFC 5034 §4, RFC 4959 §3); else strict base64, None if not."""
    return b"" if token == b"=" else decode_response(token)


def create_mechanism(name: str | bytes, authenticator: Authenticator, client_ip: str,
                     tls_active: bool, *, allow_plaintext: bool = False,
                     nonce_factory: Callable[[], str] | None = None,
                     protocol: str = "") -> "SaslMechanism":
    """A new server-side exchange for mechanism ``name`` (case-insensitive).

    ``nonce_factory`` makes SCRAM's server nonce part (printable ASCII without
    ","); tests inject one. ``protocol`` (smtp, imap, pop3) labels the login
    in the log and the metrics. Raises :class:`UnknownMechanism` or
    :class:`MechanismNotAllowed` (see :func:`mechanisms`).
    """
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    name = name.upper()
    if name not in (SCRAM_SHA_256, PLAIN, LOGIN):
        raise UnknownMechanism(name)
    if name not in mechanisms(tls_active, allow_plaintext):
        raise MechanismNotAllowed(name)
    if name == PLAIN:
        return PlainMechanism(authenticator, client_ip, protocol)
    if name == LOGIN:
        return LoginMechanism(authenticator, client_ip, protocol)
    return ScramSha256Mechanism(authenticator, client_ip, protocol, nonce_factory or _default_nonce)


class SaslMechanism:
    """One exchange. ``step`` runs the handler the previous step chose (``self._next``)."""

    name = ""

    def __init__(self, authenticator: Authenticator, client_ip: str, protocol: str = ""):
        self._authenticator = authenticator
        self._client_ip = client_ip
        self._protocol = protocol
        self._next: Callable[[bytes | None], defer.Deferred[SaslStep]] | None = self._start
        self.finished = False

    def step(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        """Feed the client's (decoded) data; ``None`` only for an absent initial response.

        Fires with the next :data:`SaslStep`. Expected failures are a
        :class:`SaslFailure` result, never an errback. Raises
        :class:`SaslStateError` after a final outcome.
        """
        handler = self._next
        if handler is None:
            raise SaslStateError(f"{self.name} exchange already finished")
        self._next = None
        if client_data is None and handler != self._start:
            return self._final(SaslFailure(FAILURE_MALFORMED, "missing client response"))
        return handler(client_data)

    def _start(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        raise NotImplementedError

    def _challenge(self, data: bytes, then: Callable[[bytes | None], defer.Deferred[SaslStep]]
                   ) -> defer.Deferred[SaslStep]:
        self._next = then
        return defer.succeed(SaslChallenge(data))

    def _final(self, outcome: SaslSuccess | SaslFailure) -> defer.Deferred[SaslStep]:
        self.finished = True
        return defer.succeed(outcome)

    def _outcome(self, login: defer.Deferred[str], server_data: bytes | None = None
                 ) -> defer.Deferred[SaslStep]:
        """Turn an Authenticator Deferred into the final SaslSuccess/SaslFailure."""

        def succeeded(user: str) -> SaslStep:
            self.finished = True
            return SaslSuccess(user, server_data)

        return login.addCallbacks(succeeded, self._auth_failure)

    def _auth_failure(self, failure: Failure) -> SaslStep:
        """An Authenticator error (AuthFailed, AuthThrottled, AuthUnavailable) as a SaslFailure.
        Anything else stays an errback: it is a bug, not a login outcome."""
        failure.trap(AuthError)
        self.finished = True
        return SaslFailure(_failure_kind(failure.value), str(failure.value))


def _failure_kind(error: BaseException) -> str:
    if isinstance(error, AuthThrottled):
        return FAILURE_THROTTLED
    if isinstance(error, AuthUnavailable):
        return FAILURE_UNAVAILABLE
    return FAILURE_CREDENTIALS


def _decode_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class PlainMechanism(SaslMechanism):
    """RFC 4616: one message ``[authzid] NUL authcid NUL passwd``.

    The authzid must be empty or name the same account as the authcid: this
    server has no proxy authorization (RFC 4616 §2).
    """

    name = PLAIN

    def _start(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        if client_data is None:
            # RFC 4616 §2: no initial response -> an empty challenge.
            return self._challenge(b"", self._response)
        return self._response(client_data)

    def _response(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        parts = (client_data or b"").split(b"\0")
        decoded = [_decode_utf8(part) for part in parts]
        if len(parts) != 3 or None in decoded:
            return self._final(SaslFailure(FAILURE_MALFORMED, "PLAIN message is not authzid NUL authcid NUL passwd"))
        authzid, authcid, password = decoded
        if not authcid or not password:  # RFC 4616 §2: authcid and passwd are 1*SAFE
            return self._final(SaslFailure(FAILURE_MALFORMED, "empty PLAIN user or password"))
        login_key = self._authenticator.login_key
        if authzid and login_key(authzid) != login_key(authcid):
            return self._final(SaslFailure(FAILURE_AUTHORIZATION, "authorization identity differs"))
        return self._outcome(self._authenticator.authenticate(
            authcid, password, self._client_ip, mechanism=self.name, protocol=self._protocol))


class LoginMechanism(SaslMechanism):
    """draft-murchison-sasl-login: challenges "Username:" then "Password:".

    An initial response, if sent, is the user name (clients such as Outlook
    send one).
    """

    name = LOGIN

    def _start(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        if client_data is None:
            return self._challenge(b"Username:", self._username)
        return self._username(client_data)

    def _username(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        username = _decode_utf8(client_data or b"")
        if not username:
            return self._final(SaslFailure(FAILURE_MALFORMED, "LOGIN user name missing or not UTF-8"))
        self._user = username
        return self._challenge(b"Password:", self._password)

    def _password(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        password = _decode_utf8(client_data or b"")
        if password is None:
            return self._final(SaslFailure(FAILURE_MALFORMED, "LOGIN password not UTF-8"))
        return self._outcome(self._authenticator.authenticate(
            self._user, password, self._client_ip, mechanism=self.name, protocol=self._protocol))


# --------------------------------------------------------------------------
# SCRAM-SHA-256


def _default_nonce() -> str:
    """Server nonce part: 18 random bytes in base64 (never contains ",")."""
    return base64.b64encode(os.urandom(18)).decode("ascii")


_NONCE_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802 §7: printable, no ","
_BAD_SASLNAME_ESCAPE = re.compile(r"=(?!2C|3D)")
_ATTR_VAL_RE = re.compile(r"[A-Za-z]=")  # RFC 5802 §7: attr-val = ALPHA "=" value


def _decode_saslname(value: str) -> str | None:
    """RFC 5802 §5.1: "=2C" -> ",", "=3D" -> "="; any other "=" makes it invalid."""
    if _BAD_SASLNAME_ESCAPE.search(value):
        return None
    return value.replace("=2C", ",").replace("=3D", "=")


@dataclass(frozen=True)
class ScramClientFirst:
    """The parts of a client-first-message (RFC 5802 §7) the server needs."""

    gs2_header: str
    bare: str
    username: str
    nonce: str
    authzid: str | None


def parse_client_first(message: str) -> ScramClientFirst | SaslFailure:
    """Parse ``gs2-header client-first-message-bare``, or say why it is refused."""
    fields = message.split(",", 2)
    if len(fields) != 3:
        return SaslFailure(FAILURE_MALFORMED, "bad SCRAM client-first-message")
    cbind_flag, authzid_field, bare = fields
    # RFC 5802 §6: "n" (no client support) and "y" (client thinks we lack
    # it, which is true: no -PLUS) go on; "p=" asks for binding we don't do.
    if cbind_flag not in ("n", "y"):
        return SaslFailure(FAILURE_MALFORMED, "channel binding not supported")
    authzid = None
    if authzid_field:
        if not authzid_field.startswith("a="):
            return SaslFailure(FAILURE_MALFORMED, "bad SCRAM authzid")
        authzid = _decode_saslname(authzid_field[2:])
        if not authzid:
            return SaslFailure(FAILURE_MALFORMED, "bad SCRAM authzid")
    attributes = bare.split(",")
    if attributes[0].startswith("m="):  # RFC 5802 §5.1: "m" MUST cause failure
        return SaslFailure(FAILURE_MALFORMED, "SCRAM extension not supported")
    if len(attributes) < 2 or not attributes[0].startswith("n=") or not attributes[1].startswith("r="):
        return SaslFailure(FAILURE_MALFORMED, "bad SCRAM client-first-message")
    if not all(_ATTR_VAL_RE.match(extension) for extension in attributes[2:]):
        return SaslFailure(FAILURE_MALFORMED, "bad SCRAM extension")
    username = _decode_saslname(attributes[0][2:])
    nonce = attributes[1][2:]
    if not username or not _NONCE_RE.fullmatch(nonce):
        return SaslFailure(FAILURE_MALFORMED, "bad SCRAM user name or nonce")
    try:
        # RFC 5802 §5.1: the server prepares the name with SASLprep (query rules).
        username = saslprep(username, stored=False)
    except PasswordError:
        return SaslFailure(FAILURE_MALFORMED, "SCRAM user name refused by SASLprep")
    return ScramClientFirst(cbind_flag + "," + authzid_field + ",", bare, username, nonce, authzid)


def scram_verify_proof(secrets: ScramSecrets, auth_message: bytes, proof: bytes) -> bool:
    """RFC 5802 §3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) == StoredKey?"""
    signature = hmac.digest(secrets.stored_key, auth_message, "sha256")
    if len(proof) != len(signature):
        return False
    client_key = bytes(a ^ b for a, b in zip(proof, signature))
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), secrets.stored_key)


def scram_server_signature(secrets: ScramSecrets, auth_message: bytes) -> bytes:
    """RFC 5802 §3: ServerSignature := HMAC(ServerKey, AuthMessage)."""
    return hmac.digest(secrets.server_key, auth_message, "sha256")


class ScramSha256Mechanism(SaslMechanism):
    """RFC 5802 with SHA-256 (RFC 7677), without channel binding.

    Unknown users get decoy secrets (stable salt, configured iteration count)
    and fail only at the proof, like a wrong password. The proof is checked
    on the reactor thread: it is two HMACs and a hash, the costly PBKDF2 is
    the client's. On success the server-final-message ``v=...`` is the
    :attr:`SaslSuccess.server_data`.
    """

    name = SCRAM_SHA_256

    def __init__(self, authenticator: Authenticator, client_ip: str, protocol: str,
                 nonce_factory: Callable[[], str]):
        super().__init__(authenticator, client_ip, protocol)
        self._nonce_factory = nonce_factory

    def _start(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        if client_data is None:
            return self._challenge(b"", self._client_first)
        return self._client_first(client_data)

    def _client_first(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        message = _decode_utf8(client_data or b"")
        parsed = parse_client_first(message) if message is not None else (
            SaslFailure(FAILURE_MALFORMED, "client-first-message not UTF-8"))
        if isinstance(parsed, SaslFailure):
            return self._final(parsed)
        login_key = self._authenticator.login_key
        if parsed.authzid is not None and login_key(parsed.authzid) != login_key(parsed.username):
            return self._final(SaslFailure(FAILURE_AUTHORIZATION, "authorization identity differs"))
        self._first = parsed
        admitted = self._authenticator.check_throttle(
            parsed.username, self._client_ip, mechanism=self.name, protocol=self._protocol)
        return admitted.addCallbacks(self._server_first, self._auth_failure)

    def _server_first(self, _login_key: str) -> SaslStep:
        try:
            secrets = self._authenticator.scram_lookup(self._first.username)
        except StoreError as error:
            self.finished = True
            return SaslFailure(FAILURE_UNAVAILABLE, f"directory error: {type(error).__name__}")
        self._known_user = secrets is not None
        self._secrets = secrets or self._authenticator.scram_decoy(self._first.username)
        self._nonce = self._first.nonce + self._nonce_factory()
        salt = base64.b64encode(self._secrets.salt).decode("ascii")
        self._server_first_message = f"r={self._nonce},s={salt},i={self._secrets.iterations}"
        self._next = self._client_final
        return SaslChallenge(self._server_first_message.encode("ascii"))

    def _client_final(self, client_data: bytes | None) -> defer.Deferred[SaslStep]:
        message = _decode_utf8(client_data or b"") or ""
        without_proof, separator, proof_b64 = message.rpartition(",p=")
        attributes = without_proof.split(",")
        if (not separator or len(attributes) < 2
                or not all(_ATTR_VAL_RE.match(extension) for extension in attributes[2:])):
            return self._final(SaslFailure(FAILURE_MALFORMED, "bad SCRAM client-final-message"))
        try:
            binding = base64.b64decode(attributes[0].removeprefix("c="), validate=True)
            proof = base64.b64decode(proof_b64, validate=True)
        except (binascii.Error, ValueError):
            return self._final(SaslFailure(FAILURE_MALFORMED, "bad base64 in SCRAM client-final-message"))
        # RFC 5802 §5.1: c= repeats the GS2 header (no binding data: 'n' or 'y').
        if not attributes[0].startswith("c=") or binding != self._first.gs2_header.encode("utf-8"):
            return self._final(SaslFailure(FAILURE_MALFORMED, "SCRAM channel binding mismatch"))
        if attributes[1] != "r=" + self._nonce:
            return self._final(SaslFailure(FAILURE_MALFORMED, "SCRAM nonce mismatch"))
        # RFC 5802 §3: AuthMessage = client-first-bare "," server-first "," client-final-without-proof
        auth_message = ",".join(
            (self._first.bare, self._server_first_message, without_proof)).encode("utf-8")
        valid = self._known_user and scram_verify_proof(self._secrets, auth_message, proof)
        server_final = b"v=" + base64.b64encode(scram_server_signature(self._secrets, auth_message))
        return self._outcome(
            self._authenticator.record_result(
                self._first.username, self._client_ip, succeeded=valid, mechanism=self.name,
                protocol=self._protocol),
            server_data=server_final,
        )



# --- driving a mechanism over a line protocol

#: The line that cancels an exchange (RFC 4954 §4, RFC 5034 §4, RFC 9051 §6.2.2).
CANCEL = b"*"


@dataclass(frozen=True)
class SaslWire:
    """How one protocol says each part of an exchange: ``challenge(data)`` makes
    its challenge reply (SMTP ``334``, IMAP/POP3 ``+``); ``cancelled`` and
    ``bad_base64`` answer a ``*`` line and an undecodable one; ``failures``
    maps each FAILURE_* kind to its reply."""

    challenge: Callable[[bytes], object]
    cancelled: object
    bad_base64: object
    failures: dict


class SaslExchange:
    """One exchange over a line protocol: feeds client lines to ``mechanism`` and
    turns its steps into that protocol's replies (``wire``).

    ``read_next_line(handler)`` asks the session to hand its next line (no
    line end) to ``handler`` instead of running it as a command;
    ``succeeded(user)`` gives the success reply (and does what success means:
    mark the session authenticated, open the maildrop); ``failed(reply)`` may
    replace a failure reply (SMTP counts failures and closes past a limit).
    """

    def __init__(self, mechanism: SaslMechanism, wire: SaslWire,
                 read_next_line: Callable[[Callable[[bytes], object]], None],
                 succeeded: Callable[[str], object],
                 failed: Callable[[object], object] = lambda reply: reply):
        self._mechanism = mechanism
        self._wire = wire
        self._read_next_line = read_next_line
        self._succeeded = succeeded
        self._failed = failed

    def step(self, client_data: bytes | None) -> defer.Deferred:
        """Give ``client_data`` to the mechanism; fires with the reply to send."""
        return self._mechanism.step(client_data).addCallback(self._reply_for_step)

    def _reply_for_step(self, step: SaslStep) -> object:
        if isinstance(step, SaslChallenge):
            self._read_next_line(self._client_response)
            return self._wire.challenge(step.data)
        if isinstance(step, SaslFailure):
            return self._failed(self._wire.failures[step.kind])
        if step.server_data is not None:
            # RFC 4422 §3.6: the success data goes as one more challenge (see the module docstring).
            self._read_next_line(lambda line: self._success_acknowledged(step.user, line))
            return self._wire.challenge(step.server_data)
        return self._succeeded(step.user)

    def _client_response(self, line: bytes) -> object:
        """The client's answer to a challenge: "*" cancels, else base64 for the mechanism."""
        if line == CANCEL:
            return self._wire.cancelled
        client_data = decode_response(line)
        if client_data is None:
            return self._wire.bad_base64
        return self.step(client_data)

    def _success_acknowledged(self, user: str, line: bytes) -> object:
        """The answer to the server-final challenge must be empty; anything else fails."""
        if line:
            return self._failed(self._wire.failures[FAILURE_CREDENTIALS])
        return self._succeeded(user)
