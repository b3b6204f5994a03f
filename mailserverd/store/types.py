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
    #: UIDs from here to ``uidnext`` are not yet claimed (MailStore.claim_recent).
    first_recent_uid: int = 1


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


# ---------------------------------------------------------------- outbound queue

#: States of a queue entry (one recipient of a queued message).
#: ``active``: not yet tried, or being tried; ``deferred``: a temporary failure,
#: retried at ``next_attempt``; ``held``: kept, not tried until released;
#: ``delivered`` and ``bounced`` are final.
QUEUE_STATES = ("active", "deferred", "held", "delivered", "bounced")
#: States whose entries are in the schedule index (the scheduler tries them when due).
QUEUE_SCHEDULED = frozenset({"active", "deferred"})
QUEUE_FINAL = frozenset({"delivered", "bounced"})


@dataclass(frozen=True)
class QueuedMessage:
    """A message in the outbound queue, stored once for all its recipients.

    ``sender`` is the reverse-path (``""`` for a bounce, RFC 5321 §4.5.5);
    ``arrival`` unix seconds; ``size`` octets of the stored message;
    ``envid``/``ret`` the RFC 3461 §4.4/§4.3 parameters ("" when not given);
    ``body`` ``7BIT`` or ``8BITMIME`` (RFC 6152); ``smtputf8`` RFC 6531;
    ``recipients`` how many entries it has.
    """

    queue_id: str
    sender: str
    arrival: float
    size: int
    recipients: int
    envid: str = ""
    ret: str = ""
    body: str = "7BIT"
    smtputf8: bool = False


@dataclass(frozen=True)
class QueueEntry:
    """One recipient of a queued message and where its delivery stands.

    ``index`` numbers the recipients of the message from 0; ``orcpt`` and
    ``notify`` are RFC 3461 §4.2/§4.1 (``()``: not given); ``state`` one of
    :data:`QUEUE_STATES`; ``attempts`` tries so far; ``next_attempt`` and
    ``last_attempt`` unix seconds; ``last_reply`` the peer's reply or our
    reason (``"451 4.4.1 ..."``) and ``relay`` the host that gave it;
    ``delay_reported`` whether the sender was sent its one delay notice.
    """

    queue_id: str
    index: int
    recipient: str
    orcpt: str = ""
    notify: tuple[str, ...] = ()
    state: str = "active"
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float = 0.0
    last_reply: str = ""
    relay: str = ""
    delay_reported: bool = False
