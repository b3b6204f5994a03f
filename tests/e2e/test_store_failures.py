"""What a person and a client see when the store cannot be used or fills up.

A store of an unknown schema or the wrong shard count: `serve` refuses with one
clear line. A full LMDB map and a full disk (both produced for real) during
delivery: the client gets a temporary 4xx, nothing half-written appears, and
the daemon goes on serving everyone else.
"""

from __future__ import annotations

import os
import smtplib
import subprocess

import lmdb
import pytest

from clients import imap_fetch_all, make_message, stored_tail
from conftest import REPO, make_daemon, mailserverd_command, tmpfs

pytestmark = pytest.mark.e2e


def serve_once(daemon) -> subprocess.CompletedProcess:
    return subprocess.run(mailserverd_command() + ["serve", "-c", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_unknown_schema_version_is_refused_clearly(tmp_path):
    daemon = make_daemon(tmp_path / "d")
    daemon.cli("domain", "add", "example.test")
    env = lmdb.open(str(daemon.data_dir / "meta"), max_dbs=16)
    info = env.open_db(b"info")
    with env.begin(write=True, db=info) as txn:
        txn.put(b"schema", (99).to_bytes(8, "big"))
    env.close()
    result = serve_once(daemon)
    assert result.returncode == 1
    assert "schema version 99" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_changed_shard_count_is_refused_clearly(tmp_path):
    daemon = make_daemon(tmp_path / "d", shards=2)
    daemon.cli("domain", "add", "example.test")
    daemon.config_path.write_text(daemon.config_path.read_text().replace("shards = 2", "shards = 3"))
    result = serve_once(daemon)
    assert result.returncode == 1
    assert "shards=2" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def fill_until_refused(daemon, size_kib: int, attempts: int = 400) -> tuple[list[bytes], tuple[int, bytes]]:
    """Deliver distinct messages until one is refused; return the accepted ones and the refusal."""
    accepted = []
    filler = os.urandom(size_kib * 1024 // 2).hex().encode()
    lines = b"\r\n".join(filler[i:i + 76] for i in range(0, len(filler), 76))
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=60) as client:
        client.ehlo("filler.test")
        for n in range(attempts):
            message = make_message(f"filler {n}", body_lines=1) + lines + b"\r\n"
            try:
                client.sendmail("filler@remote.test", ["alice@example.test"], message)
            except smtplib.SMTPDataError as exc:
                return accepted, (exc.smtp_code, exc.smtp_error)
            accepted.append(message)
    raise AssertionError(f"the store never filled up after {attempts} messages")


def assert_still_serving(daemon, accepted: list[bytes]) -> None:
    """Every accepted message is intact, no refused one appears, and logins still work."""
    stored = imap_fetch_all(daemon, "alice@example.test")
    assert len(stored) == len(accepted)
    for fetched, sent in zip(stored, accepted):
        stored_tail(fetched, sent)


def test_full_map_gives_temporary_error_and_keeps_serving(tmp_path):
    daemon = make_daemon(tmp_path / "d", extra_config="store_map_size = 4194304")  # 4 MiB per env
    daemon.cli("domain", "add", "example.test")
    daemon.add_user("alice@example.test", "alice-secret-1")
    daemon.start()
    accepted, (code, text) = fill_until_refused(daemon, size_kib=200)
    # temporary, so the sender keeps the message and retries: RFC 5321 §4.2.3 452, RFC 3463 4.3.1
    assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
    assert accepted, "nothing fit before the map was full"
    assert_still_serving(daemon, accepted)
    daemon.stop()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 12 MiB tmpfs mounted for the test (needs root); unmounted afterwards."""
    with tmpfs(tmp_path / "small", "size=12m,mode=0700") as mount_point:
        yield mount_point


def test_full_disk_gives_temporary_error_and_keeps_serving(tmp_path, small_tmpfs):
    daemon = make_daemon(tmp_path / "d")
    daemon.config_path.write_text(
        daemon.config_path.read_text().replace(str(daemon.data_dir), str(small_tmpfs / "data")))
    daemon.data_dir = small_tmpfs / "data"
    daemon.cli("domain", "add", "example.test")
    daemon.add_user("alice@example.test", "alice-secret-1")
    daemon.start()
    accepted, (code, text) = fill_until_refused(daemon, size_kib=300)
    assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
    assert accepted
    assert_still_serving(daemon, accepted)
    daemon.stop()
