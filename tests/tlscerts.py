"""Test certificates shaped like a public CA's, and OCSP responses for them.

trustme's server certificates carry no OCSP responder and are valid for a
thousand years; :func:`issue_server_cert` issues one from a trustme CA that
looks like what a deployment has (90 days, an OCSP responder URL in its
Authority Information Access), and :func:`ocsp_response` answers for it as
the CA's responder would, so that stapling can be tested without a network.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

#: Where the certificates say their responder is; nothing listens there and no
#: test asks it (the responses are made here instead).
RESPONDER_URL = "http://127.0.0.1:9/ocsp"


@dataclass
class ServerCert:
    """A server certificate (PEM, leaf first), its key (PEM) and the CA that issued it."""

    ca: trustme.CA
    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def write(self, cert_path: Path, key_path: Path, ca_path: Path | None = None) -> None:
        """Write the certificate, the key and (with ``ca_path``) the CA certificate."""
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        if ca_path is not None:
            ca_path.write_bytes(self.ca.cert_pem.bytes())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _ca_parts(ca: trustme.CA) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    certificate = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    return certificate, key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_server_cert(*names: str, ca: trustme.CA | None = None, days: int = 90) -> ServerCert:
    """A P-256 server certificate for ``names`` valid for ``days`` from a minute
    ago, from ``ca`` (a new trustme CA by default), naming :data:`RESPONDER_URL`
    as its OCSP responder (RFC 5280 §4.2.2.1)."""
    ca = ca or trustme.CA()
    ca_cert, ca_key = _ca_parts(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(RESPONDER_URL))]),
            critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ServerCert(ca, certificate.public_bytes(serialization.Encoding.PEM), key_pem)


def ocsp_response(server: ServerCert, *, age: datetime.timedelta = datetime.timedelta(hours=1),
                  valid_for: datetime.timedelta = datetime.timedelta(days=4),
                  certificate: x509.Certificate | None = None) -> bytes:
    """A DER "good" OCSP response signed by ``server``'s CA (RFC 6960 §4.2.1) about
    ``certificate`` (default: ``server``'s), made ``age`` ago (thisUpdate) and
    fresh for ``valid_for`` after that (nextUpdate; stale once ``age`` exceeds it)."""
    ca_cert, ca_key = _ca_parts(server.ca)
    this_update = _now() - age
    return (
        ocsp.OCSPResponseBuilder()
        .add_response(cert=certificate or server.certificate, issuer=ca_cert, algorithm=hashes.SHA1(),
                      cert_status=ocsp.OCSPCertStatus.GOOD, this_update=this_update,
                      next_update=this_update + valid_for, revocation_time=None,
                      revocation_reason=None)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert)
        .sign(ca_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
