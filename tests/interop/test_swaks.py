"""swaks (Debian's SMTP test tool) against the real daemon, then read back with imaplib.

The MX (no AUTH), submission (STARTTLS, then AUTH before MAIL) and smtps
(implicit TLS, then AUTH) listeners, with swaks's own AUTH PLAIN / LOGIN,
attachments and PIPELINING; TLS is always verified against the test CA.
"""

from __future__ import annotations

import email
import email.policy
import random
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


# --- submission: STARTTLS, AUTH; attachments and pipelining on the MX


def run_swaks(daemon, kind: str, *options: str) -> subprocess.CompletedProcess:
    """swaks against listener ``kind``: STARTTLS (implicit TLS on smtps), verifying our test CA."""
    swaks = require_program("swaks", "swaks")
    tls = ["--tls-on-connect"] if kind == "smtps" else ["--tls"]
    return subprocess.run(
        [swaks, "--server", f"127.0.0.1:{daemon.ports[kind]}", *tls,
         "--tls-ca-path", str(daemon.ca_path), "--tls-verify",
         "--helo", "client.remote.test", *options],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def auth_options(daemon, mechanism: str, user: str, password: str | None = None) -> list[str]:
    return ["--auth", mechanism, "--auth-user", user,
            "--auth-password", daemon.users[user] if password is None else password]


def assert_sent(result: subprocess.CompletedProcess) -> None:
    """swaks exited 0 and the message was acknowledged as stored (RFC 5321 §4.2.5)."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout, result.stdout


def test_swaks_submission_starttls_auth_plain(daemon):
    result = run_swaks(daemon, "submission", *auth_options(daemon, "PLAIN", "alice@example.test"),
                       "--from", "alice@example.test", "--to", "bob@example.test",
                       "--header", "Subject: submitted with AUTH PLAIN", "--body", "plain auth body")

    assert_sent(result)
    assert "235 2.7.0" in result.stdout  # RFC 4954 §6
    # RFC 4954 §4: the mechanism is used only over the TLS session started first.
    assert result.stdout.index("STARTTLS") < result.stdout.index("AUTH PLAIN")
    [fetched] = imap_fetch_all(daemon, "bob@example.test")
    assert b"Subject: submitted with AUTH PLAIN" in fetched
    assert b"plain auth body" in fetched


def test_swaks_smtps_auth_login(daemon):
    result = run_swaks(daemon, "smtps", *auth_options(daemon, "LOGIN", "bob@example.test"),
                       "--from", "bob@example.test", "--to", "alice@example.test",
                       "--header", "Subject: submitted with AUTH LOGIN", "--body", "login auth body")

    assert_sent(result)
    assert "235 2.7.0" in result.stdout
    [fetched] = imap_fetch_all(daemon, "alice@example.test")
    assert b"Subject: submitted with AUTH LOGIN" in fetched


def test_swaks_submission_wrong_password_gets_535_and_sends_nothing(daemon):
    result = run_swaks(daemon, "submission",
                       *auth_options(daemon, "PLAIN", "alice@example.test", "not-the-password"),
                       "--from", "alice@example.test", "--to", "bob@example.test")

    assert result.returncode != 0, result.stdout
    assert "535 5.7.8" in result.stdout, result.stdout  # RFC 4954 §6
    assert "MAIL FROM" not in result.stdout
    assert imap_fetch_all(daemon, "bob@example.test") == []


def test_swaks_submission_refuses_mail_without_auth(daemon):
    result = run_swaks(daemon, "submission", "--from", "alice@example.test", "--to", "bob@example.test")

    assert result.returncode != 0, result.stdout
    assert "530 5.7.0" in result.stdout, result.stdout  # RFC 4954 §6, RFC 6409 §4.3
    assert imap_fetch_all(daemon, "bob@example.test") == []


def test_swaks_attachment_arrives_intact(daemon, tmp_path):
    payload = random.Random(4242).randbytes(300_000)
    attachment = tmp_path / "report.bin"
    attachment.write_bytes(payload)

    result = run_swaks(daemon, "smtp", "--from", "someone@remote.test", "--to", "alice@example.test",
                       "--header", "Subject: with attachment", "--body", "see attached",
                       "--attach-type", "application/octet-stream", "--attach", f"@{attachment}")

    assert_sent(result)
    [fetched] = imap_fetch_all(daemon, "alice@example.test")
    message = email.message_from_bytes(fetched, policy=email.policy.default)
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "report.bin"
    assert part.get_content() == payload


def test_swaks_pipeline_sends_mail_rcpt_data_in_one_go(daemon):
    result = run_swaks(daemon, "smtp", "--pipeline", "--from", "someone@remote.test",
                       "--to", "alice@example.test,bob@example.test",
                       "--header", "Subject: pipelined by swaks", "--body", "pipelined body")

    assert_sent(result)
    # RFC 2920 §3.1: MAIL, both RCPTs and DATA go out before the first of their replies.
    transcript = result.stdout[result.stdout.index("MAIL FROM"):]
    assert transcript.index(" DATA") < transcript.index("250 "), transcript
    assert "354 " in transcript
    for user in ("alice@example.test", "bob@example.test"):
        [fetched] = imap_fetch_all(daemon, user)
        assert b"Subject: pipelined by swaks" in fetched
