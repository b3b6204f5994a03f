"""RENAME (RFC 3501 §6.3.5, RFC 9051 §6.3.6)."""

from __future__ import annotations

from mailserverd.imap.commands.imap4rev2 import check_net_unicode, oldname_list_response
from mailserverd.imap.commands.mailbox_names import read_mailbox_name, read_mailbox_name_as_sent
from mailserverd.imap.responses import Completion
from mailserverd.store.types import HIERARCHY_SEPARATOR

__all__ = ["run"]


def _follow_selected(session, old: str, new: str) -> None:
    """Keep the selected mailbox's name current when it (or a superior) was renamed.

    The selection is by mailbox id, so it survives the rename; only the name
    it is known by changes. Renaming INBOX moves its messages out but INBOX
    stays INBOX (RFC 9051 §6.3.6).
    """
    selected = session.selected
    if selected is None or old == "INBOX":
        return
    if selected.name == old:
        selected.name = new
    elif selected.name.startswith(old + HIERARCHY_SEPARATOR):
        selected.name = new + selected.name[len(old):]


def run(session, command):
    """``RENAME SP mailbox SP mailbox``: rename with inferiors; INBOX moves its messages.

    Returns a Deferred firing with the OK after the durable commit. Store
    errors: NotFound -> ``NO [NONEXISTENT]``, AlreadyExists ->
    ``NO [ALREADYEXISTS]``, NotPermitted (onto or under itself) and
    InvalidName -> ``NO [CANNOT]``. A new name that is not Net-Unicode is
    ``NO [CANNOT]`` (RFC 9051 §5.1); in a UTF-8 session a denormalized new
    name is used in NFC and announced with OLDNAME (RFC 9051 §6.3.9.7).
    """
    args = command.args
    args.expect_sp()
    old = read_mailbox_name(session, args)
    args.expect_sp()
    new, supplied = read_mailbox_name_as_sent(session, args)
    args.expect_end()
    check_net_unicode(new)

    def renamed(_):
        _follow_selected(session, old, new)
        announcement = oldname_list_response(session, new, supplied)
        if announcement:
            session.send(announcement)
        return Completion("RENAME completed")

    return session.ctx.store.rename_mailbox(session.user, old, new).addCallback(renamed)
