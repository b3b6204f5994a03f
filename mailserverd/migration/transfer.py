"""Import into and export out of one account, through the store API.

Import (Maildir tree or mbox file) is idempotent: before a folder's messages
are appended, the messages already in its mailbox are indexed by (size,
INTERNALDATE), and a source message whose bytes and INTERNALDATE equal one
already there (compared byte for byte) is skipped, once per copy present.
So re-running an import that stopped half way (a read error, the disk full,
Ctrl-C) appends only what is missing, and running it twice adds nothing.
Every mailbox is created (and subscribed) before the first message is
appended, so a bad folder name stops the import before anything is in.

Appends are kept in flight in batches (``import_batch_max`` messages, and
at most ``message_size_max`` bytes), so the shard's writer commits many per
fsync; each append keeps its flags and INTERNALDATE and gets the mailbox's
next UID in source order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from twisted.internet.defer import DeferredList, inlineCallbacks

from mailserverd.migration import maildir, mbox
from mailserverd.migration.common import MigrationError, to_crlf, to_lf
from mailserverd.staging import StagedDir, StagingError
from mailserverd.store.errors import AlreadyExists, Expunged, StoreError

Progress = Callable[[int], None]


@dataclass
class TransferResult:
    """Counts of one import or export."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    mailboxes: int = 0
    dropped_keywords: int = 0


class ImportStopped(MigrationError):
    """An import that stopped part way; ``result`` says how far it got."""

    def __init__(self, reason: str, result: TransferResult):
        super().__init__(
            f"{reason}; {result.done} of {result.total} messages were imported before it "
            f"({result.skipped} already there). Re-running the same import is safe: "
            f"messages already imported are skipped")
        self.result = result


@dataclass(frozen=True)
class ImportFolder:
    """A mailbox to import into and the messages for it; ``load(item)`` returns
    ``(raw, flags, internaldate)`` and ``describe(item)`` names it in errors."""

    mailbox: str
    items: list
    load: Callable
    describe: Callable


# ---------------------------------------------------------------- import


@inlineCallbacks
def import_folders(store, user: str, folders: list[ImportFolder], batch_max: int, bytes_max: int,
                   progress: Progress | None = None):
    """Append every message of ``folders`` to ``user``'s mailboxes (see the module docstring).

    Returns (as a Deferred) the TransferResult. Fails with ImportStopped
    (a file that cannot be read, a store error) after settling what was in
    flight, so that its counts are exact.
    """
    result = TransferResult(total=sum(len(folder.items) for folder in folders))
    for folder in folders:
        yield _ensure_mailbox(store, user, folder.mailbox, result)
    for folder in folders:
        info = store.get_mailbox(user, folder.mailbox)
        present = _present(store, user, info.mailbox_id)
        pending: list = []
        pending_bytes = 0
        for item in folder.items:
            try:
                raw, flags, internaldate = folder.load(item)
            except (OSError, MigrationError) as exc:
                yield _settle(pending, result, progress)
                raise ImportStopped(f"cannot read {folder.describe(item)}: "
                                    f"{getattr(exc, 'strerror', None) or exc}", result) from None
            if _already_there(store, user, present, raw, internaldate):
                result.skipped += 1
                if progress is not None:
                    progress(1)
                continue
            pending.append(store.append(user, folder.mailbox, raw, flags, internaldate))
            pending_bytes += len(raw)
            if len(pending) >= batch_max or pending_bytes >= bytes_max:
                yield _settle(pending, result, progress)
                pending_bytes = 0
        yield _settle(pending, result, progress)
    return result


@inlineCallbacks
def _ensure_mailbox(store, user: str, name: str, result: TransferResult):
    """Create (and subscribe) ``name`` unless it exists; an error stops the import."""
    try:
        store.get_mailbox(user, name)
        return
    except StoreError:
        pass
    try:
        yield store.create_mailbox(user, name)
        yield store.subscribe(user, name, True)
        result.mailboxes += 1
    except AlreadyExists:
        pass
    except StoreError as exc:
        raise ImportStopped(f"cannot create mailbox {name!r}: {exc}", result) from None


def _present(store, user: str, mailbox_id: int) -> dict:
    """The mailbox's messages by (size, INTERNALDATE): what an import may already have added."""
    present: dict = {}
    for message in store.list_messages(user, mailbox_id):
        present.setdefault((message.size, message.internaldate), []).append(message.blob_id)
    return present


def _already_there(store, user: str, present: dict, raw: bytes, internaldate: int) -> bool:
    """Whether an unclaimed message with these exact bytes and date is in ``present``
    (and claim it, so that two equal source messages need two copies)."""
    candidates = present.get((len(raw), internaldate))
    for index, blob_id in enumerate(candidates or ()):
        try:
            if store.read_message(user, blob_id) == raw:
                del candidates[index]
                return True
        except Expunged:
            continue
    return False


@inlineCallbacks
def _settle(pending: list, result: TransferResult, progress: Progress | None):
    """Wait for the appends in flight; count them; raise ImportStopped for the first failure."""
    if not pending:
        return
    outcomes = yield DeferredList(pending, consumeErrors=True)
    pending.clear()
    failures = [value for ok, value in outcomes if not ok]
    result.done += len(outcomes) - len(failures)
    if progress is not None:
        progress(len(outcomes))
    if failures:
        raise ImportStopped(f"the store refused a message: {failures[0].value}", result)


# ---------------------------------------------------------------- sources


def maildir_folders(scan: maildir.MaildirScan) -> list[ImportFolder]:
    """The folders of a scanned Maildir tree, parents before children."""
    def load(message: maildir.MaildirMessage):
        with open(message.path, "rb") as source:
            return to_crlf(source.read()), message.flags, message.internaldate

    return [ImportFolder(folder.mailbox, folder.messages, load, lambda m: m.path)
            for folder in sorted(scan.folders, key=lambda f: (f.mailbox != maildir.INBOX, f.mailbox))]


def mbox_folder(source, path: str, mailbox: str, variant: str, warnings: list) -> ImportFolder:
    """The messages of the open binary mbox ``source`` (indexed first: a bad
    From_ line raises MboxError before anything is imported)."""
    entries = mbox.scan_mbox(source, path)

    def load(entry: mbox.MboxEntry):
        source.seek(entry.start)
        raw, flags, ignored = mbox.message_of(source.read(entry.end - entry.start), variant)
        warnings.extend(f"{path}, line {entry.line}: keyword {word!r} is not an IMAP atom, not kept"
                        for word in ignored)
        return raw, flags, entry.internaldate

    return ImportFolder(mailbox, entries, load, lambda entry: f"{path}, message at line {entry.line}")


# ---------------------------------------------------------------- export


def export_account(store, user: str, target: str, progress: Progress | None = None) -> TransferResult:
    """Write ``user``'s mailboxes as a Maildir++ tree at ``target`` (see :mod:`.maildir`).

    ``target`` must be new or empty; the tree appears there only when complete
    (:class:`mailserverd.staging.StagedDir`). Messages expunged while the export
    runs are left out. Raises MigrationError (target unusable, write error).
    """
    result = TransferResult()
    try:
        with StagedDir(target) as root:
            for info in store.list_mailboxes(user):
                _export_mailbox(store, user, root, info, result, progress)
    except StagingError as exc:
        raise MigrationError(f"cannot export into {target}: {exc}") from None
    except OSError as exc:
        raise MigrationError(f"export into {target} failed and was removed: {exc.strerror or exc}") from None
    return result


def _export_mailbox(store, user: str, root: str, info, result: TransferResult,
                    progress: Progress | None) -> None:
    path = maildir.make_folder(root, info.name)
    result.mailboxes += 1
    # Maildir info letters name at most 26 keywords per folder (a-z).
    numbers = {keyword: n for n, keyword in enumerate(info.keywords[:len(maildir.KEYWORD_LETTERS)])}
    for message in store.list_messages(user, info.mailbox_id):
        try:
            data = to_lf(store.read_message(user, message.blob_id))
        except Expunged:
            continue
        letters = maildir.letters_of(message.flags, numbers)
        result.dropped_keywords += sum(1 for flag in message.flags
                                       if not flag.startswith("\\") and flag not in numbers
                                       and flag not in maildir.LETTER_OF_FLAG)
        name = (f"{message.internaldate}.M{message.uid}V{info.uidvalidity}.mailserverd"
                f",S={len(data)},W={message.size}:2,{letters}")
        maildir.write_message(path, name, data, message.internaldate)
        result.done += 1
        if progress is not None:
            progress(1)
    if numbers:
        with open(f"{path}/{maildir.KEYWORDS_FILE}", "w", encoding="utf-8") as out:
            out.write(maildir.format_keywords(numbers))


def count_messages(store, user: str, mailboxes: Iterable | None = None) -> int:
    """Messages of ``user`` (the total a progress bar of an export counts to)."""
    return sum(info.messages for info in (mailboxes or store.list_mailboxes(user)))
