"""STORE and UID STORE (RFC 3501 §6.4.6, §6.4.8; RFC 9051 §6.4.6; RFC 7162 §3.1.3).

``[UID] STORE SP sequence-set [SP "(" UNCHANGEDSINCE n ")"] SP
[+|-]FLAGS[.SILENT] SP (flag-list / flag *(SP flag))``.

The flags are written in one store call (one MODSEQ for every message that
changed). Then one ``* n FETCH`` per message: FLAGS unless ``.SILENT``, UID
for UID STORE (RFC 3501 §6.4.8), after ENABLE IMAP4rev2 (RFC 9051
Appendix E item 21) and once CONDSTORE is on (RFC 7162 §3.2.4), MODSEQ once
CONDSTORE is on (RFC 7162 §3.1.3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.internet.defer import Deferred

from mailserverd.imap import responses
from mailserverd.imap.commands.copy import number_set
from mailserverd.imap.commands.expunge import extension_enabled, require_writable
from mailserverd.imap.commands.fetch import format_flags
from mailserverd.imap.commands.recent import flags_of
from mailserverd.imap.parser import ParseError
from mailserverd.imap.responses import Completion
from mailserverd.store.errors import Expunged

# RFC 3501 §9: flag = "\" atom (system flag or flag-extension) / atom (keyword).
_FLAG = re.compile(rb'\\?[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_STORE_ATT = re.compile(rb"[+-]?[A-Za-z.]+")
_MODIFIER_NAME = re.compile(rb"[A-Za-z0-9-]+")
_DIGITS = re.compile(rb"[0-9]+")
#: RFC 7162 §7 mod-sequence-value: 1 .. 2^63-1 (mod-sequence-valzer adds 0).
MODSEQ_MAX = 2 ** 63 - 1
#: RFC 3501 §2.3.2 system flags a client may set, by lower-case name.
SYSTEM_FLAGS = {flag.lower(): flag for flag in
                ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
_MODES = {b"FLAGS": "=", b"+FLAGS": "+", b"-FLAGS": "-"}
#: RFC 7162 §3.1.3 / RFC 5530: the tagged OK when some messages failed UNCHANGEDSINCE.
MODIFIED = "MODIFIED"


@dataclass(frozen=True)
class StoreRequest:
    """A parsed STORE: the set, ``mode`` ``+``/``-``/``=``, the flags, modifiers."""

    seqset: object
    mode: str
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None


def parse_flag(args) -> str:
    """One RFC 3501 §9 ``flag``: a system flag (canonical case) or a keyword.

    ``\\Recent`` cannot be set by a client (RFC 3501 §2.3.2); it is returned as
    is and left out by the caller. Raises ParseError for an unknown ``\\``
    flag (``\\*`` included: it only appears in PERMANENTFLAGS).
    """
    flag = args.match(_FLAG, "a flag").decode("ascii")
    if not flag.startswith("\\"):
        return flag
    lowered = flag.lower()
    if lowered == "\\recent":
        return "\\Recent"
    if lowered not in SYSTEM_FLAGS:
        raise ParseError("Invalid system flag")
    return SYSTEM_FLAGS[lowered]


def parse_flags(args) -> list[str]:
    """``flag-list / flag *(SP flag)`` (RFC 3501 §9 store-att-flags), to the end of the command."""
    if args.peek() == 0x28:  # (
        flags = args.parenthesized(parse_flag)
    else:
        flags = [parse_flag(args)]
        while not args.at_end():
            args.expect_sp()
            flags.append(parse_flag(args))
    return [flag for flag in flags if flag != "\\Recent"]


def _parse_modseq(args) -> int:
    """RFC 7162 §7 mod-sequence-valzer: 0 .. 2^63-1."""
    digits = args.match(_DIGITS, "a mod-sequence")
    if len(digits) > 19 or int(digits) > MODSEQ_MAX:
        raise ParseError("Mod-sequence out of range")
    return int(digits)


def _parse_modifiers(args) -> int | None:
    """RFC 4466 §2.5 store-modifiers ``"(" store-modifier *(SP store-modifier) ")"``.

    Only UNCHANGEDSINCE (RFC 7162 §3.1.3) is known; any other is BAD.
    Returns its value (``None`` if absent).
    """
    found: list[int] = []

    def modifier(cursor) -> None:
        name = cursor.match(_MODIFIER_NAME, "a store modifier").upper()
        if name != b"UNCHANGEDSINCE" or found:
            raise ParseError("Unknown or repeated store modifier")
        cursor.expect_sp()
        found.append(_parse_modseq(cursor))

    args.parenthesized(modifier)
    if not found:
        raise ParseError("Empty store modifier list")
    return found[0]


def parse_store(args) -> StoreRequest:
    """Read a STORE command's arguments (after its name). Raises ParseError."""
    args.expect_sp()
    seqset = args.sequence_set()
    args.expect_sp()
    unchanged_since = None
    if args.peek() == 0x28:  # (
        unchanged_since = _parse_modifiers(args)
        args.expect_sp()
    att = args.match(_STORE_ATT, "FLAGS, +FLAGS or -FLAGS").upper()
    silent = att.endswith(b".SILENT")
    mode = _MODES.get(att[:-len(b".SILENT")] if silent else att)
    if mode is None:
        raise ParseError("Expected FLAGS, +FLAGS or -FLAGS")
    args.expect_sp()
    flags = parse_flags(args)
    args.expect_end()
    return StoreRequest(seqset, mode, silent, tuple(flags), unchanged_since)


def run(session, command) -> Completion | Deferred:
    """Change flags; answer as RFC 3501 §6.4.6 and RFC 7162 §3.1.3 say.

    ``NO [READ-ONLY]`` after EXAMINE. Messages expunged by another session
    meanwhile are skipped silently (RFC 2180 §4.2.1, as Dovecot does).
    With UNCHANGEDSINCE, CONDSTORE is on from now on (RFC 7162 §3.1), and
    messages modified since are left alone and listed in ``OK [MODIFIED
    set]`` (sequence numbers, or UIDs for UID STORE). UID STORE then reports
    other sessions' changes (BREAKS_SEQS); STORE does not (USES_SEQS).
    """
    request = parse_store(command.args)
    require_writable(session)
    mailbox = session.selected
    targets = mailbox.resolve_uids(request.seqset) if command.uid \
        else mailbox.resolve_seqs(request.seqset)
    if request.unchanged_since is not None:
        session.enabled.add("CONDSTORE")  # RFC 7162 §3.1: a CONDSTORE-enabling command
    writing = session.ctx.store.store_flags(
        session.user, mailbox.mailbox_id, [uid for _seq, uid in targets],
        request.mode, request.flags, request.unchanged_since)
    return writing.addCallback(_stored, session, command, request, targets)


def _stored(result, session, command, request: StoreRequest, targets) -> Completion:
    """Send the FETCH responses for a finished flag write, then the tagged OK."""
    changed = {info.uid: info for info in result.changed}
    for info in result.changed:  # answered here (or .SILENT): not reported as another's change
        session.selected.note_flags_shown(info)
    failed = set(result.failed)
    condstore = extension_enabled(session, "CONDSTORE")
    # RFC 7162 §3.2.4: a QRESYNC server sends UID in every FETCH once CONDSTORE is on.
    with_uid = command.uid or condstore or extension_enabled(session, "IMAP4REV2")
    for seq, uid in targets:
        info = changed.get(uid)
        if info is not None:
            if request.silent and not condstore:
                continue
            # RFC 7162 §3.1.3: with CONDSTORE the FETCH is sent even if .SILENT.
            _send_fetch(session, seq, info, with_uid, condstore, flags=not request.silent)
        elif uid in failed or not request.silent:
            # Unchanged (already so), or failed UNCHANGEDSINCE: tell the client
            # the current state (RFC 3501 §6.4.6 SHOULD; RFC 7162 §3.1.3
            # Example 10 RECOMMENDED), unless the message is gone.
            try:
                info = session.ctx.store.get_message(session.user, session.selected.mailbox_id, uid)
            except Expunged:
                continue
            _send_fetch(session, seq, info, with_uid, condstore, flags=True)
    if command.uid:
        session.report_mailbox_changes()
    if failed:
        numbers = sorted(uid if command.uid else seq for seq, uid in targets if uid in failed)
        return Completion("Conditional STORE failed",
                          f"{MODIFIED} {number_set(numbers).decode('ascii')}")
    return Completion("Store completed")


def _send_fetch(session, seq: int, info, with_uid: bool, with_modseq: bool, flags: bool) -> None:
    """``* seq FETCH (UID u MODSEQ (m) FLAGS (...))`` with the items asked for."""
    items: list[bytes] = []
    if with_uid:
        items.append(b"UID %d" % info.uid)
    if with_modseq:
        items.append(b"MODSEQ (%d)" % info.modseq)  # RFC 7162 §3.1.4.2
    if flags:
        items.append(b"FLAGS " + format_flags(flags_of(session, info)))
    if items:
        session.send(responses.untagged(b"%d FETCH (" % seq + b" ".join(items) + b")"))
        if flags:
            session.selected.note_flags_shown(info)
