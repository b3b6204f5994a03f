"""testssl.sh (Debian's testssl.sh package) against every TLS listener of the real daemon.

Implicit TLS (smtps, imaps, pop3s, https) and STARTTLS (smtp and submission
``-t smtp``, imap ``-t imap``, pop3 ``-t pop3``) are scanned at once, for
protocols, cipher categories, forward secrecy, the server's cipher order, the
known vulnerabilities and the server defaults (certificate, tickets, OCSP
stapling). No finding may be rated HIGH or CRITICAL, except those about the
test certificate's own trust chain and revocation data. The certificate is
shaped like a public CA's (90 days, an OCSP responder) and a response for it
lies beside it, so stapling is scanned too. testssl.sh is told the test CA
(``--add-ca``), gets IP addresses only and never looks up DNS or phones out.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import require_program
from tlscerts import issue_server_cert, ocsp_response
from webclient import gateway_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Every TLS listener, and the STARTTLS dialect testssl.sh speaks to it (None: implicit TLS).
TLS_LISTENERS = {
    "smtp": "smtp", "submission": "smtp", "smtps": None,
    "imap": "imap", "imaps": None, "pop3": "pop3", "pop3s": None, "https": None,
}

#: Protocols, standard cipher categories, forward secrecy, server preference,
#: vulnerabilities, server defaults. ``--fast`` drops the per-cipher listing.
CHECKS = ("--fast", "-p", "-s", "-f", "-P", "-U", "-S")

#: Findings about the test certificate itself, not about how the server speaks TLS.
ABOUT_TEST_CERTIFICATE = (
    "cert_chain_of_trust", "cert_revocation", "cert_crlDistributionPoints", "cert_ocspURL",
    "cert_mustStapleExtension", "certificate_transparency", "DNS_CAArecord",
)

#: What every listener must show, by finding id: the start of the finding's text.
REQUIRED = {
    "SSLv2": "not offered", "SSLv3": "not offered", "TLS1": "not offered",
    "TLS1_1": "not offered", "TLS1_2": "offered", "TLS1_3": "offered",
    "cipherlist_NULL": "not offered", "cipherlist_aNULL": "not offered",
    "cipherlist_EXPORT": "not offered", "cipherlist_LOW": "not offered",
    "cipherlist_3DES_IDEA": "not offered", "cipherlist_AVERAGE": "not offered",
    "cipher_order": "server",
    "CRIME_TLS": "not vulnerable", "secure_client_renego": "not vulnerable",
    "OCSP_stapling": "offered",
}


def scan_command(testssl: str, ca_path: Path, port: int, starttls: str | None,
                    json_path: Path) -> list[str]:
    """testssl.sh's command line for 127.0.0.1:``port``, findings to ``json_path``."""
    return [
        testssl, "--quiet", "--color", "0", "--warnings", "off",
        "--nodns", "none", "--ip", "127.0.0.1", "--add-ca", str(ca_path),
        *(["--starttls", starttls] if starttls else []),
        *CHECKS, "--jsonfile", str(json_path), f"127.0.0.1:{port}",
    ]


def scan(testssl: str, ca_path: Path, port: int, starttls: str | None, out_dir: Path) -> dict:
    """Run testssl.sh against one port; its findings (a flat JSON list) and its output."""
    json_path = out_dir / f"{port}.json"
    result = subprocess.run(scan_command(testssl, ca_path, port, starttls, json_path),
                            capture_output=True, text=True, timeout=600, cwd=out_dir,
                            stdin=subprocess.DEVNULL)
    findings = json.loads(json_path.read_text()) if json_path.exists() else []
    return {"findings": findings, "output": result.stdout + result.stderr}


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, dict]:
    """testssl.sh's findings for each TLS listener of one daemon, scanned at once."""
    testssl = require_program("testssl", "testssl.sh")
    root = tmp_path_factory.mktemp("testssl")
    daemon = gateway_daemon(root / "d")
    server = issue_server_cert("localhost", "127.0.0.1")
    server.write(root / "d" / "cert.pem", root / "d" / "key.pem", daemon.ca_path)
    (root / "d" / "cert.pem.ocsp").write_bytes(ocsp_response(server))
    daemon.start()
    out_dir = root / "scans"
    out_dir.mkdir()
    try:
        with ThreadPoolExecutor(max_workers=len(TLS_LISTENERS)) as pool:
            futures = {kind: pool.submit(scan, testssl, daemon.ca_path, daemon.ports[kind], starttls, out_dir)
                       for kind, starttls in TLS_LISTENERS.items()}
            results = {kind: future.result() for kind, future in futures.items()}
    finally:
        daemon.stop()
    return results


def rated_high(findings: list[dict]) -> list[str]:
    """HIGH and CRITICAL findings (and scan failures, FATAL), but those about the test certificate."""
    return [
        f"{f['id']} [{f['severity']}] {f['finding']}" for f in findings
        if f.get("severity") in ("HIGH", "CRITICAL", "FATAL")
        and f["id"].split()[0] not in ABOUT_TEST_CERTIFICATE
    ]


@pytest.mark.parametrize("kind", TLS_LISTENERS)
def test_no_finding_rated_high_or_critical(scans, kind):
    findings = scans[kind]["findings"]

    assert findings, f"testssl.sh wrote no findings for {kind}:\n{scans[kind]['output'][-3000:]}"
    assert rated_high(findings) == [], f"{kind}: testssl.sh rated these HIGH or CRITICAL"


@pytest.mark.parametrize("kind", TLS_LISTENERS)
def test_tls_1_2_and_1_3_only_modern_ciphers_server_order_stapled(scans, kind):
    seen = {f["id"]: f["finding"] for f in scans[kind]["findings"]}
    wrong = {finding_id: seen.get(finding_id) for finding_id, start in REQUIRED.items()
             if not str(seen.get(finding_id)).startswith(start)}

    assert wrong == {}, f"{kind}: findings other than {({k: REQUIRED[k] for k in wrong})}"
