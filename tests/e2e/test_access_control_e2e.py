"""End to end: no path lets one account reach another's mail.

Two accounts on the real daemon; alice tries to reach bob's mail every way a
name can be bent (``..``, ``/``, ``%``, ``*``, NUL, odd Unicode, other
namespaces' conventions), through every IMAP command that takes a mailbox
name, RENAME across namespaces, COPY/MOVE/APPEND to bob's names, logging in
as bob with her own password (also as a SASL authorization identity, over
IMAP, POP3 and SMTP), and the admin CLI as another Unix user. Each attempt
is refused, and at the end bob's mailboxes are exactly as they were.
"""

from __future__ import annotations

import base64
import contextlib
import os
import poplib
import re
import shutil
import smtplib
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from clients import RawImap, imap_fetch_all, make_message, smtp_send
from conftest import REPO, make_daemon, traversable_by_all

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
BOB = "bob@example.test"

#: Names that point at bob, at another namespace, or that bend the syntax.
#: None may be created, and no command may open or write to one.
HOSTILE_NAMES = [
    b"../bob@example.test/INBOX", b"../bob/INBOX", b"..", b".", b"INBOX/../../bob@example.test/INBOX",
    b"INBOX/./x", b"/bob@example.test/INBOX", b"//INBOX", b"~bob/INBOX", b"~bob@example.test/INBOX",
    b"#shared/bob", b"#users/bob@example.test/INBOX", b"#public", b"*", b"%", b"bob@example.test/*",
    b"INBOX\x00bob@example.test", b"\x00", b"bob\r\nX SELECT INBOX",
    "\u202eXOBNI".encode(),  # right-to-left override: shows as INBOX
    "\uff29\uff2e\uff22\uff2f\uff38".encode(),  # fullwidth INBOX
    "INBOX\u200b".encode(), "\ufeffINBOX".encode(), "\u0085bob".encode(), "bob\u2028INBOX".encode(),
]
#: Names of bob's mail as other servers spell it: in alice's personal
#: namespace they are merely names she does not have.
OTHER_USER_NAMES = [
    b"bob@example.test/INBOX", b"bob@example.test", b"../bob/INBOX", b"~bob/INBOX", b"#shared/bob",
    b"Other Users/bob", b"Other Users/bob@example.test/INBOX", b"user/bob", b"user.bob",
]


def literal(name: bytes) -> bytes:
    """A mailbox argument as a non-synchronizing literal (RFC 7888), any bytes allowed."""
    return b"{%d+}\r\n" % len(name) + name


def tagged(responses: list[bytes], tag: bytes) -> bytes:
    line = responses[-1]
    assert line.startswith(tag + b" "), responses
    return line[len(tag) + 1:]


#: The mailboxes every new account has (store/types.py DEFAULT_MAILBOXES).
ALICE_MAILBOXES = {b"INBOX", b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"}


def listed_names(responses: list[bytes]) -> set[bytes]:
    """The mailbox names of the ``* LIST`` responses among ``responses``."""
    return {re.search(rb' ("[^"]*"|\S+)$', line).group(1).strip(b'"')
            for line in responses if line.startswith(b"* LIST")}


def refused(responses: list[bytes], tag: bytes) -> bool:
    return tagged(responses, tag).split(b" ", 1)[0] in (b"NO", b"BAD")


def bob_state(daemon) -> tuple:
    """bob's mailboxes with their STATUS, and his INBOX's messages, read as bob."""
    client = RawImap(daemon)
    try:
        client.login(BOB)
        listed = sorted(listed_names(client.command(b"L", b'LIST "" "*"')))
        status = [client.command(b"S", b'STATUS "%s" (MESSAGES UIDNEXT UIDVALIDITY)' % name)[0]
                  for name in listed]
    finally:
        client.close()
    return listed, status, imap_fetch_all(daemon, BOB)


@pytest.fixture
def two_accounts(daemon):
    """The daemon with one message in each INBOX; yields (daemon, bob's state before)."""
    smtp_send(daemon, make_message("for bob only", body_lines=2), rcpt=BOB)
    smtp_send(daemon, make_message("for alice", body_lines=2), rcpt=ALICE)
    before = bob_state(daemon)
    assert len(before[2]) == 1
    yield daemon, before
    assert bob_state(daemon) == before


@contextlib.contextmanager
def alice_session(daemon, utf8: bool = True):
    """A raw IMAP session logged in as alice, closed afterwards."""
    client = RawImap(daemon)
    try:
        client.login(ALICE)
        if utf8:  # names as UTF-8 (RFC 6855), so odd Unicode reaches the server as sent
            assert tagged(client.command(b"E", b"ENABLE UTF8=ACCEPT"), b"E").startswith(b"OK")
        yield client
    finally:
        client.close()


def test_namespace_is_personal_only(two_accounts):
    daemon, _ = two_accounts
    with alice_session(daemon, utf8=False) as client:
        assert client.command(b"N", b"NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL'
        # LIST with references that would climb out, or into others' namespaces
        for reference in (b"..", b"../", b"~bob/", b"#shared/", b"/", b"Other Users/"):
            for pattern in (b"*", b"%", b"../*", b"bob*"):
                replies = client.command(b"L", b"LIST " + literal(reference) + b" " + literal(pattern))
                assert listed_names(replies) <= ALICE_MAILBOXES, (reference, pattern, replies)


def test_hostile_names_are_refused_everywhere(two_accounts):
    daemon, _ = two_accounts
    with alice_session(daemon) as client:
        for name in HOSTILE_NAMES:
            arg = literal(name)
            for tag, command in ((b"C", b"CREATE " + arg), (b"S", b"SELECT " + arg),
                                 (b"X", b"EXAMINE " + arg), (b"T", b"STATUS " + arg + b" (MESSAGES)"),
                                 (b"D", b"DELETE " + arg), (b"R", b"RENAME " + arg + b" Mine"),
                                 (b"U", b"SUBSCRIBE " + arg)):
                replies = client.command(tag, command)
                assert refused(replies, tag), (name, command, replies)
            replies = client.command(b"A", b"APPEND " + arg + b" {3+}\r\nx\r\n")
            assert refused(replies, b"A"), (name, replies)
        # nothing was made: alice's own mailboxes are the defaults and nothing else
        assert listed_names(client.command(b"L", b'LIST "" "*"')) == ALICE_MAILBOXES


def test_copy_move_append_to_another_users_names(two_accounts):
    daemon, _ = two_accounts
    with alice_session(daemon) as client:
        assert tagged(client.command(b"S", b"SELECT INBOX"), b"S").startswith(b"OK")
        for name in OTHER_USER_NAMES + HOSTILE_NAMES:
            arg = literal(name)
            for tag, command in ((b"C", b"COPY 1 " + arg), (b"M", b"MOVE 1 " + arg),
                                 (b"UC", b"UID COPY 1:* " + arg), (b"UM", b"UID MOVE 1:* " + arg),
                                 (b"A", b"APPEND " + arg + b" {3+}\r\nx\r\n")):
                replies = client.command(tag, command)
                assert refused(replies, tag), (name, command, replies)
        # alice's own message is still where it was
        replies = client.command(b"F", b"FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert [line for line in replies if b"for alice" in line] and not [
            line for line in replies if b"for bob" in line], replies
        # A name that merely looks like bob's, created by alice, is alice's own mailbox.
        assert tagged(client.command(b"C", b'CREATE "Other Users/bob"'), b"C").startswith(b"OK")
        assert tagged(client.command(b"K", b'COPY 1 "Other Users/bob"'), b"K").startswith(b"OK")
        status = client.command(b"T", b'STATUS "Other Users/bob" (MESSAGES)')
        assert status[0] == b'* STATUS "Other Users/bob" (MESSAGES 1)', status


def test_rename_across_namespaces_is_refused(two_accounts):
    daemon, _ = two_accounts
    with alice_session(daemon) as client:
        for target in HOSTILE_NAMES:
            for source in (b"Archive", b"INBOX"):
                replies = client.command(b"R", b"RENAME " + source + b" " + literal(target))
                assert refused(replies, b"R"), (source, target, replies)
        for source in OTHER_USER_NAMES:  # bob's mailboxes are not alice's to rename
            replies = client.command(b"R", b"RENAME " + literal(source) + b" Mine")
            assert refused(replies, b"R"), (source, replies)
        status = client.command(b"T", b"STATUS Archive (MESSAGES)")
        assert tagged(status, b"T").startswith(b"OK")
        assert tagged(client.command(b"S", b"SELECT Mine"), b"S").startswith(b"NO")


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def test_logging_in_as_another_user_is_refused(two_accounts):
    daemon, _ = two_accounts
    alice_password = daemon.users[ALICE]
    client = RawImap(daemon)
    try:
        replies = client.command(b"L", b'LOGIN bob@example.test "%s"' % alice_password.encode())
        assert tagged(replies, b"L").startswith(b"NO"), replies
        for authzid in (BOB, "bob", "../bob@example.test", "bob@example.test\x00"):
            replies = client.command(b"A", b"AUTHENTICATE PLAIN " + plain(authzid, ALICE, alice_password).encode())
            assert tagged(replies, b"A").split(b" ")[0] in (b"NO", b"BAD"), (authzid, replies)
    finally:
        client.close()

    # POP3: the same attempts; then alice's maildrop holds only her message.
    pop = poplib.POP3_SSL("127.0.0.1", daemon.ports["pop3s"], context=daemon.ssl_context(), timeout=30)
    try:
        for user in (BOB, "alice@example.test/../bob@example.test", "bob@example.test\x00", "../bob"):
            with pytest.raises(poplib.error_proto):
                pop.user(user)
                pop.pass_(alice_password)
        with pytest.raises(poplib.error_proto):
            pop._shortcmd("AUTH PLAIN " + plain(BOB, ALICE, alice_password))
    finally:
        pop.close()
    pop = poplib.POP3_SSL("127.0.0.1", daemon.ports["pop3s"], context=daemon.ssl_context(), timeout=30)
    try:
        pop.user(ALICE)
        pop.pass_(alice_password)
        assert pop.stat()[0] == 1
        assert b"for alice" in b"\r\n".join(pop.retr(1)[1])
        for number in (0, 2, 3, -1, 4294967297):
            with pytest.raises(poplib.error_proto):
                pop.retr(number)
        pop.quit()
    finally:
        pop.close()

    # SMTP submission: AUTH PLAIN acting as bob with alice's password.
    with smtplib.SMTP_SSL("127.0.0.1", daemon.ports["smtps"], context=daemon.ssl_context(), timeout=30) as smtp:
        smtp.ehlo("client.test")
        code, _ = smtp.docmd("AUTH", "PLAIN " + plain(BOB, ALICE, alice_password))
        assert code == 535, code


def _modes(root: Path) -> list[tuple[str, int]]:
    """Every path under ``root`` (itself included) that group or others may use."""
    loose = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            loose.append((str(path.relative_to(root)), oct(mode)))
    return loose


def test_store_files_are_private_and_the_cli_needs_them():
    # A daemon root that every user may traverse, so only the modes the store
    # itself sets stand between another Unix user and the mail.
    base = Path(tempfile.mkdtemp(prefix="access-"))
    try:
        base.chmod(0o711)
        daemon = make_daemon(base / "d")
        daemon.cli("domain", "add", "example.test")
        daemon.add_user(ALICE, "alice-secret-1")
        daemon.start()
        smtp_send(daemon, make_message("private", body_lines=2), rcpt=ALICE)
        daemon.stop()
        assert _modes(daemon.data_dir) == []  # directories 0700, files 0600

        def as_nobody(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   sys.executable, "-m", "mailserverd", *args], cwd="/",
                                  capture_output=True, text=True, timeout=120)

        with traversable_by_all(REPO):
            assert as_nobody("--version").returncode == 0  # the program itself runs as nobody
            config = str(daemon.config_path)
            os.chmod(config, 0o644)  # even with a readable config, the data dir stops it
            listed = as_nobody("user", "list", "-c", config)
            assert listed.returncode != 0 and ALICE not in listed.stdout, listed
            assert "ermission denied" in listed.stderr or "not writable" in listed.stderr, listed.stderr
            os.chmod(config, 0o600)  # a private config stops it first
            listed = as_nobody("user", "list", "-c", config)
            assert listed.returncode != 0 and ALICE not in listed.stdout, listed
        assert daemon.cli("user", "list").stdout.count(ALICE) == 1  # its owner may
    finally:
        shutil.rmtree(base, ignore_errors=True)
