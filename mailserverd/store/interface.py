"""The store's contract with everything above it.

Reads are synchronous: each is one short LMDB read transaction, safe on the
reactor thread, and sees every committed write (also those other processes,
such as the CLI, made). Writes return Deferreds that fire only after the
transaction holding the write is durably committed (fsync); they fail with a
:mod:`mailserverd.store.errors` exception and then nothing of the write was
committed. Writes to one shard are applied in the order they were called.

Users are named by canonical address (see :func:`mailserverd.mail.address.canonical`);
mailboxes by name for mailbox operations and by ``mailbox_id`` for message
operations, so that a selected mailbox survives a rename by another session.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from twisted.internet.defer import Deferred

from mailserverd.store.types import (
    Alias,
    AppendResult,
    Changes,
    ChangeRecord,
    CopyResult,
    Credentials,
    Domain,
    FlagsResult,
    MailboxInfo,
    MessageInfo,
    User,
)


class Directory(Protocol):
    """Domains, users and aliases: the meta environment."""

    def get_domain(self, name: str) -> Domain | None: ...
    def list_domains(self) -> list[Domain]: ...
    def add_domain(self, name: str) -> Deferred[Domain]:
        """Add a local domain. Fails with AlreadyExists."""
    def remove_domain(self, name: str) -> Deferred[None]:
        """Remove a domain. Fails with NotFound, or NotPermitted while users or aliases use it."""

    def get_user(self, address: str) -> User | None: ...
    def list_users(self, domain: str | None = None) -> list[User]: ...
    def add_user(self, address: str, credentials: Credentials, quota: int = 0) -> Deferred[User]:
        """Create an account on the least-loaded shard, with DEFAULT_MAILBOXES.

        Fails with NotFound when the domain is not local, AlreadyExists when the
        address is a user or an alias.
        """
    def set_credentials(self, address: str, credentials: Credentials) -> Deferred[None]: ...
    def set_quota(self, address: str, quota: int) -> Deferred[None]: ...
    def remove_user(self, address: str) -> Deferred[None]:
        """Delete the account and all its mail (blobs are released by refcount)."""

    def get_alias(self, address: str) -> Alias | None: ...
    def list_aliases(self, domain: str | None = None) -> list[Alias]: ...
    def add_alias(self, address: str, targets: Iterable[str]) -> Deferred[Alias]:
        """Add ``address`` (or ``@domain``, a catch-all) -> targets; targets need not be local."""
    def remove_alias(self, address: str) -> Deferred[None]: ...

    def resolve(self, address: str, delimiter: str = "") -> list[str]:
        """Local users that mail to ``address`` reaches, in order, without duplicates.

        A user address resolves to itself; an alias to its targets, recursively
        (bounded depth, loops cut); with a ``delimiter`` (``"+"``) an unknown
        ``user+detail`` to ``user`` (RFC 5233 sub-addressing); an unknown address
        in a local domain to the domain's catch-all if there is one. Non-local targets are left out
        (forwarding is the outbound queue's job). ``[]`` means no such recipient.
        """


class MailStore(Protocol):
    """Mailboxes and messages of users: the shard environments."""

    # -- mailboxes
    def list_mailboxes(self, user: str) -> list[MailboxInfo]: ...
    def get_mailbox(self, user: str, name: str) -> MailboxInfo:
        """Raises NotFound. ``INBOX`` is matched case-insensitively (RFC 9051 §5.1)."""
    def get_mailbox_by_id(self, user: str, mailbox_id: int) -> MailboxInfo: ...
    def create_mailbox(self, user: str, name: str, special_use: str | None = None) -> Deferred[MailboxInfo]:
        """Fails with AlreadyExists, InvalidName, LimitExceeded."""
    def delete_mailbox(self, user: str, name: str) -> Deferred[None]:
        """Deletes the mailbox and its messages. NotPermitted for INBOX."""
    def rename_mailbox(self, user: str, old: str, new: str) -> Deferred[None]:
        """Renames the mailbox and its children (RFC 9051 §6.3.6). Renaming INBOX
        moves its messages to the new mailbox and leaves INBOX empty."""
    def subscribe(self, user: str, name: str, subscribed: bool) -> Deferred[None]: ...

    # -- messages (reads)
    def list_messages(self, user: str, mailbox_id: int) -> list[MessageInfo]:
        """All messages in UID order."""
    def get_message(self, user: str, mailbox_id: int, uid: int) -> MessageInfo:
        """Raises Expunged when no message has that UID."""
    def read_message(self, user: str, blob_id: bytes) -> bytes:
        """The exact stored bytes of a message (CRLF line ends)."""
    def read_facts(self, user: str, blob_id: bytes) -> dict:
        """The stored IMAP facts (see mailserverd.mail.facts) of a message."""
    def changes_since(self, user: str, mailbox_id: int, modseq: int) -> Changes: ...

    # -- messages (writes)
    def append(self, user: str, mailbox: str, raw: bytes, flags: Iterable[str] = (),
               internaldate: int | None = None) -> Deferred[AppendResult]:
        """Store ``raw`` (CRLF line ends) in the mailbox. Fails with NotFound, OverQuota."""
    def deliver(self, users: Iterable[str], raw: bytes, internaldate: int | None = None,
                mailbox: str = "INBOX") -> Deferred[dict[str, AppendResult | Exception]]:
        """Deliver one message to each user's ``mailbox`` (INBOX where a user has
        no such mailbox); the Deferred fires when every shard involved has
        committed, with each user's result or error."""
    def copy(self, user: str, src_mailbox_id: int, uids: Iterable[int], dest: str) -> Deferred[CopyResult]: ...
    def move(self, user: str, src_mailbox_id: int, uids: Iterable[int], dest: str) -> Deferred[CopyResult]:
        """Copy then expunge from the source, in one transaction (RFC 6851)."""
    def store_flags(self, user: str, mailbox_id: int, uids: Iterable[int], mode: str,
                    flags: Iterable[str], unchanged_since: int | None = None) -> Deferred[FlagsResult]:
        """``mode`` is ``"+"`` (add), ``"-"`` (remove) or ``"="`` (replace)."""
    def claim_recent(self, user: str, mailbox_id: int) -> Deferred[range]:
        """Take the mailbox's messages no caller has taken yet: fires with the
        ``range`` of UIDs from the mailbox's ``first_recent_uid`` to its UIDNEXT
        (empty if none; some may be expunged), after durably moving
        ``first_recent_uid`` to UIDNEXT, so each UID is taken once, ever, also
        across restarts. Not in the change log. Fails with NotFound."""
    def expunge(self, user: str, mailbox_id: int, uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        """Remove messages flagged \\Deleted (only those in ``uids`` if given); returns their UIDs."""

    # -- change log
    def read_changes(self, shard: int, after_seq: int, limit: int = 1000) -> list[ChangeRecord]: ...
