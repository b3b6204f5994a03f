"""COPY and UID COPY (RFC 3501 §6.4.7, §6.4.8; RFC 9051 §6.4.7; RFC 4315 UIDPLUS).

Also the pieces MOVE shares with COPY: reading ``sequence-set SP mailbox``,
refusing a sequence-number command that names an expunged message, checking
the destination (``NO [TRYCREATE]``), and writing number sets for response
codes (COPYUID, MODIFIED, VANISHED).
"""

from __future__ import annotations

from typing import Iterable

from twisted.internet.defer import Deferred

from mailserverd.imap import responses
from mailserverd.imap.commands.mailbox_names import read_mailbox_name
from mailserverd.imap.responses import Completion
from mailserverd.store.errors import Expunged, NotFound

#: RFC 3501 §6.4.7 / RFC 9051 §6.4.7 response code: the target may be created.
TRYCREATE = "TRYCREATE"


def number_set(numbers: Iterable[int]) -> bytes:
    """``1:3,7,9:10``: the numbers as an RFC 9051 §9 sequence-set, in the given order.

    Runs of consecutive ascending numbers become ranges; the order is kept, so
    that COPYUID's two sets pair up item by item (RFC 4315 §3). Takes a
    non-empty iterable of positive ints.
    """
    parts: list[bytes] = []
    start = previous = None
    for number in numbers:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            parts.append(_range(start, previous))
        start = previous = number
    if start is not None:
        parts.append(_range(start, previous))
    return b",".join(parts)


def _range(first: int, last: int) -> bytes:
    return b"%d" % first if first == last else b"%d:%d" % (first, last)


def parse_set_and_mailbox(session, command):
    """Read ``SP sequence-set SP mailbox`` and the end of the command.

    Returns ``(seqset, destination)``; the name is UTF-8 or modified UTF-7 as
    the session has it (RFC 9051 §5.1). Raises ParseError (BAD) for bad syntax.
    """
    args = command.args
    args.expect_sp()
    seqset = args.sequence_set()
    args.expect_sp()
    destination = read_mailbox_name(session, args)
    args.expect_end()
    return seqset, destination


def resolve_targets(session, command, seqset) -> list[tuple[int, int]]:
    """``(seq, uid)`` pairs a command's set names in the selected mailbox.

    UID commands ignore UIDs that are not there (RFC 3501 §6.4.8). For the
    sequence-number form, RFC 2180 §4.4.1 / §4.1.2: if any named message has
    been expunged by another session (still in this session's map, gone from
    the store), the command fails ``NO [EXPUNGEISSUED]`` and changes nothing
    (RFC 3501 §6.4.7: a failed COPY leaves the destination as it was).
    """
    mailbox = session.selected
    if command.uid:
        return mailbox.resolve_uids(seqset)
    targets = mailbox.resolve_seqs(seqset)
    if not all_present(session, [uid for _seq, uid in targets]):
        raise responses.mail_error("NO", responses.EXPUNGEISSUED,
                                   "Some of the requested messages no longer exist")
    return targets


#: Above this many messages, one listing of the mailbox is cheaper than a read per message.
_PER_MESSAGE_READS_MAX = 32


def all_present(session, uids: list[int]) -> bool:
    """Whether every UID is still in the selected mailbox's store."""
    store = session.ctx.store
    mailbox_id = session.selected.mailbox_id
    if len(uids) > _PER_MESSAGE_READS_MAX:
        present = {info.uid for info in store.list_messages(session.user, mailbox_id)}
        return all(uid in present for uid in uids)
    for uid in uids:
        try:
            store.get_message(session.user, mailbox_id, uid)
        except Expunged:
            return False
    return True


def transfer_uids(session, command, seqset, destination: str) -> list[int]:
    """The UIDs a COPY or MOVE takes, after its checks (see :func:`resolve_targets`
    and :func:`require_destination`, whose errors it raises)."""
    targets = resolve_targets(session, command, seqset)
    require_destination(session, destination)
    return [uid for _seq, uid in targets]


def require_destination(session, name: str) -> None:
    """Raise ``NO [TRYCREATE]`` if the destination mailbox does not exist.

    RFC 3501 §6.4.7, RFC 9051 §6.4.7 (and Appendix E item 8): COPY and MOVE
    never create the target; they answer TRYCREATE so the client may CREATE
    it and retry.
    """
    try:
        session.ctx.store.get_mailbox(session.user, name)
    except NotFound:
        raise responses.mail_error("NO", TRYCREATE, "Mailbox doesn't exist") from None


def copyuid_code(result) -> str:
    """``COPYUID uidvalidity source-set dest-set`` for a non-empty CopyResult (RFC 4315 §3)."""
    return "COPYUID %d %s %s" % (result.uidvalidity,
                                 number_set(result.source_uids).decode("ascii"),
                                 number_set(result.dest_uids).decode("ascii"))


def run(session, command) -> Completion | Deferred:
    """``[UID] COPY SP sequence-set SP mailbox``: copy messages, keeping flags and dates.

    The tagged OK carries ``[COPYUID ...]`` when anything was copied (RFC 4315
    §3); nothing copied (UID COPY of UIDs no longer there) is ``OK`` without
    it, since COPYUID cannot hold an empty set. Errors: ``NO [TRYCREATE]``
    for a missing destination, ``NO [EXPUNGEISSUED]`` (sequence form only),
    ``NO [OVERQUOTA]`` and other store errors mapped. UID COPY may report
    other sessions' changes after it (BREAKS_SEQS); COPY does not.
    """
    seqset, destination = parse_set_and_mailbox(session, command)
    uids = transfer_uids(session, command, seqset, destination)
    copying = session.ctx.store.copy(session.user, session.selected.mailbox_id, uids, destination)

    def copied(result) -> Completion:
        if command.uid:
            session.report_mailbox_changes()
        if not result.source_uids:
            return Completion("No messages copied")
        return Completion("Copy completed", copyuid_code(result))

    return copying.addCallback(copied)
