"""The server TLS context as clients see it: versions, ciphers, order, renegotiation,
compression, resumption and OCSP stapling.

Each handshake runs over memory between the context :func:`build_server_context`
makes and a real client (Python's ssl, or pyOpenSSL where ssl cannot act: it can
neither renegotiate nor ask for an OCSP response); the ssl clients verify the
certificate against the test CA.
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
import subprocess
import sys
from dataclasses import dataclass

import pytest
from OpenSSL import SSL

from mailserverd.tls import (
    DEFAULT_CIPHERS,
    OCSP_SUFFIX,
    SERVER_OPTIONS,
    TLSSettings,
    TLSSetupError,
    build_server_context,
)
from tlscerts import ServerCert, issue_server_cert, ocsp_response

HOSTNAME = "localhost"


@pytest.fixture(scope="module")
def server_cert() -> ServerCert:
    return issue_server_cert(HOSTNAME, "127.0.0.1")


@pytest.fixture
def settings(tmp_path, server_cert) -> TLSSettings:
    """Settings naming ``server_cert``'s files, written to a fresh directory."""
    server_cert.write(tmp_path / "cert.pem", tmp_path / "key.pem")
    return TLSSettings(cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem"))


# --- two ends of a handshake over memory


class HandshakeEnd:
    """One end of a connection over memory: ``connection`` does the handshake,
    ``take``/``give`` move its TLS records, ``done`` once its handshake finished."""

    errors: tuple[type[Exception], ...]  # what a failed handshake raises
    want_read: type[Exception]  # what an unfinished one raises
    connection: SSL.Connection | ssl.SSLObject
    done = False

    def step(self) -> None:
        try:
            self.connection.do_handshake()
            self.done = True
        except self.want_read:
            pass


class PyOpenSSLEnd(HandshakeEnd):
    """A pyOpenSSL connection with memory BIOs (server, or a pyOpenSSL client)."""

    errors, want_read = (SSL.Error,), SSL.WantReadError

    def __init__(self, connection: SSL.Connection):
        self.connection = connection

    def take(self) -> bytes:
        try:
            return self.connection.bio_read(65536)
        except SSL.WantReadError:
            return b""

    def give(self, data: bytes) -> None:
        self.connection.bio_write(data)


class SSLObjectEnd(HandshakeEnd):
    """A client of Python's ssl module over a pair of memory BIOs."""

    errors, want_read = (ssl.SSLError,), ssl.SSLWantReadError

    def __init__(self, context: ssl.SSLContext, session: ssl.SSLSession | None = None):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.connection = context.wrap_bio(self.incoming, self.outgoing,
                                           server_hostname=HOSTNAME, session=session)

    def take(self) -> bytes:
        return self.outgoing.read()

    def give(self, data: bytes) -> None:
        self.incoming.write(data)


def server_end(context: SSL.Context) -> PyOpenSSLEnd:
    connection = SSL.Connection(context, None)
    connection.set_accept_state()
    return PyOpenSSLEnd(connection)


def transfer(client, server) -> bool:
    """Move what each end has written to the other; True when anything moved."""
    moved = False
    for source, sink in ((client, server), (server, client)):
        data = source.take()
        if data:
            sink.give(data)
            moved = True
    return moved


def handshake(client, server) -> dict[str, Exception]:
    """Run both handshakes to their end; the error each end failed with, by
    ``"client"``/``"server"`` (empty when both finished)."""
    errors: dict[str, Exception] = {}
    for _ in range(50):
        for name, end in (("client", client), ("server", server)):
            if name not in errors and not end.done:
                try:
                    end.step()
                except end.errors as exc:
                    errors[name] = exc
        moved = transfer(client, server)
        if (client.done and server.done) or (errors and not moved):
            return errors
    raise AssertionError("the handshake neither finished nor failed")


def python_client(server_cert: ServerCert, version: ssl.TLSVersion | None = None,
                  ciphers: str | None = None) -> ssl.SSLContext:
    """A verifying ssl client context limited to ``version`` and TLS 1.2 ``ciphers``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=server_cert.ca.cert_pem.bytes().decode())
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


# --- protocol versions (RFC 8996; RFC 9325 §3.1.1)


@pytest.mark.parametrize("ciphers", [DEFAULT_CIPHERS, "HIGH:@SECLEVEL=0"])
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_clients_older_than_tls_1_2_are_refused(settings, server_cert, version, ciphers):
    # SECLEVEL=0: OpenSSL would otherwise not offer (client) or accept (server, with
    # ``[tls] ciphers`` lowering it) TLS 1.0/1.1 at all; the refusal must be min_version's.
    client = SSLObjectEnd(python_client(server_cert, version, "DEFAULT:@SECLEVEL=0"))
    context = build_server_context(TLSSettings(settings.cert, settings.key, ciphers=ciphers))
    errors = handshake(client, server_end(context))

    assert "unsupported protocol" in str(errors["server"])
    assert errors["client"].reason == "TLSV1_ALERT_PROTOCOL_VERSION"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_clients_are_served(settings, server_cert, version):
    client = SSLObjectEnd(python_client(server_cert, version))

    assert handshake(client, server_end(build_server_context(settings))) == {}
    assert client.connection.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]


def test_min_version_tls_1_3_refuses_tls_1_2(settings, server_cert):
    context = build_server_context(TLSSettings(settings.cert, settings.key, min_version="TLSv1.3"))
    client = SSLObjectEnd(python_client(server_cert, ssl.TLSVersion.TLSv1_2))

    assert handshake(client, server_end(context))["client"].reason == "TLSV1_ALERT_PROTOCOL_VERSION"


# --- TLS 1.2 ciphers: ECDHE with AEAD only, in the server's order (RFC 9325 §4.2)


def test_tls_1_2_ciphers_are_ecdhe_with_aead_only(settings):
    names = SSL.Connection(build_server_context(settings), None).get_cipher_list()
    tls12 = [name for name in names if not name.startswith("TLS_")]  # TLS 1.3 suites are fixed

    assert tls12, names
    assert [n for n in tls12 if not n.startswith("ECDHE-") or not ("GCM" in n or "CHACHA20" in n)] == []


def test_client_offering_only_cbc_ciphers_is_refused(settings, server_cert):
    client = SSLObjectEnd(python_client(server_cert, ssl.TLSVersion.TLSv1_2,
                                        "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA"))
    errors = handshake(client, server_end(build_server_context(settings)))

    assert "no shared cipher" in str(errors["server"])
    assert errors["client"].reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"


def test_server_picks_its_own_first_choice(settings, server_cert):
    context = build_server_context(settings)
    preferred = [n for n in SSL.Connection(context, None).get_cipher_list() if n.startswith("ECDHE-ECDSA")]
    offered = list(reversed(preferred))  # the client likes our last choice best
    client = SSLObjectEnd(python_client(server_cert, ssl.TLSVersion.TLSv1_2, ":".join(offered)))

    assert handshake(client, server_end(context)) == {}
    assert len(offered) > 1 and client.connection.cipher()[0] == preferred[0] != offered[0]


# --- renegotiation, compression, resumption


def renegotiation_error(client: PyOpenSSLEnd, server: PyOpenSSLEnd) -> SSL.Error | None:
    """Have ``client`` renegotiate on an established connection; the error it
    fails with, or None when the new handshake finished."""
    assert client.connection.renegotiate()
    for _ in range(20):
        try:
            client.connection.do_handshake()
            if not client.connection.renegotiate_pending():
                return None
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            return exc
        transfer(client, server)
        try:
            server.connection.recv(1024)  # the server meets the new ClientHello as data
        except SSL.WantReadError:
            pass
        transfer(client, server)
    raise AssertionError("the renegotiation neither finished nor failed")


def test_renegotiation_is_refused(settings):
    client_context = SSL.Context(SSL.TLS_METHOD)
    client_context.set_max_proto_version(SSL.TLS1_2_VERSION)  # TLS 1.3 has no renegotiation
    client_connection = SSL.Connection(client_context, None)
    client_connection.set_connect_state()
    client, server = PyOpenSSLEnd(client_connection), server_end(build_server_context(settings))
    assert handshake(client, server) == {}

    error = renegotiation_error(client, server)

    assert "no renegotiation" in str(error)  # the server's no_renegotiation alert
    assert server.connection.total_renegotiations() == 0
    with pytest.raises(SSL.Error, match="no renegotiation"):
        server.connection.renegotiate()  # nor can the server start one


def test_no_compression_and_options_set(settings, server_cert):
    context = build_server_context(settings)
    options = context.set_options(0)  # returns the options in force
    client = SSLObjectEnd(python_client(server_cert, ssl.TLSVersion.TLSv1_2))

    assert handshake(client, server_end(context)) == {}
    assert client.connection.compression() is None
    for option in ("OP_NO_COMPRESSION", "OP_NO_RENEGOTIATION", "OP_CIPHER_SERVER_PREFERENCE",
                   "OP_NO_TICKET"):
        assert options & getattr(SSL, option), option
    assert options & SERVER_OPTIONS == SERVER_OPTIONS


def close(client: SSLObjectEnd, server: PyOpenSSLEnd) -> None:
    """Both ends send close_notify (OpenSSL forgets the session of a connection
    freed without it)."""
    with contextlib.suppress(ssl.SSLWantReadError):
        client.connection.unwrap()
    transfer(client, server)
    server.connection.shutdown()
    with pytest.raises(SSL.ZeroReturnError):
        server.connection.recv(1024)


def test_sessions_resume_from_the_cache_without_tickets(settings, server_cert):
    context = build_server_context(settings)
    client_context = python_client(server_cert, ssl.TLSVersion.TLSv1_2)
    first, server = SSLObjectEnd(client_context), server_end(context)
    assert handshake(first, server) == {}
    session = first.connection.session
    close(first, server)

    assert not session.has_ticket  # RFC 9325 §3.4: no ticket key to outlive forward secrecy
    again = SSLObjectEnd(client_context, session=session)
    assert handshake(again, server_end(context)) == {}
    assert again.connection.session_reused


# --- OCSP stapling (RFC 6066 §8) from the file beside the certificate


@dataclass
class StapleSeen:
    """What a pyOpenSSL client asking for certificate status was stapled."""

    responses: list[bytes]

    def __call__(self, connection, response: bytes, data) -> bool:
        self.responses.append(response)
        return True


def stapled(context: SSL.Context, version: int) -> list[bytes]:
    """The OCSP responses a client asking for one at TLS ``version`` receives."""
    seen = StapleSeen([])
    client_context = SSL.Context(SSL.TLS_METHOD)
    client_context.set_min_proto_version(version)
    client_context.set_max_proto_version(version)
    client_context.set_ocsp_client_callback(seen)
    connection = SSL.Connection(client_context, None)
    connection.set_connect_state()
    connection.request_ocsp()
    assert handshake(PyOpenSSLEnd(connection), server_end(context)) == {}
    return seen.responses


def write_staple(settings: TLSSettings, der: bytes) -> None:
    with open(settings.cert + OCSP_SUFFIX, "wb") as out:
        out.write(der)


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_fresh_ocsp_response_is_stapled(settings, server_cert, version):
    der = ocsp_response(server_cert)
    write_staple(settings, der)

    assert stapled(build_server_context(settings), version) == [der]


def test_nothing_is_stapled_without_a_response_file(settings):
    assert stapled(build_server_context(settings), SSL.TLS1_3_VERSION) == [b""]


def test_stale_ocsp_response_is_not_stapled(settings, server_cert):
    write_staple(settings, ocsp_response(server_cert, age=datetime.timedelta(days=5),
                                         valid_for=datetime.timedelta(days=4)))

    assert stapled(build_server_context(settings), SSL.TLS1_3_VERSION) == [b""]


def test_ocsp_response_for_another_certificate_is_refused(settings, server_cert):
    other = issue_server_cert(HOSTNAME, ca=server_cert.ca)
    write_staple(settings, ocsp_response(server_cert, certificate=other.certificate))

    with pytest.raises(TLSSetupError, match=r"cert\.pem\.ocsp.*about another certificate"):
        build_server_context(settings)


def test_unreadable_ocsp_response_is_refused(settings):
    write_staple(settings, b"not DER")

    with pytest.raises(TLSSetupError, match=r"cannot staple the OCSP response '.*cert\.pem\.ocsp'"):
        build_server_context(settings)


#: Builds a context with stapling after turning on the kernel's
#: MemoryDenyWriteExecute (PR_SET_MDWE, Linux 6.3); exit 77 when the kernel lacks it.
BUILD_WITHOUT_WRITE_EXECUTE = """
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
from mailserverd.tls import TLSSettings, TLSSetupError, build_server_context
try:
    build_server_context(TLSSettings(sys.argv[1], sys.argv[2]))
except TLSSetupError as exc:
    sys.exit(str(exc))
"""


def test_stapling_under_memory_deny_write_execute_is_a_setup_error(settings, server_cert):
    write_staple(settings, ocsp_response(server_cert))
    result = subprocess.run([sys.executable, "-c", BUILD_WITHOUT_WRITE_EXECUTE, settings.cert, settings.key],
                            capture_output=True, text=True, timeout=60)
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")

    assert result.returncode == 1, result.stderr
    assert "MemoryDenyWriteExecute=no" in result.stderr and "cert.pem.ocsp" in result.stderr
