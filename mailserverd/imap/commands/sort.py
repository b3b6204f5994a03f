"""SORT and UID SORT (RFC 5256 §3, with RFC 5957 DISPLAYFROM/DISPLAYTO).

``SORT (criteria) charset search-key...``: the messages the search program
finds (:mod:`mailserverd.imap.search`, over the session's view as SEARCH
sees it) in one ``* SORT n ...`` response, sorted by the criteria of
:mod:`mailserverd.imap.sortkeys`. ESORT (RFC 5267) is not offered.
"""

from __future__ import annotations

from mailserverd.imap import responses, search
from mailserverd.imap.commands.search import BADCHARSET, run_search, too_deep
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.responses import Completion
from mailserverd.imap.sortkeys import SORT_KEYS, SortableMessage, SortCriterion, sort_messages

__all__ = ["run", "read_sort_criteria", "read_search_criteria", "searched_messages"]


def read_sort_criteria(args: ArgCursor) -> list[SortCriterion]:
    """``"(" sort-criterion *(SP sort-criterion) ")"`` (RFC 5256 §5; RFC 5957 §5 keys).

    Returns the criteria in priority order. Raises ParseError (BAD) for an
    empty list, an unknown key, or REVERSE not followed by a key.
    """
    args.expect_byte(b"(", "'('")
    criteria: list[SortCriterion] = []
    while True:
        word = args.atom().upper()
        reverse = word == b"REVERSE"
        if reverse:
            args.expect_sp()
            word = args.atom().upper()
        name = word.decode("ascii", "replace")
        if name not in SORT_KEYS:
            raise ParseError("Unknown sort criterion")
        criteria.append(SortCriterion(name, reverse))
        if args.skip_byte(b")"):
            return criteria
        args.expect_sp()


def read_search_criteria(args: ArgCursor) -> search.Key:
    """``charset 1*(SP search-key)`` (RFC 5256 §5 search-criteria) to the end of the command.

    The charset is mandatory; US-ASCII and UTF-8 are supported (RFC 5256 §3).
    Returns the search program. Raises ParseError (BAD) for bad syntax and
    MailError ``NO [BADCHARSET (US-ASCII UTF-8)]`` for another charset or ``NO
    [LIMIT]`` for a program nested too deeply.
    """
    charset = args.astring().decode("ascii", "replace").upper()
    if charset not in search.SUPPORTED_CHARSETS:
        raise responses.mail_error("NO", BADCHARSET, "Unsupported charset")
    args.expect_sp()
    try:
        return search.parse_search_keys(args)
    except search.ProgramTooDeep:
        raise too_deep() from None


def searched_messages(session, command, key: search.Key, then):
    """A Deferred firing with ``then(messages)``: the messages of the selected
    mailbox that ``key`` matches, in mailbox order, named by UID for the UID
    form of ``command`` and by sequence number otherwise, with what the search
    index keeps of them to sort by. ``then`` (sorting, threading) runs where the
    search does, off the reactor (:func:`run_search`)."""
    store = session.ctx.store
    user = session.user

    def sortable(found_and_known):
        found, known = found_and_known
        return then([SortableMessage(seq, info.uid if command.uid else seq, info, store, user, known.get(info.uid))
                     for seq, info in found])

    return run_search(session, session.selected, key, sortable, sort_records=True)

def run(session, command):
    """``[UID] SORT SP sort-criteria SP search-criteria``: one ``* SORT`` response
    (a Deferred). Raises or fails with ParseError (BAD), MailError (NO BADCHARSET)
    or a store error.
    """
    args = command.args
    args.expect_sp()
    criteria = read_sort_criteria(args)
    args.expect_sp()
    key = read_search_criteria(args)
    ordered = searched_messages(session, command, key, lambda messages: sort_messages(messages, criteria))
    return ordered.addCallback(lambda messages: _answer(session, messages))


def _answer(session, ordered) -> Completion:
    session.send(responses.untagged(b"SORT" + b"".join(b" %d" % message.number for message in ordered)))
    return Completion("Sort completed")
