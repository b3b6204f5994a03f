"""The pure parts of Maildir and mbox migration: names, flags, From_ lines, quoting, scanning."""

from __future__ import annotations

import io
import os

import pytest

from mailserverd.migration import maildir, mbox
from mailserverd.migration.common import MigrationError, is_keyword, to_crlf, to_lf


@pytest.mark.parametrize("mailbox, folder", [
    ("INBOX", ""),
    ("Sent", ".Sent"),
    ("Lists/python-dev", ".Lists.python-dev"),
    ("Café/Ünïcode", ".Caf&AOk-.&ANw-n&AO8-code"),
    ("v1.2 notes", ".v1\\2e2 notes"),
    ("back\\slash", ".back\\5cslash"),
    ("INBOX/child", ".INBOX.child"),
])
def test_folder_names_round_trip(mailbox, folder):
    assert maildir.folder_of(mailbox) == folder
    if folder:
        assert maildir.mailbox_of(folder) == mailbox


def test_folder_names_read_from_fs_layout_and_utf8():
    assert maildir.mailbox_of(os.path.join("Lists", "python")) == "Lists/python"
    assert maildir.mailbox_of(".Café") == "Café"  # Dovecot's UTF-8 folder names
    assert maildir.mailbox_of(".inbox") == "INBOX"
    with pytest.raises(MigrationError, match="modified UTF-7"):
        maildir.mailbox_of(".Bad&AOk")
    with pytest.raises(MigrationError, match="empty name"):
        maildir.mailbox_of(".a..b")


def test_info_letters_give_flags_and_keywords():
    keywords = {0: "$Label1", 2: "Work"}
    assert maildir.parse_info("1700000000.M1P2.host,S=10:2,FRSac") == "FRSac"
    assert maildir.parse_info("1700000000.M1P2.host") is None
    with pytest.raises(MigrationError, match="unknown Maildir info"):
        maildir.parse_info("1700000000.M1P2.host:1,xyz")
    flags, unknown = maildir.flags_of("DFPRSTacbX", keywords)
    assert flags == {"\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted",
                     "$Label1", "Work"}
    assert unknown == "bX"  # b: no keyword 1 in the file; X: no such flag
    numbers = {"$Label1": 0, "Work": 2}
    assert maildir.letters_of(flags, numbers) == "DFPRSTac"  # ASCII order, as the spec asks


def test_keywords_file_parse_and_format():
    text = "0 $Label1\n2 Work\n\n"
    assert maildir.parse_keywords(text, "f") == {0: "$Label1", 2: "Work"}
    assert maildir.format_keywords({"$Label1": 0, "Work": 2}) == "0 $Label1\n2 Work\n"
    for bad in ("x Work\n", "26 Late\n", "1 two words\n", "1 paren(\n"):
        with pytest.raises(MigrationError, match="line 1"):
            maildir.parse_keywords(bad, "f")


def test_keywords_are_imap_atoms():
    assert is_keyword("$Label1") and is_keyword("NonJunk")
    assert not any(is_keyword(w) for w in ("", "two words", "a(b", "\\Seen", "b]", 'q"', "caf\u00e9"))


def test_line_ends():
    assert to_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    assert to_lf(b"a\r\nb\r\n") == b"a\nb\n"
    assert to_crlf(to_lf(b"x\r\ny\r\n")) == b"x\r\ny\r\n"


# ---------------------------------------------------------------- mbox


@pytest.mark.parametrize("line, when", [
    (b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n", 1310126914),
    (b"From alice@example.org Mon Jan 1 00:00:00 2024\n", 1704067200),
    (b"From alice@example.org Mon Jan  1 00:00 2024\n", 1704067200),
    (b"From alice@example.org Mon Jan  1 02:00:00 2024 +0200\n", 1704067200),
    (b"From alice@example.org Mon Jan  1 02:00:00 +0200 2024\n", 1704067200),
    (b"From - Jan 1 00:00:00 2024\r\n", 1704067200),
])
def test_from_lines(line, when):
    assert mbox.parse_from_line(line) == when


@pytest.mark.parametrize("line", [
    b"From here on, the body goes on\n", b"From alice Mon Jan 1 25:00:00 2024\n",
    b"From alice Mon Foo 1 00:00:00 2024\n", b"From alice Mon Jan 1 00:00:00\n", b"From \n",
])
def test_not_from_lines(line):
    assert mbox.parse_from_line(line) is None


MBOX = (b"From alice@example.org Mon Jan  1 00:00:00 2024\n"
        b"Subject: one\nStatus: RO\nX-Status: AF\nX-Keywords: $Label1 Work\nX-UID: 7\n\n"
        b">From the start\n>>From quoted twice\nbody\n\n"
        b"From bob@example.org Tue Jan  2 00:00:00 2024\n"
        b"Subject: two\n\nlast line\n")


def test_scan_and_read_an_mbox():
    entries = mbox.scan_mbox(io.BytesIO(MBOX), "box")
    assert [(e.internaldate, e.line) for e in entries] == [(1704067200, 1), (1704153600, 12)]
    raw, flags, ignored = mbox.message_of(MBOX[entries[0].start:entries[0].end], "mboxrd")
    assert raw == b"Subject: one\r\n\r\nFrom the start\r\n>From quoted twice\r\nbody\r\n"
    assert flags == {"\\Seen", "\\Answered", "\\Flagged", "$Label1", "Work"} and ignored == []
    raw, flags, _ = mbox.message_of(MBOX[entries[1].start:entries[1].end], "mboxrd")
    assert raw == b"Subject: two\r\n\r\nlast line\r\n" and flags == frozenset()


def test_mboxo_unquotes_only_one_level():
    assert mbox.unquote(b">From a\n>>From b\n", "mboxo") == b"From a\n>>From b\n"
    assert mbox.unquote(b">From a\n>>From b\n", "mboxrd") == b"From a\n>From b\n"


def test_a_bad_from_line_is_an_error_with_its_line_number():
    bad = MBOX.replace(b">From the start", b"From the start")
    with pytest.raises(mbox.MboxError, match=r"box, line 8: bad From_ line 'From the start'") as caught:
        mbox.scan_mbox(io.BytesIO(bad), "box")
    assert caught.value.line == 8
    with pytest.raises(mbox.MboxError, match="line 1: not an mbox"):
        mbox.scan_mbox(io.BytesIO(b"Subject: no From_ line\n\nbody\n"), "box")


def test_folded_and_unknown_headers_are_kept():
    raw, flags, ignored = mbox.message_of(
        b"Subject: a\n folded\nStatus: O\nX-Keywords: ok bad(word\nX-Other: x\n\nb\n", "mboxrd")
    assert raw == b"Subject: a\r\n folded\r\nX-Other: x\r\n\r\nb\r\n"
    assert flags == {"ok"} and ignored == ["bad(word"]


# ---------------------------------------------------------------- scanning a tree


def write(path, data=b"Subject: x\n\nbody\n", mtime=1700000000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    os.utime(path, (mtime, mtime))


def test_scan_a_maildir_plus_plus_tree(tmp_path):
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    write(root / "new" / "1.M1.host")
    write(root / "cur" / "2.M2.host:2,S", mtime=1600000000)
    write(root / ".Lists.python" / "cur" / "3.M3.host:2,Ra")
    (root / ".Lists.python" / "dovecot-keywords").write_text("0 Work\n")
    write(root / "cur" / ".hidden")  # skipped, as the spec says
    scan = maildir.scan_tree(str(root))
    assert scan.problems == [] and scan.warnings == []
    found = {f.mailbox: [(os.path.basename(m.path), sorted(m.flags), m.internaldate) for m in f.messages]
             for f in scan.folders}
    assert found == {
        "INBOX": [("1.M1.host", [], 1700000000), ("2.M2.host:2,S", ["\\Seen"], 1600000000)],
        "Lists/python": [("3.M3.host:2,Ra", ["Work", "\\Answered"], 1700000000)],
    }


def test_scan_reports_every_problem_of_a_corrupt_tree(tmp_path):
    root = tmp_path / "Maildir"
    write(root / "cur" / "1.M1.host:2,S")
    write(root / "cur" / "2.M2.host:1,weird")
    (root / "cur" / "3.M3.host:2,S").mkdir()
    os.symlink(tmp_path / "nowhere", root / "cur" / "4.M4.host:2,S")
    write(root / ".Bad&AOk" / "cur" / "5.M5.host:2,")
    write(root / "cur" / "6.M6.host:2,Sz")
    problems = maildir.scan_tree(str(root))
    assert len(problems.problems) == 4, problems.problems
    text = "\n".join(problems.problems)
    for expected in ("unknown Maildir info", "is not a regular file", "cannot read", "modified UTF-7"):
        assert expected in text
    assert problems.warnings and "'z'" in problems.warnings[0]
    assert maildir.scan_tree(str(tmp_path / "missing")).problems


def test_written_message_is_readable_back(tmp_path):
    folder = maildir.make_folder(str(tmp_path / "out"), "A/B")
    assert folder.endswith(".A.B") and os.path.exists(os.path.join(folder, "maildirfolder"))
    path = maildir.write_message(folder, "1.M1.x,S=3:2,FS", b"abc", 1234567890)
    assert os.stat(path).st_mtime == 1234567890 and os.listdir(os.path.join(folder, "tmp")) == []
    scan = maildir.scan_tree(str(tmp_path / "out"))
    assert [(f.mailbox, [sorted(m.flags) for m in f.messages]) for f in scan.folders] == [
        ("A/B", [["\\Flagged", "\\Seen"]])]


def test_scan_a_dovecot_layout_fs_tree(tmp_path):
    root = tmp_path / "mail"
    write(root / "cur" / "1.M1.host:2,S")
    write(root / "Lists" / "python" / "cur" / "2.M2.host:2,F")
    write(root / "Archive" / "new" / "3.M3.host")
    (root / "courierimapkeywords").mkdir()  # not a folder: no cur/ or new/
    scan = maildir.scan_tree(str(root))
    assert scan.problems == []
    assert sorted((f.mailbox, len(f.messages)) for f in scan.folders) == [
        ("Archive", 1), ("INBOX", 1), ("Lists/python", 1)]
