"""The one place TLS contexts are built, for STARTTLS/STLS and implicit TLS alike.

:class:`ServerTLS` is a connection creator (``IOpenSSLServerConnectionCreator``)
that both ``transport.startTLS()`` and ``TLSMemoryBIOFactory`` take. It loads the
certificate chain and key from files (pyOpenSSL deprecates the object path), and
:meth:`ServerTLS.reload` swaps in a new context without touching open
connections, so SIGHUP can renew certificates with no restart. An OCSP
response in a file beside the certificate (``cert.pem.ocsp``) is stapled.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from zope.interface import implementer

#: Protocol version names accepted in ``[tls] min_version``.
TLS_VERSIONS = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}

#: Default TLS 1.2 cipher list, Mozilla's "intermediate": ECDHE key exchange with
#: AES-GCM or ChaCha20-Poly1305 only (RFC 9325 §4.2); TLS 1.3 suites are all AEAD.
#: No DHE: without DH parameters (none are set) OpenSSL never picks it anyway.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"

#: Set on every server context. The key exchange groups are OpenSSL's defaults
#: (X25519 and the NIST curves, plus its hybrid post-quantum group where built in).
SERVER_OPTIONS = (
    SSL.OP_NO_COMPRESSION  # CRIME, RFC 9325 §3.3
    | SSL.OP_CIPHER_SERVER_PREFERENCE  # RFC 9325 §4.2.1: our order, not the client's
    | SSL.OP_NO_RENEGOTIATION  # RFC 9325 §3.5 (TLS 1.3 has no renegotiation)
    # The ticket key would live as long as the process and undo forward secrecy
    # for every resumed session (RFC 9325 §3.4); resume from the session cache.
    | SSL.OP_NO_TICKET
    | SSL.OP_SINGLE_ECDH_USE
)

#: Beside the certificate file (as HAProxy does): a DER OCSP response to staple.
OCSP_SUFFIX = ".ocsp"


class TLSSetupError(Exception):
    """The certificate or key cannot be loaded; the message names the file and the reason."""


@dataclass(frozen=True)
class TLSSettings:
    """What a server context is built from (the ``[tls]`` table)."""

    cert: str
    key: str
    min_version: str = "TLSv1.2"
    ciphers: str = DEFAULT_CIPHERS


def build_server_context(settings: TLSSettings) -> SSL.Context:
    """Return a server context for ``settings``; raise TLSSetupError naming what is wrong."""
    for label, path in (("certificate", settings.cert), ("key", settings.key)):
        if not os.path.isfile(path):
            raise TLSSetupError(f"TLS {label} file {path!r} does not exist")
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(TLS_VERSIONS[settings.min_version])
    ctx.set_options(SERVER_OPTIONS)
    try:
        ctx.set_cipher_list(settings.ciphers.encode("ascii"))
        ctx.use_certificate_chain_file(settings.cert.encode())
        ctx.use_privatekey_file(settings.key.encode())
        ctx.check_privatekey()
    except SSL.Error as exc:
        raise TLSSetupError(
            f"cannot use TLS certificate {settings.cert!r} with key {settings.key!r}: {exc}"
        ) from exc
    # Mail clients resume rarely; a small cache still helps reconnect storms.
    ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    ctx.set_session_id(b"mailserverd")
    staple = load_ocsp_staple(settings.cert)
    if staple is not None:
        _staple_with(ctx, staple, settings.cert + OCSP_SUFFIX)
    return ctx


@dataclass(frozen=True)
class OCSPStaple:
    """A DER OCSP response for the server certificate and when it goes stale."""

    der: bytes
    next_update: datetime.datetime | None

    def current(self, now: datetime.datetime | None = None) -> bytes:
        """The response while it is fresh, else ``b""`` (nothing is stapled).

        RFC 6960 §4.2.2.1: after nextUpdate a client must not rely on it, so a
        stale one is worth less than none (a must-staple client rejects either).
        """
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if self.next_update is not None and now >= self.next_update:
            return b""
        return self.der


def load_ocsp_staple(cert_path: str) -> OCSPStaple | None:
    """The OCSP response in ``cert_path + ".ocsp"``, or None when there is no such file.

    An external job (a certbot deploy hook, cron) fetches it from the
    certificate's responder and reloads the server. Raises TLSSetupError
    when the file is unreadable, not a successful OCSP response (RFC 6960
    §4.2.1), or about another certificate than the first in ``cert_path``.
    """
    path = cert_path + OCSP_SUFFIX
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as staple_file, open(cert_path, "rb") as cert_file:
            der, pem = staple_file.read(), cert_file.read()
        response = ocsp.load_der_ocsp_response(der)
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise ValueError(f"the responder answered {response.response_status.name}")
        certificate = x509.load_pem_x509_certificates(pem)[0]
        if not _answers_for(response, certificate):
            raise ValueError("it is about another certificate")
        return OCSPStaple(der, response.next_update_utc)
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise TLSSetupError(f"cannot staple the OCSP response {path!r}: {exc}") from exc


def _answers_for(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    """Whether ``response`` is about ``certificate``: its serial number and
    issuer name (RFC 6960 §4.1.1 CertID; the issuer key is not at hand here)."""
    digest = hashes.Hash(response.hash_algorithm)
    digest.update(certificate.issuer.public_bytes())
    return response.serial_number == certificate.serial_number and \
        response.issuer_name_hash == digest.finalize()


def _staple_with(ctx: SSL.Context, staple: OCSPStaple, path: str) -> None:
    """Make ``ctx`` staple ``staple`` when a client asks (RFC 6066 §8, RFC 8446 §4.4.2.1).

    pyOpenSSL's OCSP hook is a Python callback made with ffi.callback, which
    needs writable executable memory: refused under MemoryDenyWriteExecute=yes,
    reported as TLSSetupError naming ``path``.
    """
    try:
        ctx.set_ocsp_server_callback(lambda connection, data: staple.current())
    except MemoryError as exc:
        raise TLSSetupError(
            f"cannot staple the OCSP response {path!r}: stapling needs writable executable "
            f"memory (MemoryDenyWriteExecute=no); remove the file or allow it ({exc})"
        ) from exc


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Creates server-side TLS connections from the current context.

    ``server_creator()`` returns this object; it is what ``transport.startTLS``
    and ``TLSMemoryBIOFactory`` take. ``reload(settings)`` builds a new context
    first and swaps only if that succeeds, so a bad certificate on reload keeps
    the old one serving (and raises TLSSetupError for the caller to log).
    """

    def __init__(self, settings: TLSSettings):
        self.settings = settings
        self._context = build_server_context(settings)

    def reload(self, settings: TLSSettings | None = None) -> None:
        """Rebuild the context from ``settings`` (default: the current ones) and swap it in."""
        settings = settings or self.settings
        context = build_server_context(settings)
        self.settings, self._context = settings, context

    def server_creator(self) -> "ServerTLS":
        return self

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:  # noqa: N802 (Twisted's name)
        return SSL.Connection(self._context, None)


def build_client_context(min_version: str = "TLSv1.2", ciphers: str = DEFAULT_CIPHERS) -> SSL.Context:
    """A client context for opportunistic STARTTLS to other MTAs (RFC 3207, RFC 7435).

    The peer's certificate is not verified: with opportunistic TLS an
    unverifiable certificate still encrypts better than clear text, and
    authenticated policies (MTA-STS, DANE) will verify on their own terms.
    """
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(TLS_VERSIONS[min_version])
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    ctx.set_cipher_list(ciphers.encode("ascii"))
    # No Python callback: pyOpenSSL makes one with ffi.callback, which needs
    # writable executable memory, refused under MemoryDenyWriteExecute=yes.
    ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """Creates client-side TLS connections for STARTTLS to ``server_name`` (sent as SNI).

    What ``transport.startTLS`` takes on the outbound side; ``context`` is one
    :func:`build_client_context` shared by all connections.
    """

    def __init__(self, context: SSL.Context, server_name: str):
        self._context = context
        self._server_name = server_name

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:  # noqa: N802 (Twisted's name)
        connection = SSL.Connection(self._context, None)
        connection.set_connect_state()
        if self._server_name:
            try:
                connection.set_tlsext_host_name(self._server_name.encode("idna"))
            except (UnicodeError, ValueError):
                pass  # a name that cannot be SNI: connect without it
        return connection


def connection_of(transport: object) -> SSL.Connection | None:
    """The pyOpenSSL connection under ``transport``, or None when TLS is not on.

    Implicit TLS puts the TLS protocol beneath our wrappers (its getHandle()
    gives the connection); STARTTLS swaps the TCP transport's ``protocol``
    for the TLS one. A few levels of wrapping are searched, no more.
    """
    candidates = [transport]
    for _ in range(4):
        if not candidates:
            break
        current = candidates.pop(0)
        get_handle = getattr(current, "getHandle", None)
        try:
            handle = get_handle() if get_handle is not None else None
        except Exception:  # a transport that is closing; nothing to describe
            handle = None
        if isinstance(handle, SSL.Connection):
            return handle
        candidates += [getattr(current, name, None) for name in ("protocol", "transport")]
        candidates = [candidate for candidate in candidates if candidate is not None]
    return None


def describe(transport: object) -> str:
    """``"TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"`` (Postfix's
    Received: wording), or ``""`` when the transport has no finished TLS session."""
    connection = connection_of(transport)
    if connection is None or connection.get_cipher_name() is None:
        return ""
    bits = connection.get_cipher_bits()
    return f"{connection.get_protocol_version_name()} with cipher {connection.get_cipher_name()} " \
           f"({bits}/{bits} bits)"


#: What a failed TLS handshake (or a broken TLS record) fails with.
TLSError = SSL.Error


def negotiated_version(transport: object) -> str:
    """``"TLSv1.3"``: the protocol version of ``transport``'s finished TLS
    session, or ``""`` when TLS is not on."""
    connection = connection_of(transport)
    if connection is None or connection.get_cipher_name() is None:
        return ""
    return connection.get_protocol_version_name()


def write_self_signed(cert_path: str, key_path: str, hostnames: list[str]) -> None:
    """Write a self-signed certificate and its key (mode 0600) for ``hostnames``.

    For ``mailserverd dev`` only: clients must be told to trust it or to skip
    verification. Valid for a year; names that parse as IP addresses become
    IP SANs.
    """
    import datetime
    import ipaddress

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
