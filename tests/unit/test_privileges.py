"""Privilege drop and systemd's sockets, on the real system calls (root where needed)."""

from __future__ import annotations

import os
import pwd
import socket

import pytest

from mailserverd import privileges
from mailserverd.config import ListenerConfig
from mailserverd.listeners import ListenerError, match_sockets, passed_sockets

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing users needs root")


def test_unknown_user_and_group_are_named():
    with pytest.raises(privileges.PrivilegeError, match="user 'no-such-user-here' does not exist"):
        privileges.resolve("no-such-user-here")
    with pytest.raises(privileges.PrivilegeError, match="group 'no-such-group-here' does not exist"):
        privileges.resolve("nobody", "no-such-group-here")


def test_resolve_takes_the_users_own_group_by_default():
    entry = pwd.getpwnam("nobody")
    account = privileges.resolve("nobody")
    assert (account.uid, account.gid) == (entry.pw_uid, entry.pw_gid)
    assert entry.pw_gid in account.groups


def test_running_as_another_user_who_cannot_switch_is_refused():
    me = privileges.resolve(str(os.getuid()))
    privileges.check_unprivileged(me)  # already that user: fine
    other = privileges.Account("someone", os.getuid() + 1, os.getgid(), ())
    with pytest.raises(privileges.PrivilegeError, match="cannot switch"):
        privileges.check_unprivileged(other)


@needs_root
def test_data_dir_is_given_to_the_user(tmp_path):
    data = tmp_path / "data"
    (data / "shards" / "00").mkdir(parents=True)
    (data / "shards" / "00" / "data.mdb").write_bytes(b"x")
    (data / "link").symlink_to("/etc/passwd")
    account = privileges.resolve("nobody")
    assert privileges.give_data_dir(str(data), account) == 5
    for path in (data, data / "shards", data / "shards" / "00", data / "shards" / "00" / "data.mdb"):
        assert (path.stat().st_uid, path.stat().st_gid) == (account.uid, account.gid)
    assert os.lstat(data / "link").st_uid == account.uid
    assert os.stat("/etc/passwd").st_uid == 0  # the link's target is untouched
    assert privileges.give_data_dir(str(data), account) == 0


@needs_root
def test_drop_is_for_good():
    account = privileges.resolve("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops; the test process stays root
        os.close(read)
        try:
            privileges.drop_privileges(account)
            report = f"{os.getresuid()} {os.getresgid()} {os.getgroups()}"
            try:
                os.setuid(0)
                report += " regained"
            except PermissionError:
                pass
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            report = repr(error)
        os.write(write, report.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    ids = (account.uid,) * 3, (account.gid,) * 3
    assert report == f"{ids[0]} {ids[1]} {sorted(account.groups)}"


# --- systemd's sockets


def listening(address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    sock.bind((address, 0))
    sock.listen()
    return sock


def test_each_listener_takes_the_socket_bound_to_its_address():
    imap, smtp = listening(), listening()
    try:
        listeners = [ListenerConfig(kind="smtp", address="127.0.0.1", port=smtp.getsockname()[1]),
                     ListenerConfig(kind="imap", address="127.0.0.1", port=imap.getsockname()[1])]
        assert match_sockets(listeners, [imap, smtp]) == [smtp, imap]
    finally:
        imap.close()
        smtp.close()


def test_missing_and_unclaimed_sockets_are_all_named():
    stray, plain = listening(), socket.socket()
    plain.bind(("127.0.0.1", 0))  # bound, never listening
    try:
        listeners = [ListenerConfig(kind="pop3", address="127.0.0.1", port=1)]
        with pytest.raises(ListenerError) as caught:
            match_sockets(listeners, [stray, plain])
        text = str(caught.value)
        assert "[[listener]] #1 (pop3 127.0.0.1:1): systemd passed no socket bound there" in text
        assert f"passed socket 127.0.0.1:{stray.getsockname()[1]}: no [[listener]]" in text
        assert f"passed socket 127.0.0.1:{plain.getsockname()[1]} is not a distinct listening" in text
    finally:
        stray.close()
        plain.close()


def test_passed_sockets_only_for_this_process():
    sock = listening()
    fd = os.dup(sock.fileno())  # what systemd would have left open at fd 3, here elsewhere
    sock.close()
    try:
        environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
        assert passed_sockets(environ) == []
        assert "LISTEN_FDS" in environ  # not ours: left alone
    finally:
        os.close(fd)
