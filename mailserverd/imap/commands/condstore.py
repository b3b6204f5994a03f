"""CONDSTORE and QRESYNC (RFC 7162) pieces shared by SELECT/EXAMINE and FETCH.

The grammar of the SELECT parameters and FETCH modifiers (RFC 4466 §2.1,
§2.4; RFC 7162 §7), and the answer both commands give to "what changed since
mod-sequence N": ``* VANISHED (EARLIER) uids`` for messages expunged since
then, then ``* n FETCH (UID u MODSEQ (m) ...)`` for messages modified since
then (RFC 7162 §3.1.4.1, §3.2.5.1, §3.2.6). Both read the store's change log
(``changes_since``), so their cost follows the number of changes, not the
mailbox size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserverd.imap import responses
from mailserverd.imap.commands.copy import number_set
from mailserverd.imap.commands.expunge import extension_enabled
from mailserverd.imap.commands.recent import flags_of
from mailserverd.imap.parser import ArgCursor, ParseError, SequenceSet

_DIGITS = re.compile(rb"[0-9]+")
_WORD = re.compile(rb"[A-Za-z0-9=.-]+")
#: RFC 7162 §3.1: mod-sequences are unsigned 63-bit values.
MODSEQ_MAX = 2 ** 63 - 1


def enable_condstore(session) -> None:
    """Turn CONDSTORE on for the rest of the connection (RFC 7162 §3.1: a
    "CONDSTORE enabling command" was issued)."""
    session.enabled.add("CONDSTORE")


def parse_modseq(args: ArgCursor, *, zero_allowed: bool = False) -> int:
    """RFC 7162 §7 mod-sequence-value (1 .. 2^63-1), or mod-sequence-valzer
    (0 .. 2^63-1) with ``zero_allowed``. Raises ParseError."""
    digits = args.match(_DIGITS, "a mod-sequence")
    value = int(digits) if len(digits) <= 19 else MODSEQ_MAX + 1
    if value > MODSEQ_MAX or (value == 0 and not zero_allowed):
        raise ParseError("Mod-sequence out of range")
    return value


# ---------------------------------------------------------------- SELECT / EXAMINE parameters


@dataclass(frozen=True)
class QresyncParams:
    """``QRESYNC (uidvalidity modseq [known-uids] [seq-match-data])`` (RFC 7162 §3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    #: Pairs (message number, UID) the client believes, ascending (RFC 7162 §3.2.5.2).
    seq_match: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class SelectParams:
    """What a SELECT/EXAMINE asked for beyond the mailbox name."""

    condstore: bool = False
    qresync: QresyncParams | None = None


def parse_select_params(args: ArgCursor) -> SelectParams:
    """``[SP "(" select-param *(SP select-param) ")"]`` up to the end of the command.

    RFC 4466 §2.1 select-params; the known ones are CONDSTORE (RFC 7162
    §3.1.8) and QRESYNC (§3.2.5); any other, a repeated one, or an empty list
    is BAD. Raises ParseError.
    """
    if args.at_end():
        return SelectParams()
    args.expect_sp()
    found: dict[str, object] = {}

    def param(cursor: ArgCursor) -> None:
        name = cursor.match(_WORD, "a select parameter").upper()
        if name == b"CONDSTORE" and "CONDSTORE" not in found:
            found["CONDSTORE"] = True
        elif name == b"QRESYNC" and "QRESYNC" not in found:
            cursor.expect_sp()
            found["QRESYNC"] = _parse_qresync(cursor)
        else:
            raise ParseError("Unknown or repeated SELECT parameter")

    args.parenthesized(param)
    if not found:
        raise ParseError("Empty SELECT parameter list")
    args.expect_end()
    return SelectParams(condstore="CONDSTORE" in found, qresync=found.get("QRESYNC"))


def _parse_qresync(args: ArgCursor) -> QresyncParams:
    """``"(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"``."""
    args.expect_byte(b"(", "'('")
    uidvalidity = args.nz_number()
    args.expect_sp()
    modseq = parse_modseq(args)
    known_uids = None
    seq_match: tuple[tuple[int, int], ...] = ()
    if args.skip_byte(b" "):
        if args.peek() != 0x28:  # known-uids, then perhaps seq-match-data
            known_uids = _plain_set(args)
            if args.skip_byte(b" "):
                seq_match = _parse_seq_match(args)
        else:
            seq_match = _parse_seq_match(args)
    args.expect_byte(b")", "')'")
    return QresyncParams(uidvalidity, modseq, known_uids, seq_match)


def _plain_set(args: ArgCursor) -> SequenceSet:
    """A sequence-set without ``$`` (RFC 7162 §7 known-uids and seq-match-data)."""
    found = args.sequence_set()
    if found.saved:
        raise ParseError("Invalid sequence set")
    return found


def _parse_seq_match(args: ArgCursor) -> tuple[tuple[int, int], ...]:
    """``"(" known-sequence-set SP known-uid-set ")"``: equal-length lists, no ``*``."""
    args.expect_byte(b"(", "'('")
    numbers = _expand_without_star(_plain_set(args))
    args.expect_sp()
    uids = _expand_without_star(_plain_set(args))
    args.expect_byte(b")", "')'")
    if len(numbers) != len(uids):
        raise ParseError("Sequence match data of unequal length")
    return tuple(zip(numbers, uids))


#: The most numbers a seq-match-data set may spell out (it is a sample, §3.2.5.2).
_SEQ_MATCH_MAX = 100_000


def _expand_without_star(found: SequenceSet) -> list[int]:
    numbers: list[int] = []
    for first, last in found.ranges:
        if first is None or last is None:
            raise ParseError("'*' is not allowed in sequence match data")
        low, high = min(first, last), max(first, last)
        if len(numbers) + high - low + 1 > _SEQ_MATCH_MAX:
            raise ParseError("Sequence match data too long")
        numbers.extend(range(low, high + 1))
    return numbers


# ---------------------------------------------------------------- FETCH modifiers


@dataclass(frozen=True)
class FetchModifiers:
    """``(CHANGEDSINCE n [VANISHED])`` of a FETCH (RFC 7162 §3.1.4.1, §3.2.6)."""

    changedsince: int | None = None
    vanished: bool = False


def parse_fetch_modifiers(args: ArgCursor) -> FetchModifiers:
    """``[SP "(" fetch-modifier *(SP fetch-modifier) ")"]`` (RFC 4466 §2.4), to the end.

    Raises ParseError for an unknown, repeated or empty modifier list, and
    for VANISHED without CHANGEDSINCE (RFC 7162 §3.2.6).
    """
    if args.at_end():
        return FetchModifiers()
    args.expect_sp()
    if args.peek() != 0x28:  # (
        raise ParseError("Unexpected extra arguments")
    found: dict[str, object] = {}

    def modifier(cursor: ArgCursor) -> None:
        name = cursor.match(_WORD, "a fetch modifier").upper()
        if name == b"CHANGEDSINCE" and "CHANGEDSINCE" not in found:
            cursor.expect_sp()
            found["CHANGEDSINCE"] = parse_modseq(cursor)
        elif name == b"VANISHED" and "VANISHED" not in found:
            found["VANISHED"] = True
        else:
            raise ParseError("Unknown or repeated FETCH modifier")

    args.parenthesized(modifier)
    if not found:
        raise ParseError("Empty FETCH modifier list")
    args.expect_end()
    if "VANISHED" in found and "CHANGEDSINCE" not in found:
        raise ParseError("VANISHED needs CHANGEDSINCE")  # RFC 7162 §3.2.6
    return FetchModifiers(found.get("CHANGEDSINCE"), "VANISHED" in found)


def check_fetch_modifiers(session, command, modifiers: FetchModifiers) -> None:
    """The RFC 7162 §3.2.6 rules on where VANISHED may appear; raises ParseError (BAD)."""
    if not modifiers.vanished:
        return
    if not command.uid:
        raise ParseError("VANISHED is only allowed with UID FETCH")
    if "QRESYNC" not in session.enabled:
        raise ParseError("VANISHED needs ENABLE QRESYNC first")


# ---------------------------------------------------------------- changes since a mod-sequence


def vanished_earlier(session, changes, wanted, lowest_uid: int = 1) -> None:
    """Send ``* VANISHED (EARLIER) set`` for UIDs expunged since the client's mod-sequence.

    ``changes`` is the store's Changes since that mod-sequence; ``wanted(uid)``
    says whether the client asked about a UID; UIDs below ``lowest_uid`` are
    ones the client already knows to be gone (RFC 7162 §3.2.5.2). UIDs still
    in the session's map are left out: they are reported with a plain
    VANISHED when the session reports expunges (RFC 7162 §3.2.10 forbids
    mixing the two forms). Sent before any FETCH (RFC 7162 §3.2.6).
    """
    mailbox = session.selected
    gone = [uid for uid in changes.vanished
            if uid >= lowest_uid and wanted(uid) and mailbox.seq_of(uid) is None]
    if gone:
        session.send(responses.untagged(b"VANISHED (EARLIER) " + number_set(gone)))


def uid_set_matcher(seqset: SequenceSet, star: int):
    """A predicate telling whether a UID is in ``seqset``, ``*`` being ``star``."""
    ranges = list(seqset.bounds(star))
    return lambda uid: any(low <= uid <= high for low, high in ranges)


def unsolicited_fetch(session, seq: int, info) -> bytes:
    """``* seq FETCH ([UID u] FLAGS (...) [MODSEQ (m)])`` for a change the client did not ask for.

    UID once IMAP4rev2 (RFC 9051 §7.5.2) or CONDSTORE/QRESYNC is on (RFC 7162
    §3.2.4), MODSEQ once CONDSTORE is (RFC 7162 §3.1.4.2).
    """
    from mailserverd.imap.commands.fetch import format_flags  # fetch imports this module

    condstore = extension_enabled(session, "CONDSTORE")
    items = []
    if condstore or extension_enabled(session, "IMAP4REV2"):
        items.append(b"UID %d" % info.uid)
    items.append(b"FLAGS " + format_flags(flags_of(session, info)))
    if condstore:
        items.append(b"MODSEQ (%d)" % info.modseq)
    return responses.untagged(b"%d FETCH (" % seq + b" ".join(items) + b")")
