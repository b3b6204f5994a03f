"""SEARCH and UID SEARCH (RFC 3501 §6.4.4, RFC 9051 §6.4.4), with ESEARCH
result options (RFC 4731), the saved result ``$`` (RFC 5182) and MODSEQ
(RFC 7162 §3.1.5).

The program is parsed and evaluated by :mod:`mailserverd.imap.search`; this
module picks the messages of the session's view, and answers:

- ``* SEARCH n ...`` for IMAP4rev1 without RETURN (RFC 3501 §7.2.5), with
  ``(MODSEQ m)`` appended when the program used MODSEQ and found something;
- ``* ESEARCH (TAG "t") [UID] ...`` when RETURN was given (RFC 4731 §3.1) or
  the client enabled IMAP4rev2 (RFC 9051 §6.4.4: no RETURN means ALL).

The saved result is kept as UIDs on the selected mailbox, so it follows the
messages, not their numbers: expunged messages drop out of it by themselves,
and a new SELECT/EXAMINE (a new SelectedMailbox) starts with it empty
(RFC 9051 §6.4.4.1).
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred

from mailserverd.imap import responses, search, wire
from mailserverd.imap.commands import condstore
from mailserverd.imap.commands.imap4rev2 import reject_obsolete_search_keys, reject_search_charset
from mailserverd.imap.responses import Completion
from mailserverd.search.query import search_indexed
from mailserverd.store.errors import StoreError

#: RFC 9051 §6.4.4 / RFC 5530: the NO answer to an unsupported CHARSET.
BADCHARSET = "BADCHARSET (" + " ".join(search.SUPPORTED_CHARSETS) + ")"

def too_deep():
    """The answer to a program nested deeper than we evaluate (RFC 5530 §3)."""
    return responses.mail_error("NO", responses.LIMIT, "Search program nested too deeply")


def saved_uids(mailbox) -> tuple[int, ...]:
    """The UIDs of the saved search result ``$`` of the selected ``mailbox``.

    May hold UIDs expunged since: resolve them against the mailbox's map
    (``mailbox.resolve_uids``-style), never use them as they are. Empty
    after SELECT/EXAMINE and before any ``SEARCH RETURN (SAVE)``.
    """
    return mailbox.saved_search_uids


def _save(mailbox, uids) -> None:
    mailbox.saved_search_uids = tuple(uids)


def run(session, command):
    """``[UID] SEARCH [RETURN (opts)] [CHARSET c] keys``: one SEARCH or ESEARCH response.

    Returns a Deferred (the search runs off the reactor, see :func:`run_search`).
    Raises or fails with ParseError (BAD; ``$`` unchanged), MailError ``NO
    [BADCHARSET (US-ASCII UTF-8)]`` for another charset or ``NO [LIMIT]`` for
    a program nested too deeply, or a store error; a NO of a command with
    SAVE empties ``$`` (RFC 9051 §6.4.4.1).
    """
    args = command.args
    args.expect_sp()
    mailbox = session.selected
    try:
        request = search.parse_search(args)
    except (search.UnsupportedCharset, search.ProgramTooDeep) as refused:
        if refused.options and "SAVE" in refused.options:
            _save(mailbox, ())  # a NO empties $ (RFC 5182 §2.1)
        if isinstance(refused, search.ProgramTooDeep):
            raise too_deep() from None
        raise responses.mail_error("NO", BADCHARSET, "Unsupported charset") from None
    reject_search_charset(session, request.charset)  # RFC 6855 §3
    saving = request.options is not None and "SAVE" in request.options
    with_modseq = search.uses_modseq(request.key)
    searched = run_search(session, mailbox, request.key, records=with_modseq)
    if saving:
        searched.addErrback(_forget_saved, mailbox)
    return searched.addCallback(lambda found: _answer(session, command, mailbox, request, found))


def _forget_saved(failure, mailbox):
    failure.trap(StoreError)
    _save(mailbox, ())
    return failure


def _answer(session, command, mailbox, request, found) -> Completion:
    """Send the SEARCH or ESEARCH response for ``found`` (``(seq, MessageInfo)``
    after a MODSEQ search, else ``(seq, uid)``) and keep ``$`` if asked."""
    modseqs = None
    if search.uses_modseq(request.key):
        condstore.enable_condstore(session)  # RFC 7162 §3.1: a CONDSTORE-enabling command
        modseqs = [info.modseq for _, info in found]
        found = [(seq, info.uid) for seq, info in found]
    uids = [uid for _, uid in found]
    numbers = uids if command.uid else [seq for seq, _ in found]
    options = request.options
    if options is None and "IMAP4REV2" in getattr(session, "enabled", ()):
        options = frozenset({"ALL"})  # RFC 9051 §6.4.4: SEARCH answers with ESEARCH
    if options is None:
        session.send(_search_response(numbers, modseqs))
        return Completion("Search completed")
    if "SAVE" in options:
        _save(mailbox, _saved_selection(options, uids))
    if options - {"SAVE"}:
        session.send(_esearch_response(command.tag, command.uid, options, numbers, modseqs))
    return Completion("Search completed")


def run_search(session, mailbox, key, then=None, records: bool = True, sort_records: bool = False):
    """A Deferred firing with the ``(seq, MessageInfo)`` of the session's messages
    that ``key`` matches (``(seq, uid)`` when not ``records``), or with
    ``then(those)`` when ``then`` is given. With ``sort_records``, ``(those,
    {uid: sort record})`` instead of ``those``: what the index keeps to sort
    them by (nothing without the index: each message's facts are read).

    The session's sequence map decides which messages exist and their
    numbers (RFC 3501 §7.4.1), taken when the call is made; one expunged by
    another session since is left out (RFC 2180 §4.1.3 lets a server do
    either). With the server's search pool (``ctx.search``) the index answers
    (:func:`mailserverd.search.query.search_indexed`, the same answers as a
    scan) and the work, ``then`` included, runs in the pool; without one
    (sessions built without the server) every message is scanned here.
    Raises ParseError for RECENT, NEW or OLD after ENABLE IMAP4rev2.
    """
    reject_obsolete_search_keys(session, key)
    store = session.ctx.store
    pool = getattr(session.ctx, "search", None)
    uids = list(mailbox.uids)  # the pool must not see the session change its view
    mailbox_id = mailbox.mailbox_id
    scope = search.SearchScope(
        store=store,
        user=session.user,
        count=len(uids),
        max_uid=uids[-1] if uids else 0,
        saved_uids=frozenset(saved_uids(mailbox)),
        recent_uids=mailbox.recent.copy(),
    )

    def work():
        if pool is None:
            found = _scan(key, mailbox_id, uids, scope)
            if not records:
                found = [(seq, info.uid) for seq, info in found]
            if sort_records:
                found = found, {}
        else:
            found = search_indexed(key, mailbox_id, uids, scope, pool.direct_max, records, sort_records)
        return found if then is None else then(found)

    return maybeDeferred(work) if pool is None else pool.run(work)


def _scan(key, mailbox_id: int, uids: list[int], scope) -> list:
    """Every message of the view tried against ``key`` (no index)."""
    current = {info.uid: info for info in scope.store.list_messages(scope.user, mailbox_id)}
    messages = [(seq, current[uid]) for seq, uid in enumerate(uids, 1) if uid in current]
    return search.search_messages(key, messages, scope)


def _saved_selection(options: frozenset[str], uids: list[int]) -> list[int]:
    """What ``$`` holds after SAVE (RFC 9051 §6.4.4.1 table 4): with MIN/MAX
    but neither ALL nor COUNT, only those messages; otherwise all found."""
    if not uids or options & {"ALL", "COUNT"} or not options & {"MIN", "MAX"}:
        return uids
    chosen = []
    if "MIN" in options:
        chosen.append(uids[0])
    if "MAX" in options and uids[-1] not in chosen:
        chosen.append(uids[-1])
    return chosen


def _search_response(numbers: list[int], modseqs: list[int] | None) -> bytes:
    """``* SEARCH n ...`` (RFC 3501 §7.2.5), ``(MODSEQ m)`` after a MODSEQ search (RFC 7162 §3.1.5)."""
    line = b"SEARCH" + b"".join(b" %d" % number for number in numbers)
    if modseqs:
        line += b" (MODSEQ %d)" % max(modseqs)
    return responses.untagged(line)


def _esearch_response(tag: bytes, uid: bool, options: frozenset[str], numbers: list[int],
                      modseqs: list[int] | None) -> bytes:
    """``* ESEARCH (TAG "t") [UID] MIN a MAX b COUNT c ALL set [MODSEQ m]`` (RFC 4731 §3.1).

    MIN, MAX and ALL are left out when nothing matched; COUNT never is. The
    MODSEQ is of the messages returned: only MIN/MAX's when they are all that
    is asked for (RFC 4731 §3.2).
    """
    line = b"ESEARCH (TAG " + wire.quoted(tag) + b")"
    if uid:
        line += b" UID"
    returned: list[int] = []  # indexes into numbers whose modseq counts
    if numbers:
        if "MIN" in options:
            line += b" MIN %d" % numbers[0]
            returned.append(0)
        if "MAX" in options:
            line += b" MAX %d" % numbers[-1]
            returned.append(len(numbers) - 1)
    if "COUNT" in options:
        line += b" COUNT %d" % len(numbers)
    if numbers and "ALL" in options:
        line += b" ALL " + compress_set(numbers)
    if modseqs and numbers:
        if options & {"ALL", "COUNT"} or not returned:
            returned = list(range(len(numbers)))
        line += b" MODSEQ %d" % max(modseqs[index] for index in returned)
    return responses.untagged(line)


def compress_set(numbers: list[int]) -> bytes:
    """Ascending numbers as a sequence-set with ranges: ``[1, 2, 3, 5]`` -> ``1:3,5``."""
    runs: list[bytes] = []
    start = previous = numbers[0]
    for number in numbers[1:]:
        if number == previous + 1:
            previous = number
            continue
        runs.append(b"%d" % start if start == previous else b"%d:%d" % (start, previous))
        start = previous = number
    runs.append(b"%d" % start if start == previous else b"%d:%d" % (start, previous))
    return b",".join(runs)
