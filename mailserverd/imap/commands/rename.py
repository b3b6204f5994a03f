"""RENAME (RFC 3501 §6.3.5, RFC 9051 §6.3.6)."""

from __future__ import annotations

from mailserverd.imap.commands.mailbox_names import read_mailbox_name
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
    InvalidName -> ``NO [CANNOT]``.
    """
    args = command.args
    args.expect_sp()
    old = read_mailbox_name(session, args)
    args.expect_sp()
    new = read_mailbox_name(session, args)
    args.expect_end()

    def renamed(_):
        _follow_selected(session, old, new)
        return Completion("RENAME completed")

    return session.ctx.store.rename_mailbox(session.user, old, new).addCallback(renamed)
