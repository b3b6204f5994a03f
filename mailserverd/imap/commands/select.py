"""SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2) with CONDSTORE and QRESYNC (RFC 7162)."""

from __future__ import annotations

from mailserverd.imap import responses
from twisted.internet.defer import Deferred

from mailserverd.imap.commands import condstore, imap4rev2, recent
from mailserverd.imap.commands.mailbox_names import read_mailbox_name_as_sent
from mailserverd.imap.objectid import mailbox_objectid
from mailserverd.imap.commands.expunge import extension_enabled
from mailserverd.imap.parser import ParseError
from mailserverd.imap.responses import Completion
from mailserverd.imap import session as imap_session

#: RFC 3501 §2.3.2 system flags a client may set (\Recent is session-only).
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def run_select(session, command) -> Completion | Deferred:
    """SELECT: open a mailbox read-write."""
    return _open(session, command, readonly=False)


def run_examine(session, command) -> Completion:
    """EXAMINE: open a mailbox read-only (no flag changes, not even \\Seen)."""
    return _open(session, command, readonly=True)


def _flag_list(flags) -> bytes:
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"


def _open(session, command, readonly: bool) -> Completion | Deferred:
    """``SELECT|EXAMINE SP mailbox [select-params]``: send the mailbox's state, enter selected.

    Any selected mailbox is closed first, with ``* OK [CLOSED]`` (RFC 7162
    §3.2.11), so a failing SELECT leaves the session authenticated (RFC 3501
    §6.3.1). Raises NotFound (mapped to ``NO [NONEXISTENT]``) for a missing
    mailbox, ParseError for bad parameters and for QRESYNC before ``ENABLE
    QRESYNC`` (RFC 7162 §3.2.5). The CONDSTORE parameter enables CONDSTORE
    (§3.1.8); once it is on, ``OK [HIGHESTMODSEQ n]`` is sent (§3.1.2.1);
    QRESYNC then reports what changed since the client's mod-sequence.
    SELECT claims the mailbox's new messages as \\Recent for this session
    (commands/recent.py) and waits for that write; EXAMINE does not.
    """
    args = command.args
    args.expect_sp()
    name, supplied = read_mailbox_name_as_sent(session, args)  # RFC 9051 §5.1
    params = condstore.parse_select_params(args)
    if params.qresync is not None and "QRESYNC" not in session.enabled:
        raise ParseError("QRESYNC needs ENABLE QRESYNC first")
    if session.selected is not None:
        session.deselect()
        session.send(responses.untagged_status("OK", "Previous mailbox closed", "CLOSED"))
    if params.condstore or params.qresync is not None:
        condstore.enable_condstore(session)
    info = session.ctx.store.get_mailbox(session.user, name)
    claimed = recent.claim_for_select(session, info, readonly)
    if isinstance(claimed, Deferred):  # read again after the claim: its messages are all there
        return claimed.addCallback(lambda uids: _enter(
            session, session.ctx.store.get_mailbox_by_id(session.user, info.mailbox_id), uids,
            supplied, params, readonly))
    return _enter(session, info, claimed, supplied, params, readonly)


def _enter(session, info, recent_uids: range, supplied, params, readonly: bool) -> Completion:
    """Send the state of the mailbox ``info`` (read just now) and enter the selected state."""
    store = session.ctx.store
    # The counters are read before the messages: a change between the two
    # reads is then reported again later, never lost. Only the UIDs are read
    # (from the keys): SELECT of a 100,000-message mailbox decodes no message.
    uids = store.list_uids(session.user, info.mailbox_id)
    uidnext = max(info.uidnext, uids[-1] + 1 if uids else 0)
    mailbox = imap_session.SelectedMailbox(
        mailbox_id=info.mailbox_id,
        name=info.name,
        readonly=readonly,
        uidvalidity=info.uidvalidity,
        uidnext=uidnext,
        uids=uids,
        highestmodseq=info.highestmodseq,
    )
    mailbox.recent.add(recent_uids)
    _send_state(session, info, mailbox, readonly)
    listing = imap4rev2.selected_list_response(session, info, supplied)  # RFC 9051 §6.3.2
    if listing:
        session.send(listing)
    session.select(mailbox)
    if params.qresync is not None and params.qresync.uidvalidity == info.uidvalidity:
        _resync(session, params.qresync, uidnext)  # RFC 7162 §3.2.5: else ignored
    if readonly:
        return Completion("Examine completed", responses.READ_ONLY)
    return Completion("Select completed", responses.READ_WRITE)


def _send_state(session, info, mailbox, readonly: bool) -> None:
    """The untagged responses of RFC 3501 §6.3.1 (and HIGHESTMODSEQ, RFC 7162 §3.1.2.1).

    FLAGS lists the keywords the mailbox's messages have had (the store keeps
    them, as Dovecot does); UNSEEN comes from the store's unseen counter and a
    short walk back from the newest message.
    """
    uidnext = mailbox.uidnext
    keywords = sorted(info.keywords)
    unseen_uid = session.ctx.store.first_unseen_uid(session.user, info.mailbox_id)
    first_unseen = mailbox.seq_of(unseen_uid) if unseen_uid is not None else None
    session.send(responses.untagged(b"FLAGS " + _flag_list(list(SYSTEM_FLAGS) + keywords)))
    session.send(responses.untagged(b"%d EXISTS" % len(mailbox.uids)))
    if recent.tracks_recent(session):  # RFC 9051 Appendix E item 12
        session.send(recent.recent_response(mailbox))
    if first_unseen is not None and imap4rev2.sends_unseen_code(session):  # item 11
        session.send(responses.untagged_status("OK", f"Message {first_unseen} is the first unseen",
                                               f"UNSEEN {first_unseen}"))
    permanent = [] if readonly else list(SYSTEM_FLAGS) + keywords + ["\\*"]
    session.send(responses.untagged_status(
        "OK", "Read-only mailbox" if readonly else "Flags permitted",
        "PERMANENTFLAGS " + _flag_list(permanent).decode("ascii")))
    session.send(responses.untagged_status("OK", "UIDs valid", f"UIDVALIDITY {info.uidvalidity}"))
    session.send(responses.untagged_status("OK", "Predicted next UID", f"UIDNEXT {uidnext}"))
    session.send(responses.untagged_status(  # RFC 8474 §4.2
        "OK", "Mailbox ID", "MAILBOXID (" + mailbox_objectid(info).decode("ascii") + ")"))
    if extension_enabled(session, "CONDSTORE"):
        session.send(responses.untagged_status("OK", "Highest mailbox mod-sequence",
                                               f"HIGHESTMODSEQ {info.highestmodseq}"))


def _resync(session, params, uidnext: int) -> None:
    """RFC 7162 §3.2.5.1: VANISHED (EARLIER) and FETCH for changes since ``params.modseq``.

    The same answer as ``UID FETCH known-uids (FLAGS) (CHANGEDSINCE modseq
    VANISHED)``; known-uids defaults to ``1:<UIDNEXT-1>``. Sequence match
    data (§3.2.5.2) leaves out expunges at or below the last UID the client
    got right.
    """
    mailbox = session.selected
    changes = session.ctx.store.changes_since(session.user, mailbox.mailbox_id, params.modseq)
    if params.known_uids is None:
        wanted = lambda uid: uid < uidnext  # noqa: E731
    else:
        wanted = condstore.uid_set_matcher(params.known_uids, uidnext - 1)
    condstore.vanished_earlier(session, changes, wanted, _confirmed_uid(mailbox, params.seq_match) + 1)
    for info in changes.changed:
        seq = mailbox.seq_of(info.uid)
        if seq is not None and wanted(info.uid):
            mailbox.note_flags_shown(info)
            session.send(condstore.unsolicited_fetch(session, seq, info))


def _confirmed_uid(mailbox, seq_match) -> int:
    """The highest UID up to which the client's (seq, uid) pairs match the mailbox (0 if none)."""
    confirmed = 0
    for seq, uid in seq_match:
        if seq > len(mailbox.uids) or mailbox.uids[seq - 1] != uid:
            break
        confirmed = uid
    return confirmed
