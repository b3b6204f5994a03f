"""SELECT and EXAMINE (RFC 3501 §6.3.1, §6.3.2)."""

from __future__ import annotations

from mailserverd.imap import responses
from mailserverd.imap.responses import Completion
from mailserverd.imap import session as imap_session

#: RFC 3501 §2.3.2 system flags a client may set (\Recent is session-only).
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def run_select(session, command) -> Completion:
    """SELECT: open a mailbox read-write."""
    return _open(session, command, readonly=False)


def run_examine(session, command) -> Completion:
    """EXAMINE: open a mailbox read-only (no flag changes, not even \\Seen)."""
    return _open(session, command, readonly=True)


def _flag_list(flags) -> bytes:
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"


def _open(session, command, readonly: bool) -> Completion:
    """``SELECT|EXAMINE SP mailbox``: send the mailbox's state, enter selected.

    Any selected mailbox is closed first, so a failing SELECT leaves the
    session authenticated (RFC 3501 §6.3.1). Raises NotFound (mapped to
    ``NO [NONEXISTENT]``) for a missing mailbox.

    \\Recent is not tracked yet: RECENT is always 0, which RFC 3501 allows
    for a server that does not give \\Recent to any session.
    """
    args = command.args
    args.expect_sp()
    name = args.mailbox()
    args.expect_end()
    session.deselect()
    store = session.ctx.store
    info = store.get_mailbox(session.user, name)
    messages = store.list_messages(session.user, info.mailbox_id)
    keywords = sorted({flag for message in messages for flag in message.flags
                       if not flag.startswith("\\")})
    first_unseen = next((seq for seq, message in enumerate(messages, 1)
                         if "\\Seen" not in message.flags), None)
    session.send(responses.untagged(b"FLAGS " + _flag_list(list(SYSTEM_FLAGS) + keywords)))
    session.send(responses.untagged(b"%d EXISTS" % len(messages)))
    session.send(responses.untagged(b"0 RECENT"))
    if first_unseen is not None:
        session.send(responses.untagged_status("OK", f"Message {first_unseen} is the first unseen",
                                               f"UNSEEN {first_unseen}"))
    permanent = [] if readonly else list(SYSTEM_FLAGS) + keywords + ["\\*"]
    session.send(responses.untagged_status(
        "OK", "Read-only mailbox" if readonly else "Flags permitted",
        "PERMANENTFLAGS " + _flag_list(permanent).decode("ascii")))
    session.send(responses.untagged_status("OK", "UIDs valid", f"UIDVALIDITY {info.uidvalidity}"))
    session.send(responses.untagged_status("OK", "Predicted next UID", f"UIDNEXT {info.uidnext}"))
    session.select(imap_session.SelectedMailbox(
        mailbox_id=info.mailbox_id,
        name=info.name,
        readonly=readonly,
        uidvalidity=info.uidvalidity,
        uidnext=info.uidnext,
        uids=[message.uid for message in messages],
    ))
    if readonly:
        return Completion("Examine completed", responses.READ_ONLY)
    return Completion("Select completed", responses.READ_WRITE)
