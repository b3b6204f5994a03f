"""EXPUNGE (RFC 3501 §6.4.3, RFC 9051 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1).

Also what MOVE and STORE share with them: telling the client which messages
this session removed (EXPUNGE, or VANISHED once QRESYNC is on), the
read-only refusal, and whether the client enabled an extension.
"""

from __future__ import annotations

from typing import Iterable

from twisted.internet.defer import Deferred

from mailserverd.errors import fresh
from mailserverd.imap import responses
from mailserverd.imap.commands.copy import number_set
from mailserverd.imap.responses import Completion

#: The refusal of a change to a mailbox opened with EXAMINE (RFC 3501 §6.3.2).
READ_ONLY_REFUSAL = responses.mail_error("NO", responses.READ_ONLY, "Mailbox is read-only")


def extension_enabled(session, name: str) -> bool:
    """Whether the client turned on ``name`` (RFC 5161 ENABLE; upper-case names).

    QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
    """
    enabled = getattr(session, "enabled", ())
    if name == "CONDSTORE" and "QRESYNC" in enabled:
        return True
    return name in enabled


def require_writable(session) -> None:
    """Raise ``NO [READ-ONLY]`` if the selected mailbox was opened with EXAMINE."""
    if session.selected.readonly:
        raise fresh(READ_ONLY_REFUSAL)


def report_expunged(session, uids: Iterable[int]) -> None:
    """Tell the client that this session removed ``uids`` from the selected mailbox.

    Drops them from the session's sequence map and sends ``* VANISHED
    uid-set`` once QRESYNC is enabled (RFC 7162 §3.2.7, §3.2.10), else one
    ``* n EXPUNGE`` per message, highest sequence number first so that no
    renumbering happens between them (RFC 3501 §7.4.1). UIDs the session
    never reported (or already reported gone) are skipped.
    """
    mailbox = session.selected
    known = sorted(uid for uid in set(uids) if mailbox.seq_of(uid) is not None)
    if not known:
        return
    if extension_enabled(session, "QRESYNC"):
        gone = set(known)
        mailbox.uids[:] = [uid for uid in mailbox.uids if uid not in gone]
        session.send(responses.untagged(b"VANISHED " + number_set(known)))
        return
    for uid in reversed(known):
        seq = mailbox.seq_of(uid)
        del mailbox.uids[seq - 1]
        session.send(responses.untagged(b"%d EXPUNGE" % seq))


def expunged_completion(session, text: str, removed: list[int]) -> Completion:
    """The tagged OK after messages were removed, with other sessions' changes sent first.

    RFC 7162 §3.2.7 (and RFC 6851 §4.4 for MOVE): once QRESYNC is enabled and
    something was removed, the OK carries ``[HIGHESTMODSEQ n]``; it is read
    after the pending changes were reported.
    """
    session.report_mailbox_changes()
    if removed and extension_enabled(session, "QRESYNC"):
        mailbox = session.selected
        info = session.ctx.store.get_mailbox_by_id(session.user, mailbox.mailbox_id)
        return Completion(text, f"HIGHESTMODSEQ {info.highestmodseq}")
    return Completion(text)


def run(session, command) -> Completion | Deferred:
    """``EXPUNGE`` / ``UID EXPUNGE SP sequence-set``: remove messages flagged \\Deleted.

    EXPUNGE removes every \\Deleted message of the selected mailbox; UID
    EXPUNGE only those among the UIDs named (RFC 4315 §2.1), and only ones
    this session knows of. The removals are reported before the tagged OK,
    then other sessions' changes. ``NO [READ-ONLY]`` after EXAMINE.
    """
    args = command.args
    uids = None
    if command.uid:
        args.expect_sp()
        seqset = args.sequence_set()
        args.expect_end()
        require_writable(session)
        uids = [uid for _seq, uid in session.selected.resolve_uids(seqset)]
        if not uids:
            return expunged_completion(session, "Expunge completed", [])
    else:
        args.expect_end()
        require_writable(session)
    mailbox = session.selected
    expunging = session.ctx.store.expunge(session.user, mailbox.mailbox_id, uids)

    def expunged(removed: list[int]) -> Completion:
        report_expunged(session, removed)
        return expunged_completion(session, "Expunge completed", removed)

    return expunging.addCallback(expunged)
