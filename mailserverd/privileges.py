"""Dropping root: bind and open as root, then become ``[server] user`` and ``group``.

Started as root, mailserverd binds its ports (below 1024 too) and opens the
store, the certificate and the key, then calls :func:`drop_privileges`
before the listeners accept a connection. Under systemd the unit runs it as
``User=mailserverd`` with ``CAP_NET_BIND_SERVICE`` instead, and there is
nothing left to drop.

The data dir belongs to the server's user: at a start as root,
:func:`give_data_dir` makes the user own the data dir and everything in it
that it does not own yet (files the store just created as root), so that
the store, the admin commands run as that user, and later starts all work.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass


class PrivilegeError(Exception):
    """The configured user or group cannot be used; the message says why."""


@dataclass(frozen=True)
class Account:
    """Who to become: numeric ids and the supplementary groups of the user."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve(user: str, group: str = "") -> Account:
    """Look ``user`` (name or number) and ``group`` (default: the user's own) up.

    Raises PrivilegeError naming what does not exist.
    """
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"[server] user {user!r} does not exist") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"[server] group {group!r} does not exist") from None
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return Account(entry.pw_name, entry.pw_uid, gid, groups)


def needs_drop(user: str) -> bool:
    """Whether a user is configured and we run as root (there is something to drop)."""
    return bool(user) and os.geteuid() == 0


def check_unprivileged(account: Account) -> None:
    """Not root: we must already be ``account``, since we cannot become it.

    Raises PrivilegeError when running as another user.
    """
    if os.getuid() != account.uid:
        raise PrivilegeError(
            f"[server] user is {account.user!r} (uid {account.uid}), but mailserverd runs as "
            f"uid {os.getuid()} and cannot switch: start it as root or as that user")


def give_data_dir(data_dir: str, account: Account) -> int:
    """Make ``account`` own ``data_dir`` and every entry below it (symlinks not followed).

    Only entries owned by someone else are changed; returns how many were.
    Must run as root.
    """
    changed = 0
    for top, dirs, files in os.walk(data_dir):
        # Each directory comes up once as ``top``; links to directories never do.
        links = [name for name in dirs if os.path.islink(os.path.join(top, name))]
        for path in [top, *(os.path.join(top, name) for name in files + links)]:
            status = os.lstat(path)
            if (status.st_uid, status.st_gid) != (account.uid, account.gid):
                os.lchown(path, account.uid, account.gid)
                changed += 1
    return changed


def drop_privileges(account: Account) -> None:
    """Become ``account`` for good: supplementary groups, then gid, then uid.

    The order matters: once the uid is not root, the groups can no longer be
    changed. Afterwards regaining root must fail; if anything does not hold,
    PrivilegeError is raised and the caller must not go on serving as root.
    """
    try:
        os.setgroups(list(account.groups))
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
    except OSError as error:
        raise PrivilegeError(f"cannot switch to user {account.user!r}: {error.strerror}") from None
    if os.getresuid() != (account.uid,) * 3 or os.getresgid() != (account.gid,) * 3:
        raise PrivilegeError(f"switching to user {account.user!r} did not take effect")
    if account.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PrivilegeError(f"root could be regained after switching to {account.user!r}")
