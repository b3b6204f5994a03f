"""Value types the store returns and accepts. Plain frozen dataclasses, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The mailboxes every new account gets, with their RFC 6154 SPECIAL-USE attribute.
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

#: Hierarchy separator of mailbox names (RFC 9051 §5.1.1).
HIERARCHY_SEPARATOR = "/"


@dataclass(frozen=True)
class ScramSecrets:
    """SCRAM-SHA-256 secrets of RFC 5802 §3: nothing from which the password can be read."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True)
class Credentials:
    """What is stored to check a password: a bcrypt hash and SCRAM secrets."""

    bcrypt_hash: bytes
    scram_sha256: ScramSecrets


@dataclass(frozen=True)
class Domain:
    name: str  # lower-case; IDNA A-label form


@dataclass(frozen=True)
class User:
    """An account. ``address`` is the canonical (lower-case) address and the key."""

    address: str
    user_id: int
    shard: int
    credentials: Credentials
    quota: int  # bytes; 0 = unlimited
    created: int  # unix seconds


@dataclass(frozen=True)
class Alias:
    """``address`` (or ``@domain`` for a catch-all) delivers to each of ``targets``."""

    address: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class MailboxInfo:
    """A mailbox and its counters, as of the read that produced it."""

    mailbox_id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    size: int
    subscribed: bool
    special_use: str | None
    keywords: tuple[str, ...] = ()  # every keyword its messages have had (IMAP FLAGS)


@dataclass(frozen=True)
class MessageInfo:
    """One message in a mailbox: everything but its content."""

    uid: int
    flags: frozenset[str]  # system flags (\\Seen...) and keywords, as given
    internaldate: int  # unix seconds
    size: int  # RFC822.SIZE: exact stored byte count
    modseq: int
    blob_id: bytes  # sha256 of the content


@dataclass(frozen=True)
class AppendResult:
    """Where an appended or delivered message landed (RFC 4315 APPENDUID)."""

    mailbox_id: int
    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class CopyResult:
    """RFC 4315 COPYUID: source UIDs and the UIDs they got in the destination, in order."""

    uidvalidity: int
    source_uids: tuple[int, ...]
    dest_uids: tuple[int, ...]


@dataclass(frozen=True)
class FlagsResult:
    """Outcome of a flag store (RFC 7162 §3.1.3).

    ``changed`` holds the new state of every message whose flags changed (with
    its new MODSEQ); ``failed`` the UIDs refused by UNCHANGEDSINCE.
    """

    changed: tuple[MessageInfo, ...]
    failed: tuple[int, ...] = ()


@dataclass(frozen=True)
class Changes:
    """What changed in a mailbox since a MODSEQ (RFC 7162 CONDSTORE/QRESYNC)."""

    highestmodseq: int
    changed: tuple[MessageInfo, ...] = ()
    vanished: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChangeRecord:
    """One entry of a shard's change log. ``seq`` is the MODSEQ it gave.

    ``kind`` is one of: ``append``, ``flags``, ``expunge``, ``mailbox-create``,
    ``mailbox-delete``, ``mailbox-rename``, ``subscribe``, ``account-create``,
    ``account-delete``. ``data`` holds the kind's fields (see store/records.py).
    """

    seq: int
    kind: str
    user_id: int
    mailbox_id: int
    data: dict = field(default_factory=dict)
