"""DELETE (RFC 3501 §6.3.4, RFC 9051 §6.3.5)."""

from __future__ import annotations

from mailserverd.imap.commands.imap4rev2 import oldname_list_response
from mailserverd.imap.commands.mailbox_names import read_mailbox_name_as_sent
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

    In a UTF-8 session a denormalized name deletes its NFC form, announced
    with ``\\NonExistent`` and OLDNAME (RFC 9051 §6.3.5, §6.3.9.7).
    """
    args = command.args
    args.expect_sp()
    name, supplied = read_mailbox_name_as_sent(session, args)
    args.expect_end()

    def deleted(_):
        announcement = oldname_list_response(session, name, supplied, nonexistent=True)
        if announcement:
            session.send(announcement)
        return Completion("DELETE completed")

    return session.ctx.store.delete_mailbox(session.user, name).addCallback(deleted)
