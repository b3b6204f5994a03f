"""Encryption at rest, end to end: the daemon with a master key in a 0400 file
takes mail over SMTP, serves and searches it over IMAP (indexed and not),
queues outbound mail, and no file under its data dir holds a word of it; the
CLI makes keys, rotates the master key, verifies sealed mail with fsck, and
refuses a loose key file, a wrong key and a missing one with clear errors."""

from __future__ import annotations

import os
import subprocess

import pytest

from clients import smtp_send
from conftest import mailserverd_command
from search_support import ALICE, BOB, login, search_daemon, wait_indexed

pytestmark = pytest.mark.e2e

MARKERS = [b"Quagmire-subject-7391", b"zephyrine-body-5520", b"<marker-id-8812@remote.test>"]


def marked_message(number: int) -> bytes:
    return (b"From: Remote <sender@remote.test>\r\nTo: alice@example.test\r\n"
            b"Subject: " + MARKERS[0] + b" %d\r\nMessage-ID: " % number + MARKERS[2] +
            b"\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nThe " + MARKERS[1] + b" is here.\r\n")


def files_under(path) -> bytes:
    return b"".join(open(os.path.join(folder, name), "rb").read()
                    for folder, _, names in os.walk(path) for name in names)


def sealed_daemon(root):
    root.mkdir(parents=True, exist_ok=True)
    key_path = root / "master.key"
    subprocess.run(mailserverd_command() + ["keys", "new", str(key_path)], check=True, capture_output=True)
    daemon = search_daemon(root, tables=f'\n[encryption]\nmaster_key_file = "{key_path}"\n')
    return daemon, key_path


def test_mail_is_sealed_on_disk_and_served_and_searched_over_imap(tmp_path):
    daemon, key_path = sealed_daemon(tmp_path / "d")
    assert oct(key_path.stat().st_mode & 0o777) == "0o400"
    daemon.start()
    for number in range(3):
        smtp_send(daemon, marked_message(number), [ALICE, BOB])
    wait_indexed(daemon)  # the indexer follows the log: a sealed index
    imap = login(daemon)
    try:
        typ, data = imap.uid("SEARCH", None, "BODY", MARKERS[1].decode())
        assert typ == "OK" and len(data[0].split()) == 3
        typ, data = imap.uid("SEARCH", None, "SUBJECT", "quagmire-SUBJ")  # a substring, any case
        assert typ == "OK" and len(data[0].split()) == 3
        typ, data = imap.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1].endswith(marked_message(0))
        typ, data = imap.fetch("1", "(ENVELOPE)")  # from the sealed facts
        assert typ == "OK" and MARKERS[0] + b" 0" in data[0]
    finally:
        imap.logout()
    daemon.stop()
    on_disk = files_under(daemon.data_dir)
    for marker in MARKERS:
        assert marker not in on_disk and marker.lower() not in on_disk, marker
    assert b"zephyrine" not in on_disk and b"quagmire" not in on_disk  # nor the index's tokens
    checked = daemon.cli("fsck")  # content verified by default
    assert "no problems" in checked.stdout and "not verified" not in checked.stdout


def test_rotation_and_the_key_errors_an_operator_meets(tmp_path):
    daemon, key_path = sealed_daemon(tmp_path / "d")
    daemon.start()
    smtp_send(daemon, marked_message(1), ALICE)
    daemon.stop()

    new_key = tmp_path / "new.key"
    made = daemon.cli("keys", "new", str(new_key))
    assert "mode 0400" in made.stdout
    again = daemon.cli("keys", "new", str(new_key), check=False)
    assert again.returncode != 0 and "never replaced" in again.stderr
    rotated = daemon.cli("keys", "rotate", "--new-key", str(new_key))
    assert "rewrapped" in rotated.stdout and "data keys" in rotated.stdout

    # the old key (still in the config) is refused with the reason
    refused = daemon.cli("user", "list", check=False)
    assert refused.returncode != 0 and "another master key" in refused.stderr

    config = daemon.config_path.read_text().replace(str(key_path), str(new_key))
    daemon.config_path.write_text(config)
    new_key.chmod(0o644)
    loose = daemon.cli("user", "list", check=False)
    assert loose.returncode != 0 and "chmod 0400" in loose.stderr
    new_key.chmod(0o400)

    daemon.start()
    imap = login(daemon)
    try:
        typ, data = imap.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1].endswith(marked_message(1))
    finally:
        imap.logout()
    daemon.stop()

    daemon.config_path.write_text(config.replace(f'master_key_file = "{new_key}"', ""))
    missing = daemon.cli("user", "list", check=False)
    assert missing.returncode != 0 and "encrypted at rest" in missing.stderr
