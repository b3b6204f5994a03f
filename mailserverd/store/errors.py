"""The closed set of storage errors.

Protocols map these to replies at their edge (SMTP 4xx/5xx, IMAP NO with an
RFC 5530 code, POP3 -ERR with an RFC 2449 code). Texts never reveal whether
another user's mailbox exists.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises to its callers."""

    #: Whether retrying later may succeed.
    temporary = False


class StoreTemporaryError(StoreError):
    """The store cannot complete the write now (map full, disk full, queue full, I/O error).

    Nothing of the write was committed; the caller answers with a temporary error.
    """

    temporary = True


class StoreFull(StoreTemporaryError):
    """The store ran out of room (LMDB map full, or the disk full). Nothing was committed.

    Protocols answer with their "insufficient storage" reply (SMTP 452 4.3.1,
    RFC 5321 §4.2.3 and RFC 3463 §3.4); freeing space or raising
    ``store_map_size`` fixes it without a restart of clients.
    """


class NotFound(StoreError):
    """The user, mailbox or message does not exist."""


class AlreadyExists(StoreError):
    """The domain, user, alias or mailbox already exists."""


class Expunged(StoreError):
    """The message was expunged."""


class InUse(StoreError):
    """The resource is locked by another session (POP3 maildrop)."""


class OverQuota(StoreError):
    """The write would exceed the user's storage quota. Nothing was written."""


class LimitExceeded(StoreError):
    """A configured count or size limit would be exceeded (mailboxes per user, name length)."""


class InvalidName(StoreError):
    """A mailbox name is not acceptable (empty, bad UTF-8, too long, bad hierarchy)."""


class NotPermitted(StoreError):
    """The operation is not allowed on this object (deleting INBOX, renaming onto itself)."""


class SchemaMismatch(StoreError):
    """The data dir was written by a version of the store this code does not know."""


class Damaged(StoreError):
    """Stored data failed its check (a sealed value its authentication: damaged
    on disk, or its owner's key erased): it is never served as if it were the data."""


class MasterKeyError(StoreError):
    """The master key of encryption at rest is missing, unreadable, badly
    protected or not the one the store was sealed with; the text says which,
    and what to do. Temporary: mail refused for it is retried once the
    operator mends it."""

    temporary = True
