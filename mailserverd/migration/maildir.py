"""Maildir trees: reading Dovecot/Courier Maildir(++) and writing Maildir++.

Layout (Maildir++, as Dovecot's default and Courier write it): the root's
``cur/``, ``new/``, ``tmp/`` are INBOX; folder ``A/B`` is the directory
``.A.B`` beside them. Folder names are modified UTF-7 (RFC 3501 §5.1.3); a
``.`` or ``\\`` inside one name component is written ``\\2e`` / ``\\5c`` (as
Dovecot's listescape). Reading also accepts Dovecot's ``LAYOUT=fs`` (folder
``A/B`` in ``A/B/{cur,new,tmp}``) and UTF-8 folder names.

Messages (https://cr.yp.to/proto/maildir.html): a file in ``new/`` has no
flags; one in ``cur/`` has an info suffix ``:2,`` + flag letters in ASCII
order: D \\Draft, F \\Flagged, P $Forwarded (passed), R \\Answered, S \\Seen,
T \\Deleted, and ``a``-``z`` the keywords numbered 0-25 in the folder's
Dovecot ``dovecot-keywords`` file (lines ``N name``). The file's mtime is the
INTERNALDATE (as Dovecot keeps it). Files are written with LF line ends
(Dovecot's default) and read with any; the store keeps CRLF.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from mailserverd.imap import mutf7
from mailserverd.migration.common import MigrationError, is_keyword

INBOX = "INBOX"
SEPARATOR = "/"  # the store's hierarchy separator (store.types.HIERARCHY_SEPARATOR)
KEYWORDS_FILE = "dovecot-keywords"
FLAG_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                "S": "\\Seen", "T": "\\Deleted"}
LETTER_OF_FLAG = {flag: letter for letter, flag in FLAG_LETTERS.items()}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SUBDIRS = ("cur", "new", "tmp")
_ESCAPES = {".": "\\2e", "\\": "\\5c"}


# ---------------------------------------------------------------- names and flags


def folder_of(mailbox: str) -> str:
    """The Maildir++ directory name of a mailbox: ``""`` for INBOX, else ``.A.B``."""
    if mailbox == INBOX:
        return ""
    parts = []
    for part in mailbox.split(SEPARATOR):
        encoded = mutf7.encode(part).decode("ascii")
        parts.append("".join(_ESCAPES.get(char, char) for char in encoded))
    return "." + ".".join(parts)


def mailbox_of(folder: str) -> str:
    """The mailbox name of a Maildir++ directory name (``.A.B``) or a LAYOUT=fs path
    (``A/B``). Raises MigrationError for a name that is neither mUTF-7 nor UTF-8."""
    parts = folder[1:].split(".") if folder.startswith(".") else folder.split(os.sep)
    names = []
    for part in parts:
        part = re.sub(r"\\([0-9a-fA-F]{2})", lambda m: chr(int(m[1], 16)), part)
        if not part:
            raise MigrationError(f"folder {folder!r} has an empty name component")
        try:
            names.append(mutf7.decode(part.encode("ascii")))
        except (UnicodeEncodeError, mutf7.MUTF7Error):
            if "&" in part and part.isascii():
                raise MigrationError(f"folder {folder!r} is not valid modified UTF-7") from None
            names.append(part)  # Dovecot's UTF-8 folder names
    name = SEPARATOR.join(names)
    return INBOX if name.upper() == INBOX else name


def parse_info(filename: str) -> str | None:
    """The flag letters of a Maildir file name (after ``:2,``), or None without info.

    Raises MigrationError for an info of another version (``:1,`` is "experimental").
    """
    base, colon, info = filename.partition(":")
    if not colon:
        return None
    if not info.startswith("2,"):
        raise MigrationError(f"unknown Maildir info {info!r} in file name {filename!r}")
    return info[2:]


def flags_of(letters: str, keywords: dict[int, str]) -> tuple[frozenset[str], str]:
    """``(flags, letters not understood)`` for the info letters of one file."""
    flags, unknown = set(), ""
    for letter in letters:
        if letter in FLAG_LETTERS:
            flags.add(FLAG_LETTERS[letter])
        elif letter in KEYWORD_LETTERS and KEYWORD_LETTERS.index(letter) in keywords:
            flags.add(keywords[KEYWORD_LETTERS.index(letter)])
        else:
            unknown += letter
    return frozenset(flags), unknown


def letters_of(flags, keyword_numbers: dict[str, int]) -> str:
    """The info letters for ``flags``, in ASCII order as the spec asks."""
    letters = {LETTER_OF_FLAG[f] for f in flags if f in LETTER_OF_FLAG}
    letters |= {KEYWORD_LETTERS[keyword_numbers[f]] for f in flags if f in keyword_numbers}
    return "".join(sorted(letters))


def parse_keywords(text: str, path: str) -> dict[int, str]:
    """A ``dovecot-keywords`` file: ``{number: keyword}``. Raises MigrationError for a bad line."""
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        index, _, name = line.partition(" ")
        if not index.isdigit() or int(index) >= len(KEYWORD_LETTERS) or not is_keyword(name):
            raise MigrationError(f"{path}, line {number}: not a keyword line: {line!r}")
        found[int(index)] = name
    return found


def format_keywords(keyword_numbers: dict[str, int]) -> str:
    """The ``dovecot-keywords`` text for ``{keyword: number}``."""
    return "".join(f"{n} {k}\n" for k, n in sorted(keyword_numbers.items(), key=lambda item: item[1]))


# ---------------------------------------------------------------- reading a tree


@dataclass(frozen=True)
class MaildirMessage:
    """One message file: where it is, its flags and INTERNALDATE (the file's mtime)."""

    path: str
    flags: frozenset[str]
    internaldate: int


@dataclass
class MaildirFolder:
    """One folder of a tree and its messages (in file-name order, i.e. delivery order)."""

    mailbox: str
    path: str
    messages: list[MaildirMessage] = field(default_factory=list)


@dataclass
class MaildirScan:
    """What :func:`scan_tree` found: folders, ``problems`` (stop the import) and ``warnings``."""

    folders: list[MaildirFolder] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _is_maildir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cur")) or os.path.isdir(os.path.join(path, "new"))


def _folder_dirs(root: str) -> list[tuple[str, str]]:
    """``(relative name, path)`` of every folder of the tree: the root (INBOX),
    Maildir++ ``.A.B`` directories and LAYOUT=fs subdirectories."""
    found = [("", root)] if _is_maildir(root) else []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SUBDIRS)
        for name in list(dirnames):
            path = os.path.join(dirpath, name)
            relative = os.path.relpath(path, root)
            if name.startswith("."):
                dirnames.remove(name)  # a Maildir++ folder holds no folders of its own
                if dirpath == root and _is_maildir(path):
                    found.append((name, path))
            elif _is_maildir(path):
                found.append((relative, path))
    return found


def scan_tree(root: str) -> MaildirScan:
    """Read the folder structure, file names and mtimes of the tree at ``root``
    (no message is read). Every problem is collected, so that one run lists them all."""
    scan = MaildirScan()
    if not os.path.isdir(root):
        scan.problems.append(f"{root} is not a directory")
        return scan
    folders = _folder_dirs(root)
    if not folders:
        scan.problems.append(f"{root} holds no Maildir (no cur/ or new/ directory)")
    seen: dict[str, str] = {}
    for relative, path in folders:
        try:
            mailbox = mailbox_of(relative) if relative else INBOX
        except MigrationError as exc:
            scan.problems.append(str(exc))
            continue
        if mailbox in seen:
            scan.problems.append(f"{path} and {seen[mailbox]} are both mailbox {mailbox!r}")
            continue
        seen[mailbox] = path
        scan.folders.append(_scan_folder(mailbox, path, scan))
    return scan


def _scan_folder(mailbox: str, path: str, scan: MaildirScan) -> MaildirFolder:
    folder = MaildirFolder(mailbox, path)
    keywords: dict[int, str] = {}
    keywords_path = os.path.join(path, KEYWORDS_FILE)
    if os.path.exists(keywords_path):
        try:
            with open(keywords_path, encoding="utf-8") as source:
                keywords = parse_keywords(source.read(), keywords_path)
        except (OSError, UnicodeDecodeError, MigrationError) as exc:
            scan.problems.append(f"cannot read {keywords_path}: {exc}")
    for sub in ("new", "cur"):
        directory = os.path.join(path, sub)
        if not os.path.isdir(directory):
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            scan.problems.append(f"cannot list {directory}: {exc.strerror or exc}")
            continue
        for name in names:
            if not name.startswith("."):  # the spec: readers skip names starting with a dot
                _scan_file(folder, os.path.join(directory, name), sub, keywords, scan)
    return folder


def _scan_file(folder: MaildirFolder, path: str, sub: str, keywords: dict[int, str],
               scan: MaildirScan) -> None:
    try:
        info = os.stat(path)
    except OSError as exc:
        scan.problems.append(f"cannot read {path}: {exc.strerror or exc}")
        return
    if not stat.S_ISREG(info.st_mode):
        scan.problems.append(f"{path} is not a regular file")
        return
    flags: frozenset[str] = frozenset()
    if sub == "cur":
        try:
            letters = parse_info(os.path.basename(path))
        except MigrationError as exc:
            scan.problems.append(f"{path}: {exc}")
            return
        flags, unknown = flags_of(letters or "", keywords)
        if unknown:
            scan.warnings.append(f"{path}: flag letters {unknown!r} not understood, not kept")
    folder.messages.append(MaildirMessage(path, flags, int(info.st_mtime)))


# ---------------------------------------------------------------- writing


def make_folder(root: str, mailbox: str) -> str:
    """Create the Maildir++ folder of ``mailbox`` under ``root``; returns its path."""
    path = os.path.join(root, folder_of(mailbox)) if mailbox != INBOX else root
    for sub in _SUBDIRS:
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    if mailbox != INBOX:
        open(os.path.join(path, "maildirfolder"), "wb").close()  # Maildir++: marks a subfolder
    return path


def write_message(folder_path: str, name: str, data: bytes, internaldate: int) -> str:
    """Deliver one file the Maildir way (written in ``tmp/``, renamed into ``cur/``)
    with its mtime set to ``internaldate``; returns its path."""
    temporary = os.path.join(folder_path, "tmp", name.partition(":")[0])
    with open(temporary, "xb") as out:
        out.write(data)
    os.utime(temporary, (internaldate, internaldate))
    final = os.path.join(folder_path, "cur", name)
    os.rename(temporary, final)
    return final
