"""``mailserverd index status [USER] | rebuild [USER]``: the search index.

``status`` reads through the store from this process (short read
transactions; the running daemon keeps indexing meanwhile): for each shard
the change-log position its index reflects beside the log's last one (the
lag, in records) and the pages the index takes; for each user (or USER) its
messages and how many of them are indexed, the others being the unindexed
tail of each mailbox, above the mailbox's indexed UID, which searches scan.
With USER it also shows each mailbox, the size of the user's index records
beside that of its mail, and how many docnos its postings still hold of
removed messages.

``rebuild`` gives every message of USER (of every user without it) that the
index holds a fresh entry, then clears the postings of removed messages
(:mod:`mailserverd.search.rebuild`): small writes through the shard's writer,
beside the running daemon and its indexer, with searches correct throughout,
at the indexer's lower priority. A progress bar goes to standard error on a
terminal.
"""

from __future__ import annotations


def _table(header: tuple, rows: list[tuple]) -> list[str]:
    """Aligned lines: the first column to the left, the others (numbers) to the right."""
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    return ["  ".join(str(value).ljust(width) if column == 0 else str(value).rjust(width)
                      for column, (value, width) in enumerate(zip(row, widths))).rstrip()
            for row in [header, *rows]]


def _shard_lines(store) -> list[str]:
    rows, notes = [], []
    for number in range(store.shards):
        indexed, last = store.search_seq(number), store.last_seq(number)
        rows.append((f"{number:02d}", indexed, last, last - indexed, store.search_index_bytes(number)))
        if store.search_format(number) != store.search_layout():
            notes.append(f"shard {number:02d}: no index in the current layout yet; searches scan "
                         "until the daemon's indexer has built it from the change log")
    return _table(("shard", "indexed seq", "last seq", "lag", "index bytes"), rows) + notes


def _mailbox_rows(store, user: str) -> list[tuple]:
    """``(name, messages, indexed UID, UIDNEXT - 1, messages above the indexed UID)`` per mailbox."""
    infos = store.list_mailboxes(user)
    indexed = store.read_search_index(user, lambda reader: {
        info.mailbox_id: reader.indexed_uid(info.mailbox_id) for info in infos})
    return [(info.name, info.messages, indexed[info.mailbox_id], info.uidnext - 1,
             store.count_messages_from(user, info.mailbox_id, indexed[info.mailbox_id] + 1))
            for info in infos]


def _user_row(user: str, mailboxes: list[tuple], mail_bytes: int) -> tuple:
    messages = sum(row[1] for row in mailboxes)
    unindexed = sum(row[4] for row in mailboxes)
    return (user, messages, messages - unindexed, unindexed, mail_bytes)


_USER_HEADER = ("user", "messages", "indexed", "unindexed", "mail bytes")


def _user_lines(store, user: str) -> list[str]:
    """What ``index status USER`` shows of the user."""
    from mailserverd.search.index import CLASSES

    mailboxes = _mailbox_rows(store, user)
    mail_bytes = sum(info.size for info in store.list_mailboxes(user))
    sizes, (named, stale) = store.read_search_index(
        user, lambda reader: (reader.size(), reader.posting_counts(CLASSES.values())))
    parts = ", ".join(f"{name} {size}" for name, size in sizes.items())
    return [*_table(_USER_HEADER, [_user_row(user, mailboxes, mail_bytes)]), "",
            *_table(("mailbox", "messages", "indexed UID", "last UID", "unindexed"), mailboxes), "",
            f"index records: {sum(sizes.values())} bytes ({parts}) for {mail_bytes} bytes of mail",
            f"postings: {named} docnos, {stale} of them of removed messages (index rebuild clears them)"]


def _status(store, user: str | None) -> None:
    lines = _shard_lines(store) + [""]
    if user is not None:
        lines += _user_lines(store, user)
    else:
        rows = [_user_row(account.address, _mailbox_rows(store, account.address),
                          sum(info.size for info in store.list_mailboxes(account.address)))
                for account in store.list_users()]
        lines += _table(_USER_HEADER, rows)
    print("\n".join(lines))


def _rebuild(store, users: list[str], limits):
    """Rebuild each user's index in turn, a progress bar each; fires when all are done.

    This process takes the indexer's priority (``search_index_nice``): on a
    busy machine the daemon's deliveries get the CPU first."""
    import os

    from twisted.internet import defer

    from mailserverd.cli_data import progress_bar
    from mailserverd.search.rebuild import UserRebuild

    os.nice(limits.search_index_nice)

    @defer.inlineCallbacks
    def run():
        for user in users:
            rebuild = UserRebuild(store, user, limits)
            with progress_bar(rebuild.total, "msg", f"index {user}") as bar:
                yield rebuild.run(bar.update)
            print(f"{user}: {rebuild.replaced} of {rebuild.total} indexed messages re-indexed, "
                  f"{rebuild.cleared} stale posting entries cleared")

    return run()


def cmd_index(args) -> int:
    from mailserverd.cli import load, with_store
    from mailserverd.cli_data import account_address

    config = load(args)

    def work(store):
        user = None if args.user is None else account_address(store, args.user)
        if args.action == "status":
            return _status(store, user)
        users = [user] if user is not None else [account.address for account in store.list_users()]
        return _rebuild(store, users, config.limits)

    return with_store(config, work)


def add_parser(sub, common) -> None:
    """Register ``index status`` and ``index rebuild`` on the CLI's subparsers."""
    p = sub.add_parser("index", help="the search index")
    isub = p.add_subparsers(dest="action", required=True)
    a = isub.add_parser("status", parents=[common],
                        help="how far the index has followed the mail, per shard and per user")
    a.add_argument("user", metavar="USER", nargs="?", help="show this account in detail")
    a = isub.add_parser("rebuild", parents=[common],
                        help="re-index a user's messages and clear the entries of removed ones")
    a.add_argument("user", metavar="USER", nargs="?", help="this account only (default: every account)")
    p.set_defaults(func=cmd_index)
