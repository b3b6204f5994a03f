"""The shared abuse limits against the real daemon: each triggers, answers with the
protocol's temporary error, recovers, and is logged in a line fail2ban's own
fail2ban-regex matches with the filter we ship."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import make_daemon, require_program, wait_for

pytestmark = pytest.mark.e2e

FILTER = Path(__file__).resolve().parents[2] / "etc" / "fail2ban" / "filter.d" / "mailserverd.conf"
NO_EXEMPTIONS = "\n[abuse]\nexempt_networks = []\n"


def started(tmp_path, limits: str, abuse: str = NO_EXEMPTIONS):
    daemon = make_daemon(tmp_path / "d", extra_config=limits + "\n" + abuse)
    daemon.cli("domain", "add", "example.test")
    daemon.add_user("alice@example.test", "alice-secret-1")
    daemon.start()
    return daemon


def first_line(daemon, kind: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", daemon.ports[kind]), timeout=30)
    return sock, sock.makefile("rb").readline()


def refused_within(daemon, kind: str, refusal: bytes, attempts: int) -> bool:
    """Connect until the greeting is ``refusal`` (then True) or ``attempts`` ran out."""
    for _ in range(attempts):
        sock, line = first_line(daemon, kind)
        sock.close()
        if line.startswith(refusal):
            return True
    return False


def admitted(daemon, kind: str) -> bool:
    sock, line = first_line(daemon, kind)
    sock.close()
    return line.startswith((b"220 ", b"* OK", b"+OK"))


def fail2ban_hosts(log_text: str, tmp_path: Path) -> list[str]:
    """The hosts fail2ban-regex finds in ``log_text`` with our filter."""
    require_program("fail2ban-regex", "fail2ban")
    log_file = tmp_path / "for-fail2ban.log"
    log_file.write_text(log_text)
    result = subprocess.run(["fail2ban-regex", "-o", "ip", str(log_file), str(FILTER)],
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


def abuse_lines(log_text: str, limit: str) -> list[str]:
    return [line for line in log_text.splitlines() if f"abuse-limit limit={limit} " in line]


def test_connection_rate_is_shared_by_listeners_and_recovers(tmp_path):
    daemon = started(tmp_path, "connections_per_ip_per_minute = 6")
    # The readiness probes spent some of the six; at most six more are admitted.
    assert refused_within(daemon, "imap", b"* BYE [UNAVAILABLE]", attempts=8)
    assert refused_within(daemon, "smtp", b"421 4.7.0", attempts=2)  # one count for all
    assert refused_within(daemon, "pop3", b"-ERR [SYS/TEMP]", attempts=2)
    wait_for(lambda: admitted(daemon, "smtp"), timeout=60, interval=1, what="a token back")
    text = daemon.log()
    lines = abuse_lines(text, "connections_per_ip_per_minute")
    assert lines and all("ip=127.0.0.1 " in line for line in lines)
    assert fail2ban_hosts(text, tmp_path).count("127.0.0.1") >= len(lines)
    daemon.stop()


def pipelined(sock: socket.socket, commands: list[bytes]) -> list[bytes]:
    """Send every command in one write; the reply lines until the last command's
    (or the server's close)."""
    sock.sendall(b"".join(commands))
    reader = sock.makefile("rb")
    lines = []
    while len(lines) < len(commands):
        line = reader.readline()
        if not line:
            break
        lines.append(line)
    return lines


def test_command_rate_triggers_in_every_protocol_and_recovers(tmp_path):
    daemon = started(tmp_path, "commands_per_ip_per_second = 2\ncommands_burst_per_ip = 20")
    # IMAP: the commands past the burst get NO [LIMIT]; the connection stays.
    sock, greeting = first_line(daemon, "imap")
    replies = pipelined(sock, [b"a%d NOOP\r\n" % n for n in range(40)])
    limited = [line for line in replies if b"NO [LIMIT] Too many commands" in line]
    assert len(replies) == 40 and len(limited) >= 15, replies
    wait_for(lambda: pipelined(sock, [b"b NOOP\r\n"])[0].startswith(b"b OK"),
             interval=0.5, what="an IMAP command allowed again")
    sock.close()
    # POP3 answers -ERR [SYS/TEMP] and keeps the connection (USER: valid before login).
    sock, greeting = first_line(daemon, "pop3")
    replies = pipelined(sock, [b"USER alice@example.test\r\n"] * 40)
    assert any(line.startswith(b"-ERR [SYS/TEMP] too many commands") for line in replies), replies
    sock.close()
    # SMTP closes with 421 (RFC 5321 §3.8); a later connection works.
    sock, greeting = first_line(daemon, "smtp")
    replies = pipelined(sock, [b"NOOP\r\n"] * 40)
    assert replies[-1].startswith(b"421 4.7.0 Too many commands"), replies
    assert sock.recv(10) == b""
    sock.close()

    def smtp_noop_ok() -> bool:
        sock, greeting = first_line(daemon, "smtp")
        with sock:
            return pipelined(sock, [b"NOOP\r\n"])[0].startswith(b"250 ")

    wait_for(smtp_noop_ok, interval=0.5, what="an SMTP command allowed again")
    text = daemon.log()
    lines = abuse_lines(text, "commands_per_ip_per_second")
    protocols = {line.split(" protocol=")[1].split()[0] for line in lines}
    assert protocols == {"imap", "pop3", "smtp"}
    assert fail2ban_hosts(text, tmp_path).count("127.0.0.1") >= len(lines)
    daemon.stop()


def imap_login(daemon) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=30)
    client.login("alice@example.test", daemon.users["alice@example.test"])
    return client


def pop3_pass_refused(daemon, reply: str) -> None:
    """alice's right password over POP3S gets an -ERR matching ``reply``."""
    pop = poplib.POP3_SSL("127.0.0.1", daemon.ports["pop3s"], context=daemon.ssl_context(),
                          timeout=30)
    pop.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match=reply):
        pop.pass_(daemon.users["alice@example.test"])
    pop.quit()


def test_sessions_per_account_count_every_protocol_and_free_up(tmp_path):
    # Loopback stays exempt from the rates here (the default), never from this limit.
    daemon = started(tmp_path, "sessions_per_account_max = 2", abuse="")
    first, second = imap_login(daemon), imap_login(daemon)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\] Too many sessions"):
        imap_login(daemon)
    with smtplib.SMTP_SSL("127.0.0.1", daemon.ports["smtps"], context=daemon.ssl_context(),
                          timeout=30) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("alice@example.test", daemon.users["alice@example.test"])
        assert refused.value.smtp_code == 454
    pop3_pass_refused(daemon, r"SYS/TEMP\] too many sessions")
    first.logout()

    def third_login() -> bool:
        try:
            imap_login(daemon).logout()
            return True
        except imaplib.IMAP4.error:
            return False

    wait_for(third_login, interval=0.2, what="a session slot freed by LOGOUT")
    second.logout()
    text = daemon.log()
    lines = abuse_lines(text, "sessions_per_account_max")
    assert len(lines) >= 3 and all("user='alice@example.test'" in line for line in lines)
    daemon.stop()


def test_failed_logins_across_protocols_are_one_count_and_fail2ban_sees_them(tmp_path):
    daemon = started(tmp_path, "auth_failures_per_ip = 3")
    for attempt in range(2):
        client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"],
                                   ssl_context=daemon.ssl_context(), timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("alice@example.test", f"wrong-{attempt}")
        client.logout()
    with smtplib.SMTP_SSL("127.0.0.1", daemon.ports["smtps"], context=daemon.ssl_context(),
                          timeout=30) as client:
        client.ehlo("client.example.test")
        # one mechanism only: login() would try the next one after a 535
        client.user, client.password = "alice@example.test", "wrong-2"
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.auth("PLAIN", client.auth_plain)
        assert failed.value.smtp_code == 535
    # the third failure (over two protocols) throttles this IP everywhere, even the right password
    pop3_pass_refused(daemon, r"SYS/TEMP")
    text = daemon.log()
    assert fail2ban_hosts(text, tmp_path).count("127.0.0.1") == 4  # 3 failed, 1 throttled
    daemon.stop()


def test_greylisting_defers_a_new_triplet_until_its_retry(tmp_path):
    daemon = started(tmp_path, "greylist_delay = 2",
                     abuse="\n[abuse]\nexempt_networks = []\ngreylisting = true\n")

    def rcpt(sender: str, recipient: str) -> int:
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
            client.ehlo("client.remote.test")
            client.mail(sender)
            return client.rcpt(recipient)[0]

    assert rcpt("first@remote.test", "alice@example.test") == 450
    assert rcpt("first@remote.test", "nobody@example.test") == 550  # unknown users at once
    wait_for(lambda: rcpt("first@remote.test", "alice@example.test") == 250, interval=0.5,
             what="the retry after greylist_delay")
    assert rcpt("second@remote.test", "alice@example.test") == 450  # a new triplet
    # Submission is never greylisted.
    with smtplib.SMTP_SSL("127.0.0.1", daemon.ports["smtps"], context=daemon.ssl_context(),
                          timeout=30) as client:
        client.login("alice@example.test", daemon.users["alice@example.test"])
        client.sendmail("alice@example.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhi\r\n")
    text = daemon.log()
    assert "greylisted ip=127.0.0.1 sender='first@remote.test'" in text
    assert "greylisted ip=127.0.0.1 sender='second@remote.test'" in text
    assert fail2ban_hosts(text, tmp_path) == []  # a deferral is no offence
    daemon.stop()
