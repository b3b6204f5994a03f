"""swaks (Debian's SMTP test tool) against the real daemon, then read back with imaplib."""

from __future__ import annotations

import subprocess

import pytest

from clients import imap_fetch_all
from conftest import require_program

pytestmark = pytest.mark.e2e


def test_swaks_starttls_delivery_reaches_imap(daemon):
    swaks = require_program("swaks", "swaks")
    body = "hello from swaks\r\n.leading dot line\r\nbye"
    result = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{daemon.ports['smtp']}", "--tls",
         "--tls-ca-path", str(daemon.ca_path), "--tls-verify",
         "--helo", "client.remote.test", "--from", "someone@remote.test",
         "--to", "alice@example.test", "--header", "Subject: via swaks", "--body", body],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout

    [fetched] = imap_fetch_all(daemon, "alice@example.test")
    assert b"Subject: via swaks" in fetched
    assert b"\r\n.leading dot line\r\n" in fetched
