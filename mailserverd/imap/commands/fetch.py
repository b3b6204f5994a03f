"""FETCH and UID FETCH (RFC 3501 §6.4.5, §6.4.8, §7.4.2).

Parsing builds a list of :class:`FetchItem`; execution reads each message's
stored record (flags, dates, size), and only when an item needs them its raw
bytes (sections) and its stored facts (ENVELOPE, BODY, BODYSTRUCTURE; section
offsets). Nothing is parsed again at FETCH time.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from twisted.internet.defer import Deferred

from mailserverd.imap import responses, wire
from mailserverd.imap.commands import condstore, fetch_items
from mailserverd.imap.commands.expunge import extension_enabled
from mailserverd.imap.commands.recent import flags_of
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.responses import Completion
from mailserverd.mail import sections
from mailserverd.store.errors import Expunged

_ATT_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_WORDS = re.compile(rb"[A-Za-z0-9.]*")
# RFC 5322 §3.6.8 field-name: printable US-ASCII except ":".
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+\Z")

# RFC 3501 §6.4.5 macros (only valid on their own, not inside a list).
_MACROS = {
    b"ALL": (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE"),
    b"FAST": (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"),
    b"FULL": (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY"),
}
_SIMPLE = frozenset({b"FLAGS", b"UID", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE",
                     b"BODY", b"BODYSTRUCTURE", b"MODSEQ"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Section:
    """A body section (RFC 3501 §6.4.5): part path, text specifier, header names.

    ``text`` is ``""`` (whole part), ``HEADER``, ``HEADER.FIELDS``,
    ``HEADER.FIELDS.NOT``, ``TEXT`` or ``MIME``; ``fields`` the header names
    as the client wrote them (for HEADER.FIELDS[.NOT]).
    """

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[bytes, ...] = ()

    def label(self) -> bytes:
        """The section as echoed in the response: ``1.2.HEADER.FIELDS (A B)``."""
        words = [b"%d" % number for number in self.part]
        if self.text:
            words.append(self.text.encode("ascii"))
        spec = b".".join(words)
        if self.text.startswith("HEADER.FIELDS"):
            spec += b" (" + b" ".join(wire.astring(name) for name in self.fields) + b")"
        return spec


@dataclass(frozen=True)
class FetchItem:
    """One requested data item.

    ``kind`` is a simple item name (``FLAGS``, ``UID``, ...) or ``SECTION``
    for body data; ``label`` is what the response calls it (``RFC822``,
    ``BODY[HEADER]``); ``sets_seen`` whether fetching it sets \\Seen
    (RFC 3501 §6.4.5: BODY[...] without .PEEK, RFC822, RFC822.TEXT).
    """

    kind: bytes
    label: bytes
    section: Section | None = None
    partial: tuple[int, int] | None = None
    sets_seen: bool = False


def parse_fetch_items(args: ArgCursor) -> list[FetchItem]:
    """Read ``ALL / FULL / FAST / fetch-att / "(" fetch-att *(SP fetch-att) ")"``."""
    if args.peek() == 0x28:  # (
        return args.parenthesized(_parse_att)
    start = args.match(_ATT_NAME, "a fetch attribute")
    macro = _MACROS.get(start.upper())
    if macro is not None and args.peek() != 0x5B:
        return [FetchItem(name, name) for name in macro]
    return [_parse_att(args, start)]


def _parse_att(args: ArgCursor, name: bytes | None = None) -> FetchItem:
    """Read one fetch-att (RFC 3501 §9); ``name`` if its first word was read already."""
    if name is None:
        name = args.match(_ATT_NAME, "a fetch attribute")
    name = name.upper()
    if name in fetch_items.ITEM_NAMES:  # BINARY, OBJECTID, PREVIEW, SAVEDATE
        return fetch_items.parse_item(args, name)
    if args.peek() == 0x5B:  # [
        if name not in (b"BODY", b"BODY.PEEK"):
            raise ParseError("Invalid fetch attribute")
        section = parse_section(args)
        partial = _parse_partial(args)
        label = b"BODY[" + section.label() + b"]"
        if partial is not None:
            label += b"<%d>" % partial[0]
        return FetchItem(b"SECTION", label, section, partial, sets_seen=name == b"BODY")
    if name in _SIMPLE:
        return FetchItem(name, name)
    if name == b"RFC822":
        return FetchItem(b"SECTION", name, Section(), sets_seen=True)
    if name == b"RFC822.HEADER":
        return FetchItem(b"SECTION", name, Section((), "HEADER"))
    if name == b"RFC822.TEXT":
        return FetchItem(b"SECTION", name, Section((), "TEXT"), sets_seen=True)
    raise ParseError("Invalid fetch attribute")


def parse_section(args: ArgCursor) -> Section:
    """``"[" [section-spec] "]"`` (RFC 3501 §9 section): the one section parser.

    Raises ParseError for a spec that is not valid syntax.
    """
    args.expect_byte(b"[", "'['")
    words = args.match(_SECTION_WORDS, "a section").split(b".") if args.peek() != 0x5D else []
    if any(not word for word in words):
        raise ParseError("Invalid section")
    part: list[int] = []
    while words and words[0].isdigit():
        word = words.pop(0)
        if word.startswith(b"0") or len(word) > 10:
            raise ParseError("Invalid section part number")
        part.append(int(word))
    text = ".".join(word.decode("ascii") for word in words).upper()
    allowed = ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT")
    if text not in allowed and not (text == "MIME" and part):
        raise ParseError("Invalid section")
    fields: list[bytes] = []
    if text.startswith("HEADER.FIELDS"):
        args.expect_sp()
        fields = args.parenthesized(ArgCursor.astring)
        if not fields or not all(_FIELD_NAME.match(name) for name in fields):
            raise ParseError("Invalid header field list")
    args.expect_byte(b"]", "']'")
    return Section(tuple(part), text, tuple(fields))


def _parse_partial(args: ArgCursor) -> tuple[int, int] | None:
    """``["<" number "." nz-number ">"]`` (RFC 3501 §9 fetch-att)."""
    if not args.skip_byte(b"<"):
        return None
    origin = args.number()
    args.expect_byte(b".", "'.' in partial")
    count = args.nz_number()
    args.expect_byte(b">", "'>'")
    return origin, count


def run(session, command) -> Completion | Deferred:
    """``[UID] FETCH SP sequence-set SP items``: one ``* n FETCH`` per message.

    UID FETCH always returns UID (RFC 3501 §6.4.8). Items that set \\Seen do
    so in one store write before any response, and those messages' responses
    then include FLAGS; not in a read-only (EXAMINEd) mailbox. Messages
    expunged by another session are left out and the command ends
    ``NO [EXPUNGEISSUED]`` (RFC 2180 §4.1.2, RFC 5530).

    CONDSTORE (RFC 7162): the MODSEQ item, the ``(CHANGEDSINCE n)`` modifier
    (only messages modified after n, MODSEQ implied; a UID FETCH with it then
    reports other sessions' changes, being BREAKS_SEQS) and, once QRESYNC is
    enabled, ``(CHANGEDSINCE n VANISHED)`` on UID FETCH. Either enables
    CONDSTORE for the connection.
    """
    args = command.args
    args.expect_sp()
    seqset = args.sequence_set()
    args.expect_sp()
    items = parse_fetch_items(args)
    modifiers = condstore.parse_fetch_modifiers(args)
    condstore.check_fetch_modifiers(session, command, modifiers)
    if modifiers.changedsince is not None or any(item.kind == b"MODSEQ" for item in items):
        condstore.enable_condstore(session)  # RFC 7162 §3.1: a CONDSTORE enabling command
        if not any(item.kind == b"MODSEQ" for item in items):
            items.append(FetchItem(b"MODSEQ", b"MODSEQ"))  # RFC 7162 §3.1.4.1
    if command.uid and not any(item.kind == b"UID" for item in items):
        items.insert(0, FetchItem(b"UID", b"UID"))
    mailbox = session.selected
    targets = mailbox.resolve_uids(seqset) if command.uid else mailbox.resolve_seqs(seqset)
    if modifiers.changedsince is not None:
        records, expunged = _changed_since(session, seqset, targets, modifiers), False
    else:
        records, expunged = _read_records(session, targets)
    report = command.uid and modifiers.changedsince is not None
    unseen = [info.uid for _, info in records if "\\Seen" not in info.flags]
    if mailbox.readonly or not unseen or not any(item.sets_seen for item in items):
        return _respond(session, items, records, expunged, set(), report)
    marking = session.ctx.store.store_flags(session.user, mailbox.mailbox_id, unseen, "+", ["\\Seen"])

    def marked(result) -> Completion:
        changed = {info.uid: info for info in result.changed}
        updated = [(seq, changed.get(info.uid, info)) for seq, info in records]
        return _respond(session, items, updated, expunged, set(changed), report)

    return marking.addCallback(marked)


def _read_records(session, targets) -> tuple[list, bool]:
    """``[(seq, MessageInfo)]`` of the targets still there, and whether any was expunged."""
    mailbox = session.selected
    store = session.ctx.store
    records = []
    expunged = False
    for seq, uid in targets:
        try:
            records.append((seq, store.get_message(session.user, mailbox.mailbox_id, uid)))
        except Expunged:
            expunged = True
    return records, expunged


def _changed_since(session, seqset, targets, modifiers) -> list:
    """The targets modified after CHANGEDSINCE's mod-sequence (RFC 7162 §3.1.4.1),
    read from the change log; with VANISHED, first ``* VANISHED (EARLIER)`` for
    the UIDs of the set expunged since then (RFC 7162 §3.2.6)."""
    mailbox = session.selected
    changes = session.ctx.store.changes_since(session.user, mailbox.mailbox_id, modifiers.changedsince)
    if modifiers.vanished:
        star = max([mailbox.uidnext - 1, *mailbox.uids[-1:], *changes.vanished[-1:]])
        condstore.vanished_earlier(session, changes, condstore.uid_set_matcher(seqset, star))
    changed = {info.uid: info for info in changes.changed}
    return [(seq, changed[uid]) for seq, uid in targets if uid in changed]


def _respond(session, items: list[FetchItem], records, expunged: bool, flags_changed: set[int],
             report_changes: bool = False) -> Completion | Deferred:
    """Send each message's FETCH response; ``flags_changed`` get FLAGS added, and
    once CONDSTORE is on UID and MODSEQ too (RFC 7162 §3.2.4). Then, with
    ``report_changes``, other sessions' changes (only where EXPUNGE may be sent).

    Between messages it waits while the client is not reading (the output's
    ``wait_writable``), so a large FETCH never piles up in memory; the
    command then completes later, through a Deferred.
    """
    kinds = {item.kind for item in items}
    extra = [FetchItem(kind, kind) for kind in (b"FLAGS", b"UID", b"MODSEQ") if kind not in kinds
             and (kind == b"FLAGS" or extension_enabled(session, "CONDSTORE"))]
    mailbox = session.selected
    remaining = iter(records)
    for seq, info in remaining:
        _send_one(session, mailbox, items, extra, kinds, flags_changed, seq, info)
        wait = session.output.wait_writable()
        if wait is not None:
            return Deferred.fromCoroutine(_respond_slowly(
                session, wait, remaining, items, extra, kinds, flags_changed, expunged, report_changes))
    return _finish(session, expunged, report_changes)


def _send_one(session, mailbox, items, extra, kinds, flags_changed, seq: int, info) -> None:
    changed = info.uid in flags_changed
    session.send(fetch_response(session, seq, info, items + extra if changed else items))
    if changed or b"FLAGS" in kinds:
        mailbox.note_flags_shown(info)


async def _respond_slowly(session, wait, remaining, items, extra, kinds, flags_changed, expunged,
                          report_changes) -> Completion:
    """The rest of :func:`_respond`, one message each time the client has read enough."""
    await wait
    mailbox = session.selected
    for seq, info in remaining:
        if session.closed or session.selected is not mailbox:
            break
        _send_one(session, mailbox, items, extra, kinds, flags_changed, seq, info)
        wait = session.output.wait_writable()
        if wait is not None:
            await wait
    return _finish(session, expunged, report_changes)


def _finish(session, expunged: bool, report_changes: bool) -> Completion:
    """The end of a FETCH: other sessions' changes, then the tagged reply."""
    if report_changes:
        session.report_mailbox_changes()
    if expunged:
        raise responses.mail_error("NO", responses.EXPUNGEISSUED,
                                   "Some of the requested messages no longer exist")
    return Completion("Fetch completed")


def fetch_response(session, seq: int, info, items: list[FetchItem]) -> bytes:
    """``* seq FETCH (...)`` for one message, every literal sized on its exact bytes."""
    user = session.user
    store = session.ctx.store
    raw = facts = None
    out: list[bytes] = []
    for item in items:
        kind = item.kind
        if kind == b"FLAGS":
            out.append(b"FLAGS " + format_flags(flags_of(session, info)))
        elif kind == b"UID":
            out.append(b"UID %d" % info.uid)
        elif kind == b"MODSEQ":
            out.append(b"MODSEQ (%d)" % info.modseq)  # RFC 7162 §3.1.4.2
        elif kind == b"INTERNALDATE":
            out.append(b"INTERNALDATE " + format_internaldate(info.internaldate))
        elif kind == b"RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % info.size)
        elif kind in (b"ENVELOPE", b"BODY", b"BODYSTRUCTURE"):
            if facts is None:
                facts = store.read_facts(user, info.blob_id)
            out.append(kind + b" " + wire.serialize(facts[kind.decode("ascii").lower()]))
        elif kind in fetch_items.KINDS:
            out.append(fetch_items.respond(session, info, item))
        else:
            if raw is None:
                raw = store.read_message(user, info.blob_id)
            if facts is None and (item.section.part or item.section.text):
                facts = store.read_facts(user, info.blob_id)  # offsets of parts and header
            out.append(item.label + b" " + _section_value(raw, facts, item))
    return b"* %d FETCH (" % seq + b" ".join(out) + b")\r\n"


def _section_value(raw: bytes, facts: dict, item: FetchItem) -> bytes:
    """The section's bytes (cut to the partial range) as a literal.

    NIL when the part does not exist or the section does not apply to it
    (RFC 3501 §7.4.2 allows an nstring there).
    """
    section = item.section
    if not section.part and not section.text:
        data = raw  # BODY[] / RFC822: the whole message, no facts needed
    else:
        data = sections.section_bytes(raw, facts["parts"], section.part, section.text, section.fields)
    if data is None:
        return b"NIL"
    if item.partial is not None:
        origin, count = item.partial
        # RFC 3501 §6.4.5: an origin past the end gives the empty string.
        data = data[origin:origin + count]
    return wire.literal(data)


def format_flags(flags) -> bytes:
    """``(\\Seen $Label)``: system flags first, then keywords, each sorted."""
    ordered = sorted(flags, key=lambda flag: (not flag.startswith("\\"), flag))
    return b"(" + " ".join(ordered).encode("ascii", "replace") + b")"


def format_internaldate(seconds: int) -> bytes:
    """RFC 3501 §9 date-time in UTC: ``" 2-Jan-2024 03:04:05 +0000"`` quoted."""
    moment = time.gmtime(seconds)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (
        moment.tm_mday, _MONTHS[moment.tm_mon - 1].encode("ascii"), moment.tm_year,
        moment.tm_hour, moment.tm_min, moment.tm_sec)
