"""Running under systemd, end to end: sd_notify states and the watchdog on a test
NOTIFY_SOCKET, socket activation with LISTEN_FDS set by the test, SIGHUP reloads
(new certificate, new limits, broken config), SIGTERM with open sessions, the
privilege drop when started as root, and the server under MemoryDenyWriteExecute."""

from __future__ import annotations

import imaplib
import os
import poplib
import pwd
import shutil
import signal
import site
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trustme

from clients import imap_fetch_all, make_message, smtp_send
from conftest import KINDS, REPO, make_daemon, mailserverd_command, traversable_by_all, wait_for


def with_server_keys(daemon, **values) -> None:
    """Add ``[server]`` keys to the daemon's config file."""
    text = daemon.config_path.read_text()
    lines = "".join(f"{key} = {value!r}\n".replace("'", '"') if isinstance(value, str)
                    else f"{key} = {str(value).lower()}\n" for key, value in values.items())
    marker = "[server]\n"
    assert marker in text
    daemon.config_path.write_text(text.replace(marker, marker + lines, 1))


def with_limits(daemon, **values) -> None:
    """Add ``[limits]`` keys to the daemon's config file."""
    text = daemon.config_path.read_text()
    marker = "[limits]\n"
    lines = "".join(f"{key} = {value}\n" for key, value in values.items())
    daemon.config_path.write_text(text.replace(marker, marker + lines, 1))


def prepared(root: Path, **server_keys):
    """A daemon under ``root`` with example.test and alice, not started."""
    daemon = make_daemon(root)
    if server_keys:
        with_server_keys(daemon, **server_keys)
    daemon.cli("domain", "add", "example.test")
    daemon.add_user("alice@example.test", "alice-secret-1")
    return daemon


class Manager:
    """The service manager's end of $NOTIFY_SOCKET: a datagram socket the test binds."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(60)  # generous: no assertion on time

    def next(self, skip_watchdog: bool = True) -> list[str]:
        """The next message's assignments (WATCHDOG=1 pings skipped unless asked for)."""
        while True:
            message = self.sock.recv(4096).decode().split("\n")
            if not (skip_watchdog and message == ["WATCHDOG=1"]):
                return message

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path):
    made = Manager(tmp_path / "notify")
    yield made
    made.close()


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


def log_has(daemon, text: str):
    return lambda: text in daemon.log()


# --- sd_notify


def test_notify_ready_watchdog_reload_and_stopping(tmp_path, manager):
    daemon = prepared(tmp_path / "d")
    daemon.start(env={"NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "400000"}, wait=False)
    assert manager.next() == ["READY=1", "STATUS=serving 7 listeners"]
    # READY=1 came only once every listener was up: all accept now, with no wait.
    assert all(accepts(port) for port in daemon.ports.values())
    assert [manager.next(skip_watchdog=False) for _ in range(3)] == [["WATCHDOG=1"]] * 3
    smtp_send(daemon, make_message("after ready"))

    daemon.proc.send_signal(signal.SIGHUP)
    reloading = manager.next()
    assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
    assert int(reloading[1].split("=")[1]) > 0
    assert manager.next() == ["READY=1"]
    wait_for(log_has(daemon, "reloaded"), what="the reload's log line")

    daemon.stop()  # exit 0, no traceback
    assert manager.next() == ["STOPPING=1"]


# --- socket activation

#: Moves the passed sockets to fds 3.. (as systemd does), sets LISTEN_* for
#: this very process, then execs the server (argv[2:]).
ACTIVATE = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for number, fd in enumerate(high):
    os.dup2(fd, 3 + number)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)),
                  LISTEN_FDNAMES=":".join(["mailserverd"] * len(fds)))
os.execv(sys.argv[2], sys.argv[2:])
"""


def bound_sockets(daemon, kinds=KINDS) -> list[socket.socket]:
    """Listening sockets on the daemon's ports, as a socket unit would open them."""
    socks = []
    for kind in kinds:
        sock = socket.socket()
        sock.bind(("127.0.0.1", daemon.ports[kind]))
        sock.listen(16)
        socks.append(sock)
    return socks


def activate(daemon, socks, **kwargs) -> None:
    fds = [sock.fileno() for sock in socks]
    command = [sys.executable, "-c", ACTIVATE, ",".join(map(str, fds)),
               *mailserverd_command(), "serve", "-c", str(daemon.config_path)]
    daemon.start(command=command, pass_fds=tuple(fds), wait=False, **kwargs)


def test_socket_activation_serves_on_the_passed_sockets(tmp_path, manager):
    daemon = prepared(tmp_path / "d", socket_activation=True)
    socks = bound_sockets(daemon)
    try:
        activate(daemon, socks, env={"NOTIFY_SOCKET": manager.path})
        assert manager.next()[0] == "READY=1"
    finally:
        for sock in socks:
            sock.close()  # the server holds its own copies; it never bound these ports
    message = make_message("socket activated")
    smtp_send(daemon, message)
    smtp_send(daemon, message, kind="smtps")
    assert len(imap_fetch_all(daemon, "alice@example.test")) == 2
    assert len(imap_fetch_all(daemon, "alice@example.test", implicit=True)) == 2
    daemon.stop()


def test_socket_activation_without_a_listeners_socket_refuses_to_start(tmp_path):
    daemon = prepared(tmp_path / "d", socket_activation=True)
    socks = bound_sockets(daemon, KINDS[:-1])
    try:
        activate(daemon, socks)
        assert daemon.proc.wait(timeout=60) == 1
    finally:
        for sock in socks:
            sock.close()
    assert (f"[[listener]] #7 (pop3s 127.0.0.1:{daemon.ports['pop3s']}): systemd passed no "
            "socket bound there") in daemon.log()


# --- SIGHUP


def peer_certificate(sock: ssl.SSLSocket) -> bytes:
    return sock.getpeercert(binary_form=True)


def new_certificate(daemon) -> bytes:
    """Replace the daemon's certificate and key by ones from a new CA (which the
    clients are given too); return the new certificate (DER)."""
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    issued.private_key_pem.write_to_path(str(daemon.root / "key.pem"))
    issued.cert_chain_pems[0].write_to_path(str(daemon.root / "cert.pem"))
    with open(daemon.ca_path, "ab") as out:
        out.write(ca.cert_pem.bytes())
    return ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


def ehlo_size(client: smtplib.SMTP) -> int:
    client.ehlo("client.remote.test")
    return int(client.esmtp_features["size"])


def test_reload_takes_a_new_certificate_and_new_limits(daemon):
    old_imap = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                                 timeout=30)
    old_imap.login("alice@example.test", "alice-secret-1")
    old_smtp = smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30)
    old_cert = peer_certificate(old_imap.sock)
    assert ehlo_size(old_smtp) == 50 * 1024 * 1024

    cert = new_certificate(daemon)
    with_limits(daemon, message_size_max=1048576)
    # A changed [dns] table: the inbound checks are rebuilt for mail from now on.
    text = daemon.config_path.read_text()
    assert "timeout = 5\n" in text
    daemon.config_path.write_text(text.replace("timeout = 5\n", "timeout = 7\n"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(log_has(daemon, "reloaded"), what="the reload's log line")
    assert "reload-kept" not in daemon.log()
    smtp_send(daemon, make_message("checked by the new checks"))  # the MX runs them

    fresh = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                              timeout=30)
    assert peer_certificate(fresh.sock) == cert != old_cert
    fresh.logout()
    starttls = smtplib.SMTP("127.0.0.1", daemon.ports["submission"], timeout=30)
    starttls.starttls(context=daemon.ssl_context())
    assert peer_certificate(starttls.sock) == cert
    assert ehlo_size(starttls) == 1048576  # a new connection has the new limit
    starttls.quit()
    # The connections open before it go on as they were.
    assert old_imap.noop()[0] == "OK"
    assert old_imap.select("INBOX")[0] == "OK"
    assert peer_certificate(old_imap.sock) == old_cert
    old_imap.logout()
    assert ehlo_size(old_smtp) == 50 * 1024 * 1024
    old_smtp.quit()
    assert len(imap_fetch_all(daemon, "alice@example.test")) == 1


def test_reload_with_a_broken_config_keeps_serving(daemon):
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace("[limits]\n", "[limits]\nsmtp_line_max = 5\n")
                                  .replace("[server]\n", "[server]\nbogus = 1\n"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(log_has(daemon, "reload-failed"), what="the failed reload's log line")
    log = daemon.log()
    assert "[limits] smtp_line_max: must be between 512 and 65536 (bytes), got 5" in log
    assert "[server] bogus: unknown key" in log
    smtp_send(daemon, make_message("still serving"))
    assert len(imap_fetch_all(daemon, "alice@example.test")) == 1

    # A key only a restart can change is named, and the running value stays.
    daemon.config_path.write_text(good.replace("shards = 2", "shards = 3"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(log_has(daemon, "reload-kept key=[server] shards"), what="the kept key's log line")
    smtp_send(daemon, make_message("same shards"), rcpt="bob@example.test")
    assert len(imap_fetch_all(daemon, "bob@example.test")) == 1
    daemon.stop()


# --- SIGTERM


def test_sigterm_says_goodbye_to_open_sessions_and_exits_0(daemon):
    imap = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                             timeout=30)
    imap.login("alice@example.test", "alice-secret-1")
    imap.select("INBOX")
    smtp = smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30)
    smtp.ehlo("client.remote.test")
    pop3 = poplib.POP3_SSL("127.0.0.1", daemon.ports["pop3s"], context=daemon.ssl_context(), timeout=30)
    pop3.user("alice@example.test")
    pop3.pass_("alice-secret-1")

    daemon.proc.send_signal(signal.SIGTERM)
    assert imap.readline() == b"* BYE Server shutting down\r\n"
    assert smtp.getreply() == (421, b"4.3.2 Service shutting down, try again later")
    assert pop3._getline()[0] == b"-ERR [SYS/TEMP] server shutting down, try again later"
    assert daemon.proc.wait(timeout=60) == 0
    assert "Traceback" not in daemon.log()


def test_sigterm_cuts_off_a_session_after_shutdown_timeout(tmp_path):
    daemon = prepared(tmp_path / "d")
    with_limits(daemon, shutdown_timeout=1)
    daemon.start()
    smtp = smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=60)
    smtp.ehlo("client.remote.test")
    smtp.mail("sender@remote.test")
    smtp.rcpt("alice@example.test")
    assert smtp.docmd("DATA")[0] == 354
    smtp.send(b"Subject: never finished\r\n\r\nhalf a message\r\n")

    daemon.proc.send_signal(signal.SIGTERM)
    # Mail text is being sent: the session may finish it, until the timeout.
    assert smtp.getreply() == (421, b"4.3.2 Service shutting down, try again later")
    assert daemon.proc.wait(timeout=60) == 0
    assert "shutdown-forced connections=1" in daemon.log()
    assert "Traceback" not in daemon.log()


# --- privileges


def interpreter_for(user: str) -> tuple[str, dict[str, str]]:
    """A Python that ``user`` can run with this checkout's packages, and its env.

    This venv's own, when the user can reach it; else the system's Python of
    the same version given the venv's site-packages (a venv made from an
    interpreter under a private home cannot be run by anyone else).
    """
    probe = ["-c", "import mailserverd.cli, lmdb, OpenSSL, twisted"]
    paths = os.pathsep.join([str(REPO), *site.getsitepackages()])
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}",
                          path="/usr/bin") or ""
    for python, env in ((sys.executable, {}), (system, {"PYTHONPATH": paths})):
        try:
            probed = subprocess.run([python, *probe], user=user, group=pwd.getpwnam(user).pw_gid,
                                    extra_groups=[], env={**os.environ, **env},
                                    cwd="/", capture_output=True, timeout=120)
        except OSError:
            continue  # the user may not even execute it
        if probed.returncode == 0:
            return python, env
    pytest.fail(f"no Python that {user} can run with mailserverd's packages")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.mark.skipif(os.geteuid() != 0, reason="the privilege drop is tested when started as root")
def test_started_as_root_it_drops_to_the_configured_user():
    with traversable_by_all(REPO):
        run_as_nobody_and_check_the_drop()


def run_as_nobody_and_check_the_drop():
    python, env = interpreter_for("nobody")
    base = Path(tempfile.mkdtemp(prefix="mailserverd-drop-"))
    manager = Manager(base / "notify")
    try:
        # Once nobody, the server reads its certificate here (reload) and notifies here.
        base.chmod(0o755)
        os.chmod(manager.path, 0o666)  # as systemd's socket: writable by the service's user
        daemon = prepared(base / "d", user="nobody", group="nogroup")
        daemon.start(command=[python, "-m", "mailserverd", "serve", "-c", str(daemon.config_path)],
                     env={**env, "NOTIFY_SOCKET": manager.path})
        # The ports accept (into the backlog) from the bind on; READY=1 comes once they are served.
        assert manager.next()[0] == "READY=1"
        status = proc_status(daemon.proc.pid)
        assert status["Uid"].split() == ["65534"] * 4
        assert status["Gid"].split() == ["65534"] * 4
        assert status["Groups"].split() == ["65534"]
        assert int(status["CapEff"], 16) == 0
        assert "privileges-dropped user=nobody uid=65534 gid=65534" in daemon.log()
        for path in [daemon.data_dir, *daemon.data_dir.rglob("*")]:
            assert (path.lstat().st_uid, path.lstat().st_gid) == (65534, 65534), path
        smtp_send(daemon, make_message("to a dropped server"))
        assert len(imap_fetch_all(daemon, "alice@example.test")) == 1
        daemon.proc.send_signal(signal.SIGHUP)  # the certificate is read again, as nobody
        wait_for(log_has(daemon, "reloaded"), what="the reload's log line")
        daemon.stop()
    finally:
        manager.close()
        shutil.rmtree(base)


def test_an_unknown_user_stops_the_start(tmp_path):
    daemon = prepared(tmp_path / "d", user="no-such-user-here")
    daemon.start(wait=False)
    assert daemon.proc.wait(timeout=60) == 1
    assert "[server] user 'no-such-user-here' does not exist" in daemon.log()


# --- MemoryDenyWriteExecute

#: Turns on the kernel's MemoryDenyWriteExecute (PR_SET_MDWE, Linux 6.3; kept
#: across exec), then execs the server; exit 77 when the kernel lacks it.
NO_WRITE_EXECUTE = """
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_serves_without_writable_executable_memory(tmp_path):
    probe = subprocess.run([sys.executable, "-c", NO_WRITE_EXECUTE, "/bin/true"], timeout=60)
    if probe.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    daemon = prepared(tmp_path / "d")
    daemon.start(command=[sys.executable, "-c", NO_WRITE_EXECUTE, *mailserverd_command(),
                          "serve", "-c", str(daemon.config_path)])
    message = make_message("no W+X")
    smtp_send(daemon, message)
    smtp_send(daemon, message, kind="smtps")
    assert len(imap_fetch_all(daemon, "alice@example.test", implicit=True)) == 2
    pop3 = poplib.POP3_SSL("127.0.0.1", daemon.ports["pop3s"], context=daemon.ssl_context(), timeout=30)
    pop3.user("alice@example.test")
    pop3.pass_("alice-secret-1")
    assert pop3.stat()[0] == 2
    pop3.quit()
    daemon.stop()
