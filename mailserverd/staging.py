"""Directories that appear complete or not at all (backup, export).

A :class:`StagedDir` is built under a temporary name beside its final name
and renamed into place only when everything in it is written and fsynced, so
that an interrupted or failed run never leaves something that looks like a
finished result: at worst a ``.NAME.partial-*`` directory, which is removed
when the failure is seen. A leaf module: anything (the store too) may use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile


class StagingError(Exception):
    """The target cannot be used (exists and is not empty, is a mount point, no write access)."""


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` (created or renamed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    """fsync every file and directory under ``root`` (itself included)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def is_empty_dir(path: str) -> bool:
    """Whether ``path`` is a directory with no entries."""
    with os.scandir(path) as entries:
        return next(entries, None) is None


class StagedDir:
    """A directory written at a temporary name and renamed to ``target`` on success.

    ``target`` must not exist, or be an empty directory that is not a mount
    point (it is replaced by the rename). Use as a context manager: the
    ``with`` value is the temporary path to write into; leaving the block
    normally fsyncs the tree and renames it into place, leaving it by an
    exception removes it. Raises StagingError before anything is written when
    the target cannot be used.
    """

    def __init__(self, target: str):
        self.target = os.path.abspath(target)
        self.path: str | None = None

    def __enter__(self) -> str:
        target = self.target
        if os.path.lexists(target):
            if not os.path.isdir(target) or os.path.islink(target):
                raise StagingError(f"{target} exists and is not a directory")
            if not is_empty_dir(target):
                raise StagingError(f"{target} is not empty")
            if os.path.ismount(target):
                # A rename cannot replace a mount point: name a new directory inside it.
                raise StagingError(f"{target} is a mount point; give a new directory inside it")
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, exist_ok=True)
            self.path = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=parent)
        except OSError as exc:
            raise StagingError(f"cannot write in {parent}: {exc.strerror or exc}") from None
        return self.path

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is None:
            try:
                fsync_tree(self.path)
                os.replace(self.path, self.target)
                fsync_dir(os.path.dirname(self.target))
                return False
            except OSError:
                shutil.rmtree(self.path, ignore_errors=True)
                raise
        shutil.rmtree(self.path, ignore_errors=True)
        return False
