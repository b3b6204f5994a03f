"""DELETE (RFC 3501 §6.3.4, RFC 9051 §6.3.5)."""

from __future__ import annotations

from mailserverd.imap.commands.mailbox_names import read_mailbox_name
from mailserverd.imap.responses import Completion

__all__ = ["run"]


def run(session, command):
    """Delete the mailbox and its messages; its inferior names stay (RFC 9051 §6.3.5).

    The store allows deleting a mailbox that has inferiors (the name then
    lists as \\NonExistent / \\Noselect with \\HasChildren), and keeps the
    subscription. Returns a Deferred firing with the OK after the durable
    commit. Store errors: NotPermitted for INBOX -> ``NO [CANNOT]``,
    NotFound -> ``NO [NONEXISTENT]``.

    A session that has the deleted mailbox selected sees its messages
    expunged at its next mailbox-change report (as for a delete by another
    session).
    """
    args = command.args
    args.expect_sp()
    name = read_mailbox_name(session, args)
    args.expect_end()
    deleted = session.ctx.store.delete_mailbox(session.user, name)
    return deleted.addCallback(lambda _: Completion("DELETE completed"))
