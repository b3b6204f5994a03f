"""backup, restore, fsck, export and import through the real CLI against a running daemon.

What is checked is what a user or an operator sees: the messages IMAP shows
(bytes, flags, INTERNALDATE, folders) after a restore or an import, the exit
status and message of each command, and what is left on disk after a failure.
"""

from __future__ import annotations

import imaplib
import os
import re
import smtplib
import threading
from datetime import datetime

import pytest

from clients import make_message
from conftest import make_daemon, tmpfs, wait_for

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice@example.test", "bob@example.test"
_FETCHED = re.compile(rb"FLAGS \(([^)]*)\)|INTERNALDATE \"([^\"]+)\"")


def imap_client(daemon, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=30)
    client.starttls(ssl_context=daemon.ssl_context())
    client.login(user, daemon.users[user])
    return client


def mailbox_names(client) -> list[str]:
    typ, lines = client.list()
    assert typ == "OK", lines
    names = []
    for line in lines:
        name = re.search(rb' (?:"((?:[^"\\]|\\.)*)"|(\S+))$', line)
        names.append((name[1] or name[2]).decode())
    return sorted(names)


def imap_view(daemon, user: str) -> dict:
    """``{mailbox: [(bytes, flags, INTERNALDATE as Unix time)]}`` as IMAP shows them, in UID order."""
    client = imap_client(daemon, user)
    try:
        view = {}
        for name in mailbox_names(client):
            typ, data = client.select(f'"{name}"', readonly=True)
            assert typ == "OK", data
            view[name] = []
            if int(data[0]) == 0:
                continue
            typ, data = client.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
            assert typ == "OK", data
            for part in data:
                if not isinstance(part, tuple):
                    continue
                flags = date = None
                for found in _FETCHED.finditer(part[0]):
                    if found[1] is not None:
                        flags = frozenset(found[1].decode().split()) - {"\\Recent"}
                    else:
                        date = int(datetime.strptime(found[2].decode().strip(), "%d-%b-%Y %H:%M:%S %z").timestamp())
                view[name].append((part[1], flags, date))
        return view
    finally:
        client.logout()


def subjects(view: dict, mailbox: str = "INBOX") -> list[str]:
    return [re.search(rb"^Subject: (.*?)\r$", raw, re.M)[1].decode() for raw, _, _ in view[mailbox]]


class Deliveries(threading.Thread):
    """Sends message after message to alice over one SMTP session until stopped;
    ``acknowledged`` holds the subjects whose 250 has come back, in order."""

    def __init__(self, daemon):
        super().__init__(daemon=True)
        self.daemon_under_test = daemon
        self.acknowledged: list[str] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            with smtplib.SMTP("127.0.0.1", self.daemon_under_test.ports["smtp"], timeout=30) as client:
                client.starttls(context=self.daemon_under_test.ssl_context())
                client.ehlo("client.remote.test")
                n = 0
                while not self.stopping.is_set():
                    subject = f"delivery {n}"
                    client.sendmail("sender@remote.test", [ALICE], make_message(subject, body_lines=200))
                    self.acknowledged.append(subject)
                    n += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self):
        self.stopping.set()
        self.join(timeout=60)
        assert self.error is None, self.error


def test_backup_during_deliveries_restores_every_acknowledged_message(tmp_path, daemon):
    deliveries = Deliveries(daemon)
    deliveries.start()
    wait_for(lambda: len(deliveries.acknowledged) >= 20, timeout=60, what="first deliveries")
    before_backup = list(deliveries.acknowledged)
    backup = tmp_path / "backups" / "monday"
    made = daemon.cli("backup", str(backup))
    assert "backup written to" in made.stdout and "shard-00 seq" in made.stdout, made.stdout
    live = daemon.cli("fsck", check=False)  # read-only, beside the running daemon and its deliveries
    deliveries.stop()
    assert live.returncode == 0, live.stdout + live.stderr
    queue = {"queue"} if (daemon.data_dir / "queue").exists() else set()  # the outbound queue's env
    assert set(os.listdir(backup)) == {"MANIFEST.json", "meta", "shards"} | queue
    assert os.listdir(backup.parent) == ["monday"]  # no partial copy beside it

    restored = make_daemon(tmp_path / "restored")
    done = restored.cli("restore", str(backup))
    assert "shards = 2" in done.stdout, done.stdout
    check = restored.cli("fsck")
    assert "no problems" in check.stdout, check.stdout
    refused = restored.cli("restore", str(backup), check=False)
    assert refused.returncode == 1 and "is not empty" in refused.stderr, refused.stderr
    restored.users = dict(daemon.users)  # the accounts came with the backup
    restored.start()
    seen = subjects(imap_view(restored, ALICE))
    assert set(before_backup) <= set(seen)  # every message acknowledged before the backup began
    assert set(seen) <= set(deliveries.acknowledged) | {f"delivery {len(deliveries.acknowledged)}"}
    restored.stop()


def test_backup_into_a_read_only_or_full_file_system_fails_and_leaves_nothing(tmp_path, daemon):
    # 4 x 600 KiB of random hex: the compacted store is well over the 1 MiB tmpfs
    filler = "\r\n".join(os.urandom(38).hex() for _ in range(8000))
    for n in range(4):
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
            client.starttls(context=daemon.ssl_context())
            client.sendmail("sender@remote.test", [ALICE],
                            f"Subject: big {n}\r\n\r\n{filler}{n}\r\n".encode())
    with tmpfs(tmp_path / "ro", "ro,size=4m") as read_only, tmpfs(tmp_path / "tiny", "size=1m") as tiny:
        failed = daemon.cli("backup", str(read_only / "b"), check=False)
        assert failed.returncode == 1 and "Read-only file system" in failed.stderr, failed.stderr
        assert os.listdir(read_only) == []
        failed = daemon.cli("backup", str(tiny / "b"), check=False)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "No space left on device" in failed.stderr and "removed" in failed.stderr, failed.stderr
        assert os.listdir(tiny) == []
        failed = daemon.cli("backup", str(tiny), check=False)
        assert failed.returncode == 1 and "mount point" in failed.stderr, failed.stderr


def write_file(path, data: bytes, mtime: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    os.utime(path, (mtime, mtime))


def dovecot_tree(root) -> dict:
    """A Dovecot-style Maildir++ tree; returns what IMAP should then show, by mailbox."""
    one = b"Subject: new one\nFrom: a@example.org\n\nunread\n"
    two = b"Subject: read one\nFrom: a@example.org\n\nseen and answered\n"
    three = b"Subject: on a list\n\nflagged, with keywords\n"
    four = b"Subject: deep\n\nin a subfolder\n"
    write_file(root / "new" / "1700000001.M1P1.old", one, 1700000001)
    write_file(root / "cur" / "1700000002.M2P1.old,S=60:2,RS", two, 1600000000)
    write_file(root / ".Lists.python-dev" / "cur" / "1700000003.M3P1.old:2,Fac", three, 1500000000)
    (root / ".Lists.python-dev" / "dovecot-keywords").write_text("0 $Work\n1 Unused\n2 NonJunk\n")
    write_file(root / ".Lists.python-dev.2023" / "cur" / "1700000004.M4P1.old:2,T", four, 1400000000)
    for sub in ("tmp",):
        os.makedirs(root / sub, exist_ok=True)
    crlf = lambda raw: raw.replace(b"\n", b"\r\n")  # noqa: E731
    return {
        "INBOX": [(crlf(one), frozenset(), 1700000001),
                  (crlf(two), frozenset({"\\Seen", "\\Answered"}), 1600000000)],
        "Lists/python-dev": [(crlf(three), frozenset({"\\Flagged", "$Work", "NonJunk"}), 1500000000)],
        "Lists/python-dev/2023": [(crlf(four), frozenset({"\\Deleted"}), 1400000000)],
        "Lists": [],
    }


MBOX = (b"From someone@example.org Mon Jan  1 00:00:00 2024\n"
        b"Subject: mbox one\nStatus: RO\nX-Status: F\n\n>From the body\nbody\n\n"
        b"From other@example.org Tue Jan  2 10:30:00 2024 +0100\n"
        b"Subject: mbox two\n\nsecond\n")


def test_import_maildir_and_mbox_then_imap_shows_folders_flags_and_dates(tmp_path, daemon):
    expected = dovecot_tree(tmp_path / "Maildir")
    first = daemon.cli("import", "maildir", str(tmp_path / "Maildir"), "--user", ALICE)
    assert "imported 4 messages" in first.stdout and "2 mailboxes created" in first.stdout, first.stdout
    again = daemon.cli("import", "maildir", str(tmp_path / "Maildir"), "--user", ALICE)
    assert "imported 0 messages" in again.stdout and "4 already there" in again.stdout, again.stdout
    (tmp_path / "old.mbox").write_bytes(MBOX)
    daemon.cli("import", "mbox", str(tmp_path / "old.mbox"), "--user", ALICE, "--mailbox", "Old mail")
    view = imap_view(daemon, ALICE)
    for mailbox, messages in expected.items():
        assert view[mailbox] == messages, mailbox
    assert view["Old mail"] == [
        (b"Subject: mbox one\r\n\r\nFrom the body\r\nbody\r\n", frozenset({"\\Seen", "\\Flagged"}), 1704067200),
        (b"Subject: mbox two\r\n\r\nsecond\r\n", frozenset(), 1704187800),
    ]
    client = imap_client(daemon, ALICE)
    try:
        typ, lines = client.lsub()
        assert typ == "OK" and any(b"Lists/python-dev/2023" in line for line in lines), lines
    finally:
        client.logout()


def test_export_then_import_round_trips(tmp_path, daemon):
    for n in range(3):
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=30) as client:
            client.starttls(context=daemon.ssl_context())
            client.sendmail("sender@remote.test", [ALICE], make_message(f"round trip {n}"))
    client = imap_client(daemon, ALICE)
    try:
        assert client.create('"Projects/2024"')[0] == "OK"
        assert client.append('"Projects/2024"', "(\\Draft $Plan)", '"05-Mar-2021 10:11:12 +0000"',
                             make_message("planned"))[0] == "OK"
        client.select("INBOX")
        assert client.store("1", "+FLAGS", "(\\Flagged $Work)")[0] == "OK"
        assert client.store("2", "+FLAGS", "(\\Seen)")[0] == "OK"
    finally:
        client.logout()
    exported = daemon.cli("export", ALICE, str(tmp_path / "export"))
    assert "exported 4 messages" in exported.stdout, exported.stdout
    root = tmp_path / "export"
    inbox = sorted(os.listdir(root / "cur"))
    assert [name.rsplit(":2,", 1)[1] for name in inbox] == ["Fa", "S", ""]
    assert (root / "dovecot-keywords").read_text() == "0 $Work\n"
    planned = os.listdir(root / ".Projects.2024" / "cur")
    assert len(planned) == 1 and planned[0].endswith(":2,Da")
    assert os.stat(root / ".Projects.2024" / "cur" / planned[0]).st_mtime == 1614939072
    refused = daemon.cli("export", ALICE, str(tmp_path / "export"), check=False)
    assert refused.returncode == 1 and "not empty" in refused.stderr, refused.stderr

    imported = daemon.cli("import", "maildir", str(root), "--user", BOB)
    assert "imported 4 messages" in imported.stdout, imported.stdout
    assert imap_view(daemon, BOB) == imap_view(daemon, ALICE)


def test_bad_imports_are_refused_before_anything_is_imported(tmp_path, daemon):
    bad_mbox = MBOX.replace(b">From the body", b"From the body")
    (tmp_path / "bad.mbox").write_bytes(bad_mbox)
    failed = daemon.cli("import", "mbox", str(tmp_path / "bad.mbox"), "--user", ALICE,
                        "--mailbox", "Old mail", check=False)
    assert failed.returncode == 1, failed.stdout
    assert "bad.mbox, line 6: bad From_ line 'From the body'" in failed.stderr, failed.stderr
    assert "nothing imported" in failed.stderr
    root = tmp_path / "Maildir"
    dovecot_tree(root)
    (root / "cur" / "1700000009.M9P1.old:2,S").mkdir()
    os.symlink(tmp_path / "gone", root / "cur" / "1700000010.M10P1.old:2,S")
    failed = daemon.cli("import", "maildir", str(root), "--user", ALICE, check=False)
    assert failed.returncode == 1, failed.stdout
    assert "is not a regular file" in failed.stderr and "cannot read" in failed.stderr, failed.stderr
    assert "2 problems, nothing imported" in failed.stderr
    write_file(tmp_path / "good" / "cur" / "1700000011.M11P1.old:2,S", b"Subject: x\n\ny\n", 1700000011)
    failed = daemon.cli("import", "maildir", str(tmp_path / "good"), "--user", "nobody@example.test",
                        check=False)
    assert failed.returncode == 1 and "no such user" in failed.stderr, failed.stderr
    client = imap_client(daemon, ALICE)
    try:
        assert "Old mail" not in mailbox_names(client) and "Lists" not in mailbox_names(client)
        assert client.select("INBOX")[1] == [b"0"]
    finally:
        client.logout()
