"""End to end: the real daemon, real TLS, Python's own mail clients.

A message sent with smtplib must come back byte for byte through imaplib and
poplib, on the STARTTLS and the implicit-TLS ports alike.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket

import pytest

from clients import imap_fetch_all, make_message, pop_fetch_all, smtp_send, stored_tail
from conftest import wait_for

pytestmark = pytest.mark.e2e


def test_smtp_starttls_to_imap_and_pop3(daemon):
    sent = make_message("round trip")
    smtp_send(daemon, sent)
    [fetched] = imap_fetch_all(daemon, "alice@example.test")
    stored_tail(fetched, sent)
    [popped] = pop_fetch_all(daemon, "alice@example.test")
    assert popped == fetched  # poplib undoes the dot-stuffing: same bytes


def test_implicit_tls_ports(daemon):
    sent = make_message("implicit tls", body_lines=3000)  # ~60 KiB: many TCP/TLS chunks
    smtp_send(daemon, sent, rcpt="bob@example.test", kind="smtps")
    [fetched] = imap_fetch_all(daemon, "bob@example.test", implicit=True)
    stored_tail(fetched, sent)
    [popped] = pop_fetch_all(daemon, "bob@example.test", implicit=True)
    assert popped == fetched


def test_submission_port_accepts_like_mx_until_auth_lands(daemon):
    sent = make_message("via submission")
    smtp_send(daemon, sent, kind="submission")
    [fetched] = imap_fetch_all(daemon, "alice@example.test")
    stored_tail(fetched, sent)


def test_unknown_recipient_and_relay_refused(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
        client.starttls(context=daemon.ssl_context())
        client.ehlo("client.remote.test")
        client.mail("sender@remote.test")
        code, _ = client.rcpt("nobody@example.test")
        assert code == 550
        code, _ = client.rcpt("someone@elsewhere.test")
        assert code == 550
        code, _ = client.rcpt("alice@example.test")
        assert code == 250


def test_alias_and_cli_changes_apply_without_restart(daemon):
    daemon.add_user("carol@example.test", "carol-secret-3")
    daemon.cli("alias", "add", "team@example.test", "carol@example.test", "bob@example.test")
    sent = make_message("to the team")
    smtp_send(daemon, sent, rcpt="team@example.test")
    for user in ("carol@example.test", "bob@example.test"):
        [fetched] = imap_fetch_all(daemon, user)
        stored_tail(fetched, sent)


def test_login_refused_before_tls(daemon):
    client = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=30)
    assert "LOGINDISABLED" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        client.login("alice@example.test", daemon.users["alice@example.test"])
    client.logout()
    pop = poplib.POP3("127.0.0.1", daemon.ports["pop3"], timeout=30)
    with pytest.raises(poplib.error_proto):
        pop.user("alice@example.test")
        pop.pass_(daemon.users["alice@example.test"])
    pop.quit()


def test_wrong_password_refused(daemon):
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        client.login("alice@example.test", "wrong")
    client.logout()


def test_client_gone_mid_data_stores_nothing_and_server_serves_on(daemon):
    sock = socket.create_connection(("127.0.0.1", daemon.ports["smtp"]), timeout=30)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"EHLO x.test\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    sock.sendall(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    for _ in range(3):
        f.readline()
    sock.sendall(b"Subject: half\r\n\r\nthis message never ends\r\n")
    sock.close()
    sent = make_message("after the broken one")
    smtp_send(daemon, sent)
    messages = imap_fetch_all(daemon, "alice@example.test")
    assert len(messages) == 1
    stored_tail(messages[0], sent)


def test_log_has_one_line_per_connection_login_and_delivery(daemon):
    smtp_send(daemon, make_message("logged"))
    imap_fetch_all(daemon, "alice@example.test")
    wait_for(lambda: "delivery" in daemon.log() and "login" in daemon.log(), what="log lines")
    log = daemon.log()
    assert "alice-secret-1" not in log
    assert "sender@remote.test" in log
