"""Shared test support: the real daemon as a subprocess, test certificates, free ports.

``daemon`` starts ``mailserverd serve`` on free 127.0.0.1 ports with a trustme
CA, creates accounts through the real CLI, waits for readiness by connecting,
and on teardown sends SIGTERM and asserts a clean exit with no traceback logged.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
KINDS = ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s")
IN_CI = os.environ.get("CI") == "true"


def require_shared() -> Path:
    """The shared/ dir beside the repo; skip without it (fail under CI)."""
    if not SHARED.is_dir():
        message = f"shared test data not found at {SHARED}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return SHARED


@contextlib.contextmanager
def traversable_by_all(path: Path):
    """Within the block, every directory from ``path`` up that others may not
    search gets the search bit for others (o+x: pass through, not list); its
    mode is restored afterwards.

    For tests that run the program as another user (nobody): it must reach
    this checkout and its venv, which may sit in a private directory (a clone
    made in a ``mktemp -d`` directory is 0700).
    """
    changed = []
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode & 0o7777
        if not mode & 0o001:
            os.chmod(directory, mode | 0o001)
            changed.append((directory, mode))
    try:
        yield
    finally:
        for directory, mode in reversed(changed):
            os.chmod(directory, mode)


def require_program(name: str, package: str) -> str:
    """The path of a third-party program; skip without it (fail under CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package {package})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (bound and released)."""
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` (capped by the hard limit);
    return the soft limit now. A daemon started afterwards inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def mailserverd_command() -> list[str]:
    return [sys.executable, "-m", "mailserverd"]


@dataclass
class Daemon:
    """A ``mailserverd serve`` subprocess and what a test needs to talk to it."""

    root: Path
    ca_path: Path
    ports: dict[str, int]
    config_path: Path
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    users: dict[str, str] = field(default_factory=dict)
    log_offset: int = 0

    # -- running
    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run a ``mailserverd`` admin command against this daemon's config."""
        cmd = mailserverd_command() + list(args[:2]) + ["-c", str(self.config_path)] + list(args[2:])
        if args and args[0] == "check-config":
            cmd = mailserverd_command() + ["check-config", "-c", str(self.config_path)]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, cwd=self.root)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result

    def add_user(self, address: str, password: str) -> None:
        self.cli("user", "add", address, "--password-stdin", stdin=password + "\n")
        self.users[address] = password

    def start(self, command: list[str] | None = None, env: dict[str, str] | None = None,
              pass_fds: tuple[int, ...] = (), wait: bool = True) -> None:
        """Run ``mailserverd serve`` (or ``command``, a wrapper that ends up running
        it) with ``env`` added to the environment; wait until every port accepts."""
        log = open(self.log_path, "ab")
        self.log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            command or mailserverd_command() + ["serve", "-c", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
            env={**os.environ, **(env or {})}, pass_fds=pass_fds,
        )
        log.close()
        if wait:
            wait_for(self._all_listening, timeout=60, what="mailserverd listeners")

    def _all_listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mailserverd exited with {self.proc.returncode}:\n{self.log()}")
        for port in self.ports.values():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True

    def stop(self, check: bool = True) -> int:
        """SIGTERM and wait; with ``check``, assert exit status 0 and no traceback in the log."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        if check:
            text = self.log()
            assert code == 0, f"mailserverd exited {code}:\n{text}"
            assert "Traceback" not in text, text
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_bytes()[self.log_offset:].decode("utf-8", "replace")

    # -- clients
    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        return ctx


#: Daemons made during the current test; the autouse fixture below reaps them.
_MADE: list[Daemon] = []


@pytest.fixture(autouse=True)
def _reap_daemons():
    """Kill any daemon a test left running (a failed assertion skips its own stop)."""
    yield
    while _MADE:
        made = _MADE.pop()
        if made.proc is not None and made.proc.poll() is None:
            made.proc.kill()
            made.proc.wait(timeout=30)


_SHARED_DNS: list = []


def shared_dns():
    """One test DNS server for the whole run (started on first use): daemons point
    their resolver at it, so no test ever asks the real DNS. Tests that need
    records start their own with the ``dns_server`` fixture."""
    from dnsserver import TestDNSServer

    if not _SHARED_DNS:
        _SHARED_DNS.append(TestDNSServer().start())
    return _SHARED_DNS[0]


@pytest.fixture
def dns_server():
    """The run's test DNS server (see tests/dnsserver.py), emptied before and
    after the test, so that its records are this test's alone."""
    server = shared_dns()
    server.clear()
    yield server
    server.clear()


def make_daemon(root: Path, shards: int = 2, extra_config: str = "", dns=None) -> Daemon:
    """Write certificates and a config for a daemon under ``root``; don't start it.

    The daemon's resolver is ``dns`` (a TestDNSServer) or the run's shared one,
    unless ``extra_config`` has its own ``[dns]`` table.
    """
    import trustme

    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_path = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        with open(root / "cert.pem", "ab") as out:
            out.write(extra.bytes())
    ports = dict(zip(KINDS, free_ports(len(KINDS))))
    listeners = "".join(
        f'\n[[listener]]\nkind = "{kind}"\naddress = "127.0.0.1"\nport = {port}\n'
        for kind, port in ports.items()
    )
    dns_config = "" if "[dns]" in extra_config else \
        f'[dns]\nresolver = "{(dns or shared_dns()).address}"\ntimeout = 5\n'
    config = f"""
[server]
hostname = "mx.example.test"
data_dir = "{root / 'data'}"
shards = {shards}

[tls]
cert = "{root / 'cert.pem'}"
key = "{root / 'key.pem'}"

[limits]
bcrypt_cost = 4
auth_failure_delay = 0
{extra_config}
{listeners}
{dns_config}
"""
    config_path = root / "mailserverd.toml"
    config_path.write_text(config)
    made = Daemon(
        root=root, ca_path=ca_path, ports=ports, config_path=config_path,
        data_dir=root / "data", log_path=root / "mailserverd.log",
    )
    _MADE.append(made)
    return made


@pytest.fixture
def daemon(tmp_path):
    """A running daemon with domain example.test and users alice and bob."""
    d = make_daemon(tmp_path / "d")
    d.cli("domain", "add", "example.test")
    d.add_user("alice@example.test", "alice-secret-1")
    d.add_user("bob@example.test", "bob-secret-2")
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@contextlib.contextmanager
def tmpfs(mount_point: Path, options: str):
    """A tmpfs mounted at ``mount_point`` (created) with mount ``options`` (e.g.
    ``size=1m`` or ``ro``) while the block runs; needs root: skips without it,
    fails under CI as root. Unmounted afterwards."""
    mount_point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        message = f"cannot mount a tmpfs (needs root): {result.stderr.strip()}"
        if IN_CI and os.geteuid() == 0:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
