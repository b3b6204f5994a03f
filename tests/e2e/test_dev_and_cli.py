"""The commands a person types: `mailserverd dev` (what `make run` runs), check-config, serve's errors."""

from __future__ import annotations

import http.client
import imaplib
import os
import poplib
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading

import pytest

from clients import make_message, stored_tail
from conftest import REPO, make_daemon, mailserverd_command, wait_for

pytestmark = pytest.mark.e2e

DEV_PORTS = (2525, 2587, 2465, 1143, 1993, 1110, 1995, 8443, 8080)


def _ports_free() -> bool:
    for port in DEV_PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class DevServer:
    """`mailserverd dev` in a subprocess, its output collected by a thread."""

    def __init__(self, var_dir):
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            mailserverd_command() + ["dev", "--var-dir", str(var_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)

    def demo_line(self) -> tuple[str, str]:
        def find():
            if self.proc.poll() is not None:
                raise AssertionError("dev exited:\n" + "".join(self.output))
            for line in self.output:
                m = re.match(r"demo account: (\S+) password: (\S+)$", line.strip())
                if m:
                    return m.groups()
            return None

        return wait_for(find, timeout=90, what="the demo account line")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        return self.proc.wait(timeout=60)


def test_dev_serves_demo_account_and_reuses_var(tmp_path):
    if not _ports_free():
        pytest.skip("a dev port (2525...1995) is in use on this machine")
    var = tmp_path / "var"
    dev = DevServer(var)
    address, password = dev.demo_line()
    try:
        insecure = ssl.create_default_context(cafile=str(var / "tls" / "cert.pem"))
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # the dev certificate is self-signed
        sent = make_message("dev mode").replace(b"alice@example.test", address.encode())
        with smtplib.SMTP("127.0.0.1", 2525, timeout=30) as smtp:
            smtp.starttls(context=insecure)
            smtp.sendmail("someone@remote.test", [address], sent)
        imap = imaplib.IMAP4_SSL("127.0.0.1", 1993, ssl_context=insecure, timeout=30)
        imap.login(address, password)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[])")
        stored_tail(data[0][1], sent)
        imap.logout()
        pop = poplib.POP3_SSL("127.0.0.1", 1995, context=insecure, timeout=30)
        pop.user(address)
        pop.pass_(password)
        assert pop.stat()[0] == 1
        pop.quit()
        # The HTTP gateway: autoconfig in clear text on 8080, the API over TLS on 8443.
        plain = http.client.HTTPConnection("127.0.0.1", 8080, timeout=30)
        plain.request("GET", f"/mail/config-v1.1.xml?emailaddress={address}")
        assert b"<port>1993</port>" in plain.getresponse().read()
        api = http.client.HTTPSConnection("127.0.0.1", 8443, context=insecure, timeout=30)
        api.request("GET", "/api/v1/openapi.json")
        assert api.getresponse().status == 200
    finally:
        code = dev.interrupt()
    assert code == 0, "".join(dev.output)
    assert "Traceback" not in "".join(dev.output)

    again = DevServer(var)
    assert again.demo_line() == (address, password)
    assert again.interrupt() == 0


def run_cli(*args, env=None):
    return subprocess.run(mailserverd_command() + list(args), capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def test_check_config_ok_and_every_error_at_once(tmp_path):
    daemon = make_daemon(tmp_path / "d")
    ok = run_cli("check-config", "-c", str(daemon.config_path))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nshards = "many"\ncolour = "blue"\n[limits]\nsmtp_line_max = 5\n')
    result = run_cli("check-config", "-c", str(bad))
    assert result.returncode == 1
    for key in ("shards", "colour", "smtp_line_max"):
        assert key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_config_path_from_environment(tmp_path):
    daemon = make_daemon(tmp_path / "d")
    env = dict(os.environ, MAILSERVERD_CONFIG=str(daemon.config_path))
    assert run_cli("check-config", env=env).returncode == 0
    env["MAILSERVERD_CONFIG"] = str(tmp_path / "missing.toml")
    result = run_cli("check-config", env=env)
    assert result.returncode == 1 and "missing.toml" in result.stderr


def test_serve_reports_unusable_data_dir_clearly(tmp_path):
    daemon = make_daemon(tmp_path / "d")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    text = daemon.config_path.read_text().replace(str(daemon.data_dir), str(blocker / "data"))
    daemon.config_path.write_text(text)
    result = run_cli("serve", "-c", str(daemon.config_path))
    assert result.returncode == 1
    assert str(blocker) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_serve_reports_missing_certificate_clearly(tmp_path):
    daemon = make_daemon(tmp_path / "d")
    (daemon.root / "cert.pem").unlink()
    result = run_cli("serve", "-c", str(daemon.config_path))
    assert result.returncode == 1
    assert "cert.pem" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_user_admin_commands(tmp_path):
    daemon = make_daemon(tmp_path / "d")
    daemon.cli("domain", "add", "example.test")
    daemon.add_user("Dave@Example.TEST", "dave-secret-4")
    users = daemon.cli("user", "list").stdout
    assert "dave@example.test" in users
    duplicate = daemon.cli("user", "add", "dave@example.test", "--password-stdin", stdin="x\n", check=False)
    assert duplicate.returncode == 1 and "Traceback" not in duplicate.stderr
    no_domain = daemon.cli("user", "add", "eve@nowhere.test", "--password-stdin", stdin="x\n", check=False)
    assert no_domain.returncode == 1
    daemon.cli("alias", "add", "@example.test", "dave@example.test")
    assert "@example.test" in daemon.cli("alias", "list").stdout
    daemon.cli("user", "passwd", "dave@example.test", "--password-stdin", stdin="new-pass-5\n")
    daemon.cli("alias", "remove", "@example.test")
    daemon.cli("user", "remove", "dave@example.test")
    assert "dave@example.test" not in daemon.cli("user", "list").stdout
