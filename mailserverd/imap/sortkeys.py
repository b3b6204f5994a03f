"""What SORT and THREAD compare (RFC 5256, RFC 5957): base subjects, sent dates,
address sort values, the i;unicode-casemap collation, and the per-message
values computed from the stored facts.

Pure functions, plus :class:`SortableMessage`, which reads a message's stored
facts (and, for References, its header bytes) through the store at most once
and only when a criterion asks for them.
"""

from __future__ import annotations

import calendar
import email.utils
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from mailserverd.search.text import decode_header_value
from mailserverd.mail import mime

__all__ = [
    "SORT_KEYS",
    "SortCriterion",
    "SortableMessage",
    "base_subject",
    "collation_key",
    "sent_time",
    "address_mailbox",
    "address_display",
    "message_ids",
    "sort_messages",
]

# The run marker of facts value trees (mail/facts.py, imap/wire.py RUN_KEY).
_RUN_KEY = "cat"

# --------------------------------------------------------------- collation


def collation_key(text: str) -> str:
    """``text`` as the i;unicode-casemap comparator compares it (RFC 5051 §2).

    Each character is mapped to its titlecase form (the simple, one-character
    mapping of UnicodeData.txt: a character whose titlecase is longer, such
    as ß, stays as it is), then the whole is put in Unicode normalization
    form KD; two keys compare as their UTF-8 octets do, which is the order
    Python gives str (code point order). RFC 5256 §7 requires this
    comparator (I18NLEVEL=1).
    """
    return unicodedata.normalize("NFKD", "".join(_simple_titlecase(char) for char in text))


def _simple_titlecase(char: str) -> str:
    title = char.title()
    return title if len(title) == 1 else char


# ------------------------------------------------------------ base subject
# RFC 5256 §5 grammar, case-insensitive:
#   subj-blob   = "[" *BLOBCHAR "]" *WSP          (BLOBCHAR: any but "[" "]")
#   subj-refwd  = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
#   subj-leader = (*subj-blob subj-refwd) / WSP
#   subj-trailer = "(fwd)" / WSP
_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER = re.compile(r"(?:(?:" + _BLOB + r")*(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:|[ \t])", re.IGNORECASE)
_BLOB_PREFIX = re.compile(_BLOB)
_WSP_RUN = re.compile(r"[ \t\r\n]+")
_FWD_HDR = "[fwd:"


def base_subject(subject: str) -> tuple[str, bool]:
    """The RFC 5256 §2.1 base subject of a decoded subject, and whether it is a reply or forward.

    ``subject`` is already decoded (step 1's RFC 2047 decoding is
    :func:`SortableMessage`'s); white space runs become one space here. The
    flag is true when extraction removed a subj-refwd, a ``(fwd)`` trailer or
    a ``[fwd: ...]`` wrapper (RFC 5256 §3, REFERENCES). Case is kept; compare
    results with :func:`collation_key`. Never raises.
    """
    text = _WSP_RUN.sub(" ", subject)  # step (1): tabs and continuations to one space
    reply = False
    while True:
        # Step (2): remove subj-trailers until none is left.
        while True:
            if text.endswith(" "):
                text = text[:-1]
            elif text[-5:].lower() == "(fwd)":
                text = text[:-5]
                reply = True
            else:
                break
        # Steps (3)-(5): remove leaders and blobs until neither applies.
        while True:
            match = _LEADER.match(text)
            if match:
                if match.group() not in (" ", "\t"):
                    reply = True
                text = text[match.end():]
                continue
            match = _BLOB_PREFIX.match(text)
            if match and match.end() < len(text):  # step (4): only if a subj-base remains
                text = text[match.end():]
                continue
            break
        # Step (6): a "[fwd: ... ]" wrapper is removed and extraction starts again.
        if text[:len(_FWD_HDR)].lower() == _FWD_HDR and text.endswith("]"):
            text = text[len(_FWD_HDR):-1]
            reply = True
            continue
        return text, reply


# -------------------------------------------------------------- sent date


def sent_time(date_value: bytes | None, internaldate: int) -> int:
    """The RFC 5256 §2.2 sent date of a message, as UTC seconds.

    ``date_value`` is the Date: field's raw value (ENVELOPE's date) or None.
    A zone that cannot be read counts as UTC (the parser gives none then);
    a missing or unreadable Date: field gives ``internaldate``.
    """
    if not date_value:
        return internaldate
    try:
        parsed = email.utils.parsedate_tz(date_value.decode("ascii", "replace"))
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed = None
    if parsed is None:
        return internaldate
    try:
        return calendar.timegm(parsed[:6] + (0, 0, 0)) - (parsed[9] or 0)
    except (TypeError, ValueError, OverflowError):
        return internaldate


# -------------------------------------------------------------- addresses


def _first_address(field) -> list | None:
    """The first ``[name, adl, mailbox, host]`` of an ENVELOPE address field, or None."""
    if not field:
        return None
    entry = field[0]
    addresses = entry.get(_RUN_KEY, []) if isinstance(entry, dict) else [entry]
    return addresses[0] if addresses else None


def _text(value: bytes | None) -> str:
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def address_mailbox(field) -> str:
    """RFC 5256 §3 FROM/TO/CC: the addr-mailbox of the first address ("" if none)."""
    address = _first_address(field)
    return _text(address[2]) if address else ""


def address_display(field) -> str:
    """RFC 5957 §3: the first address's decoded display name, else mailbox@host,
    else mailbox, else ""."""
    address = _first_address(field)
    if not address:
        return ""
    name, _adl, mailbox, host = address
    if name is not None:
        decoded = decode_header_value(name)
        if decoded:
            return decoded
    if mailbox is not None and host is not None:
        return _text(mailbox) + "@" + _text(host)
    return _text(mailbox)


# ------------------------------------------------------------ message ids
_MSG_ID = re.compile(rb"<([^<>]*)>")
_ID_NOISE = re.compile(rb'[\s"\\]')


def message_ids(value: bytes | None) -> list[bytes]:
    """The normalized msg-ids (RFC 5322 §3.6.4) in a header value, in order.

    Normalization (RFC 5256 §3, REFERENCES) drops quoting and white space, so
    that ``<"a b"@x>`` and ``<ab@x>`` are one id; an id without ``@`` or with
    an empty side is not valid and is left out. Comparison stays case-sensitive.
    """
    if not value:
        return []
    ids = []
    for match in _MSG_ID.finditer(value):
        normalized = _ID_NOISE.sub(b"", match.group(1))
        left, at, right = normalized.rpartition(b"@")
        if at and left and right:
            ids.append(normalized)
    return ids


# --------------------------------------------------------------- messages


def sort_record(envelope: list, references_value: bytes | None) -> list:
    """What SORT and THREAD compare of a message, computed once from its ENVELOPE
    and its raw References: value (None if it has none), as msgpack values:
    ``[sent or None, subject key, is reply, from, to, cc, displayfrom, displayto
    (collation keys), message id or None, referenced ids]``. The sent date is
    None when the Date: field cannot be read (the internal date counts then,
    RFC 5256 §2.2). The search index keeps it, so that a sort reads it instead
    of every message's facts."""
    base, reply = base_subject(decode_header_value(envelope[1] or b""))  # RFC 5256 §2.1 step (1)
    sent = sent_time(envelope[0], -1)
    ids = message_ids(envelope[9])
    return [None if sent == -1 else sent, collation_key(base), reply,
            collation_key(address_mailbox(envelope[2])), collation_key(address_mailbox(envelope[5])),
            collation_key(address_mailbox(envelope[6])), collation_key(address_display(envelope[2])),
            collation_key(address_display(envelope[5])), ids[0] if ids else None,
            _references(references_value, envelope)]


def _references(references_value: bytes | None, envelope: list) -> list[bytes]:
    """RFC 5256 §3 REFERENCES: the References: ids, else the first In-Reply-To: id."""
    return message_ids(references_value) or message_ids(envelope[8])[:1]


_SENT, _SUBJECT, _REPLY, _FROM, _TO, _CC, _DISPLAYFROM, _DISPLAYTO, _MESSAGE_ID, _REFERENCES = range(10)


class SortableMessage:
    """One searched message with the values SORT and THREAD use.

    ``seq`` is its sequence number in the session, ``number`` what a response
    names it by (the seq, or the UID for UID SORT/THREAD), ``info`` its
    :class:`~mailserverd.store.types.MessageInfo`. The values come from
    ``record`` (:func:`sort_record`, as the search index keeps it), or when
    none is given from the facts and header read through ``store``
    (read_facts, read_message) on first use; store errors propagate.
    """

    __slots__ = ("seq", "number", "info", "_store", "_user", "_record", "_facts")

    def __init__(self, seq: int, number: int, info, store, user: str, record: list | None = None):
        self.seq = seq
        self.number = number
        self.info = info
        self._store = store
        self._user = user
        self._record = record
        self._facts: dict | None = None

    def record(self) -> list:
        """This message's :func:`sort_record`, but for the referenced ids when it
        was not given (:meth:`references` reads the header for those)."""
        if self._record is None:
            self._facts = self._store.read_facts(self._user, self.info.blob_id)
            self._record = sort_record(self._facts["envelope"], None)
            self._record[_REFERENCES] = None  # the header is read only if THREAD asks
        return self._record

    @property
    def subject_key(self) -> str:
        """The base subject as the collation compares it (RFC 5256 §2.1, §7)."""
        return self.record()[_SUBJECT]

    @property
    def is_reply(self) -> bool:
        """Whether base subject extraction found a reply or forward marker (RFC 5256 §3)."""
        return self.record()[_REPLY]

    @property
    def sent(self) -> int:
        """The sent date in UTC seconds (RFC 5256 §2.2), else the internal date."""
        sent = self.record()[_SENT]
        return self.info.internaldate if sent is None else sent

    @property
    def message_id(self) -> bytes | None:
        """The first valid normalized id of the Message-ID: field, or None."""
        return self.record()[_MESSAGE_ID]

    def references(self) -> list[bytes]:
        """The ids RFC 5256 §3 REFERENCES threads by: References:, else the
        first id of In-Reply-To:, else none."""
        record = self.record()
        if record[_REFERENCES] is None:
            facts = self._facts
            raw = self._store.read_message(self._user, self.info.blob_id)
            fields = mime.header_fields(raw, 0, facts["header_end"], frozenset({b"references"}))
            record[_REFERENCES] = _references(fields[0][1] if fields else None, facts["envelope"])
        return record[_REFERENCES]

    def sort_value(self, key: str):
        """The value criterion ``key`` (one of :data:`SORT_KEYS`) compares."""
        return _SORT_VALUES[key](self)


_SORT_VALUES = {
    "ARRIVAL": lambda message: message.info.internaldate,  # RFC 5256 §3: internal date and time
    "SIZE": lambda message: message.info.size,
    "DATE": lambda message: message.sent,
    "SUBJECT": lambda message: message.subject_key,
    "FROM": lambda message: message.record()[_FROM],
    "TO": lambda message: message.record()[_TO],
    "CC": lambda message: message.record()[_CC],
    # RFC 5957 §4
    "DISPLAYFROM": lambda message: message.record()[_DISPLAYFROM],
    "DISPLAYTO": lambda message: message.record()[_DISPLAYTO],
}

#: The sort-key names of RFC 5256 §5 and RFC 5957 §5.
SORT_KEYS = frozenset(_SORT_VALUES)


@dataclass(frozen=True)
class SortCriterion:
    """One sort-criterion: a key of :data:`SORT_KEYS`, ascending unless ``reverse``."""

    key: str
    reverse: bool = False


def sort_messages(messages: Iterable[SortableMessage], criteria: Iterable[SortCriterion]) -> list[SortableMessage]:
    """``messages`` (in mailbox order) sorted by ``criteria`` in priority order (RFC 5256 §3).

    REVERSE reverses its own criterion only; ties under every criterion keep
    mailbox order (the implicit sequence-number criterion). Done as stable
    sorts from the last criterion to the first (Python's sort stays stable
    with ``reverse=True``).
    """
    ordered = sorted(messages, key=lambda message: message.seq)
    for criterion in reversed(tuple(criteria)):
        ordered.sort(key=lambda message: message.sort_value(criterion.key), reverse=criterion.reverse)
    return ordered
