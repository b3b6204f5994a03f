"""The data commands of ``mailserverd``: backup, restore, fsck, export, import.

backup and fsck open the environments read-only beside a running daemon;
restore writes only into an empty data dir (no daemon may use it); export and
import go through the store API like the other admin commands (cli.py), so
they also work while the daemon runs. Progress bars (tqdm) go to standard
error, only on a terminal and only for what takes more than a moment.
"""

from __future__ import annotations

import os
import sys

from mailserverd.cli import CommandError, load, with_store

#: Seconds before a progress bar is shown (quick runs show none).
PROGRESS_DELAY = 0.5


def progress_bar(total: int | None, unit: str, what: str):
    """A tqdm bar on standard error, shown only on a terminal and after PROGRESS_DELAY."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000,
                desc=what, delay=PROGRESS_DELAY, disable=None, file=sys.stderr, leave=False)


def _data_dir(args) -> str:
    if getattr(args, "data_dir", None):
        return os.path.abspath(args.data_dir)
    return str(load(args).server.data_dir)


def _store_size(data_dir: str) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(data_dir):
        total += sum(os.path.getsize(os.path.join(dirpath, n)) for n in filenames if n == "data.mdb")
    return total


def cmd_backup(args) -> int:
    from mailserverd.store.backup import backup_store
    from mailserverd.store.errors import StoreError

    data_dir = _data_dir(args)
    with progress_bar(_store_size(data_dir), "B", "backup") as bar:
        try:
            manifest = backup_store(data_dir, args.dir, bar.update)
        except StoreError as exc:
            raise CommandError(str(exc)) from None
    size = sum(entry["size"] for entry in manifest["environments"])
    seqs = ", ".join(f"{e['name']} seq {e['seq']}" for e in manifest["environments"] if e["seq"] is not None)
    print(f"backup written to {os.path.abspath(args.dir)}: {len(manifest['environments'])} "
          f"environments, {size} bytes ({seqs})")
    return 0


def cmd_restore(args) -> int:
    from mailserverd.store.backup import read_manifest, restore_store
    from mailserverd.store.errors import StoreError

    data_dir = _data_dir(args)
    try:
        total = sum(entry["size"] for entry in read_manifest(args.dir)["environments"])
        with progress_bar(total, "B", "restore") as bar:
            manifest = restore_store(args.dir, data_dir, bar.update)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    print(f"restored {len(manifest['environments'])} environments of the backup made "
          f"{manifest['created']} into {data_dir}; its store has shards = {manifest['shards']}")
    return 0


def _keyring(args):
    """The master key's keyring of the config's ``[encryption]``; None when it
    names none, or when ``--data-dir`` is given and there is no config."""
    from mailserverd.config import ConfigError
    from mailserverd.service import keyring_of

    try:
        config = load(args)
    except ConfigError:
        if getattr(args, "data_dir", None):
            return None
        raise
    return keyring_of(config)


def cmd_fsck(args) -> int:
    from mailserverd.store.errors import StoreError
    from mailserverd.store.fsck import check_store

    data_dir = _data_dir(args)
    with progress_bar(_store_size(data_dir) if args.content else None, "B", "fsck") as bar:
        try:
            report = check_store(data_dir, verify_content=args.content, progress=bar.update,
                                 keyring=_keyring(args))
        except StoreError as exc:
            raise CommandError(str(exc)) from None
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"problem: {problem}")
    totals = ", ".join(f"{count} {what}" for what, count in sorted(report.totals.items()))
    verdict = f"{len(report.problems)} problems" if report.problems else "no problems"
    print(f"{data_dir}: {verdict} ({totals})")
    return 1 if report.problems else 0


def account_address(store, address: str) -> str:
    """The stored address of an account given as typed; CommandError if there is none."""
    from mailserverd.mail.address import canonical

    user = store.get_user(canonical(address))
    if user is None:
        raise CommandError(f"no such user: {address}")
    return user.address


def cmd_export(args) -> int:
    from mailserverd.migration.common import MigrationError
    from mailserverd.migration.transfer import count_messages, export_account

    config = load(args)

    def work(store):
        user = account_address(store, args.user)
        with progress_bar(count_messages(store, user), "msg", "export") as bar:
            try:
                result = export_account(store, user, args.dir, bar.update)
            except MigrationError as exc:
                raise CommandError(str(exc)) from None
        note = f"; {result.dropped_keywords} keyword flags beyond 26 per folder not kept" \
            if result.dropped_keywords else ""
        print(f"exported {result.done} messages in {result.mailboxes} mailboxes of {user} "
              f"to {os.path.abspath(args.dir)} (Maildir++){note}")

    return with_store(config, work)


def cmd_import(args) -> int:
    config = load(args)
    if args.format == "maildir":
        folders, warnings, source = _maildir_source(args.path)
    else:
        folders, warnings, source = _mbox_source(args.path, args.mailbox, args.variant)

    def work(store):
        from mailserverd.migration.common import MigrationError
        from mailserverd.migration.transfer import import_folders

        user = account_address(store, args.user)
        bar = progress_bar(sum(len(f.items) for f in folders), "msg", "import")
        done = import_folders(store, user, folders, config.limits.import_batch_max,
                              config.limits.message_size_max, bar.update)

        def finished(result):
            bar.close()
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print(f"imported {result.done} messages into {user} ({result.skipped} already there, "
                  f"{result.mailboxes} mailboxes created)")

        def stopped(failure):
            bar.close()
            failure.trap(MigrationError)
            raise CommandError(str(failure.value))

        return done.addCallbacks(finished, stopped)

    try:
        return with_store(config, work)
    finally:
        if source is not None:
            source.close()


def _maildir_source(path: str):
    from mailserverd.migration.maildir import scan_tree
    from mailserverd.migration.transfer import maildir_folders

    scan = scan_tree(path)
    if scan.problems:
        for problem in scan.problems:
            print(f"problem: {problem}", file=sys.stderr)
        raise CommandError(f"{path}: {len(scan.problems)} problems, nothing imported")
    return maildir_folders(scan), scan.warnings, None


def _mbox_source(path: str, mailbox: str, variant: str):
    from mailserverd.migration.common import MigrationError
    from mailserverd.migration.transfer import mbox_folder

    try:
        source = open(path, "rb")
    except OSError as exc:
        raise CommandError(f"cannot open {path}: {exc.strerror or exc}") from None
    warnings: list[str] = []
    try:
        folder = mbox_folder(source, path, mailbox, variant, warnings)
    except MigrationError as exc:
        source.close()
        raise CommandError(f"{exc}; nothing imported") from None
    return [folder], warnings, source


def add_parsers(sub, common) -> None:
    """Add backup, restore, fsck, export and import to the ``mailserverd`` parser."""
    p = sub.add_parser("backup", parents=[common], help="copy the whole store (while it runs) into DIR")
    p.add_argument("dir", metavar="DIR", help="a new (or empty) directory for the backup")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", parents=[common], help="restore a backup into an empty data dir")
    p.add_argument("dir", metavar="DIR", help="a directory made by mailserverd backup")
    p.add_argument("--data-dir", metavar="DIR", help="where to restore (default: the config's data_dir)")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("fsck", parents=[common], help="check the store's consistency (read-only)")
    p.add_argument("--data-dir", metavar="DIR", help="the store to check (default: the config's data_dir)")
    p.add_argument("--no-content", dest="content", action="store_false",
                   help="do not re-hash every message's content")
    p.set_defaults(func=cmd_fsck)

    p = sub.add_parser("export", parents=[common], help="write an account's mail as a Maildir++ tree")
    p.add_argument("user", metavar="USER")
    p.add_argument("dir", metavar="DIR", help="a new (or empty) directory")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="import mail from a Maildir tree or an mbox file")
    isub = p.add_subparsers(dest="format", required=True)
    a = isub.add_parser("maildir", parents=[common], help="a Maildir or Maildir++ tree (Dovecot, Courier)")
    a.add_argument("path", metavar="PATH")
    a.add_argument("--user", required=True, metavar="ADDR")
    a = isub.add_parser("mbox", parents=[common], help="one mbox file into one mailbox")
    a.add_argument("path", metavar="FILE")
    a.add_argument("--user", required=True, metavar="ADDR")
    a.add_argument("--mailbox", required=True, metavar="NAME")
    a.add_argument("--variant", choices=("mboxrd", "mboxo"), default="mboxrd",
                   help="how From_ lines in bodies were quoted (default mboxrd)")
    p.set_defaults(func=cmd_import)
