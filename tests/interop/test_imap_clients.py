"""Real IMAP clients against the real daemon: mbsync, offlineimap, mutt, curl and imapclient.

Every client talks TLS, implicit on the imaps listener or STARTTLS (required)
on the imap listener, and verifies the server against the test CA. The
daemon's certificate names 127.0.0.1 both as an IP address subjectAltName
(what curl, mutt and Python check) and as its subject commonName, because
mbsync 1.4 and offlineimap match only DNS names and the commonName, never an
IP address entry; so no client is told to skip the check.

What a client stores locally is compared with what the server holds, as
imaplib reads it: the sync clients write LF line ends, mbsync adds its
X-TUID field, mutt's mbox writer adds Status, Content-Length and Lines; each such
difference is named and removed before the comparison, nothing else is.

The clients run in their own process groups with a temporary HOME, no stdin
and a timeout (run_client from the POP3 interop tests).
"""

from __future__ import annotations

import imaplib
import importlib
import mailbox
import re
import threading
from pathlib import Path

import pytest

from clients import make_message, smtp_send
from conftest import IN_CI, make_daemon, require_program, wait_for
from test_pop3_clients import CLIENT_TIMEOUT, client_env, run_client, without_mutt_fields

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"

#: Maildir info flag letters (the maildir(5) convention mbsync and offlineimap follow).
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
MESSAGE_ID = re.compile(rb"^Message-ID: *(<[^>]*>)", re.IGNORECASE | re.MULTILINE)


@pytest.fixture
def imap_daemon(tmp_path):
    """A running daemon like conftest's ``daemon`` (alice only), whose certificate
    names 127.0.0.1 as IP subjectAltName and as subject commonName (see the module doc)."""
    import trustme

    d = make_daemon(tmp_path / "d")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", common_name="127.0.0.1")
    ca.cert_pem.write_to_path(str(d.ca_path))
    cert.private_key_pem.write_to_path(str(d.root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d.root / "cert.pem"))
    d.cli("domain", "add", "example.test")
    d.add_user(ALICE, "alice-secret-1")
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def deliver(daemon, *subjects: str) -> list[bytes]:
    """Send one message per subject to alice over SMTP; returns what was sent."""
    sent = [make_message(subject) for subject in subjects]
    for message in sent:
        smtp_send(daemon, message)
    return sent


def imap_login(daemon) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=60)
    client.login(ALICE, daemon.users[ALICE])
    return client


def server_view(daemon, mailbox_name: str = "INBOX") -> dict[int, tuple[frozenset, bytes]]:
    """UID -> (flags, message) of a mailbox as imaplib sees it (EXAMINE: nothing changes)."""
    client = imap_login(daemon)
    try:
        typ, data = client.select(mailbox_name, readonly=True)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return {}
        typ, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        assert typ == "OK", data
        view = {}
        for part in data:
            if not isinstance(part, tuple):
                continue
            uid = int(re.search(rb"UID (\d+)", part[0]).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", part[0]).group(1).decode().split()
            view[uid] = (frozenset(flags) - {"\\Recent"}, part[1])
        return view
    finally:
        client.logout()


def server_by_message_id(daemon, mailbox_name: str = "INBOX") -> dict[bytes, tuple[frozenset, bytes]]:
    """Message-ID -> (flags, message with LF line ends) of a server mailbox."""
    out = {}
    for flags, message in server_view(daemon, mailbox_name).values():
        out[message_id(message)] = (flags, message.replace(b"\r\n", b"\n"))
    return out


def message_id(message: bytes) -> bytes:
    found = MESSAGE_ID.search(message)
    assert found, message[:300]
    return found.group(1)


def maildir_files(folder: Path) -> list[Path]:
    return [p for sub in ("new", "cur") for p in (folder / sub).iterdir()]


def maildir_flags(path: Path) -> frozenset:
    """The IMAP flags a Maildir file name carries (``...:2,FS``); none for a file in new/."""
    if ":2," not in path.name:
        return frozenset()
    return frozenset(MAILDIR_FLAGS[c] for c in path.name.split(":2,", 1)[1] if c in MAILDIR_FLAGS)


def without_field(message: bytes, name: bytes) -> bytes:
    """``message`` without the header field ``name`` (one line, as the clients write it)."""
    head, body = message.split(b"\n\n", 1)
    kept = [line for line in head.split(b"\n") if not line.lower().startswith(name.lower() + b":")]
    return b"\n".join(kept) + b"\n\n" + body


def local_by_message_id(folder: Path, added_field: bytes | None = None) -> dict[bytes, tuple[frozenset, bytes]]:
    """Message-ID -> (flags, message) of a local Maildir folder, minus the client's ``added_field``."""
    out = {}
    for path in maildir_files(folder):
        message = path.read_bytes()
        if added_field is not None:
            message = without_field(message, added_field)
        out[message_id(message)] = (maildir_flags(path), message)
    return out


def maildir_deliver(folder: Path, message: bytes, name: str) -> None:
    """Put ``message`` (LF line ends) into a Maildir folder's new/ as a local MDA would."""
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "tmp" / name).write_bytes(message)
    (folder / "tmp" / name).rename(folder / "new" / name)


# --- mbsync ----------------------------------------------------------------

def write_mbsyncrc(daemon, tmp_path: Path, maildir: Path, transport: str) -> Path:
    """An mbsync config: IMAPS on the imaps port, or STARTTLS (required) on the imap port."""
    rc = tmp_path / "mbsyncrc"
    port, ssl_type = (daemon.ports["imaps"], "IMAPS") if transport == "imaps" else (daemon.ports["imap"], "STARTTLS")
    rc.write_text(
        "IMAPAccount test\n"
        "Host 127.0.0.1\n"
        f"Port {port}\n"
        f"User {ALICE}\n"
        f"Pass {daemon.users[ALICE]}\n"
        f"SSLType {ssl_type}\n"
        f"CertificateFile {daemon.ca_path}\n"
        "\nIMAPStore remote\nAccount test\n"
        "\nMaildirStore local\n"
        f"Path {maildir}/\n"
        f"Inbox {maildir}/INBOX\n"
        "SubFolders Verbatim\n"
        "\nChannel both\n"
        "Far :remote:\nNear :local:\n"
        "Patterns *\n"
        "Create Both\nExpunge Both\nSyncState *\n"
    )
    rc.chmod(0o600)
    return rc


def run_mbsync(mbsync: str, rc: Path, tmp_path: Path) -> str:
    code, output = run_client([mbsync, "-c", str(rc), "--all"], client_env(tmp_path / "home"), tmp_path)
    assert code == 0, output
    return output


def server_add_flag(daemon, message: bytes, flag: str, expunge: bool = False) -> None:
    """Add ``flag`` to the INBOX message with ``message``'s Message-ID over imaplib; then EXPUNGE."""
    client = imap_login(daemon)
    try:
        client.select("INBOX")
        typ, data = client.uid("SEARCH", "HEADER", "Message-ID", message_id(message).decode())
        assert typ == "OK" and len(data[0].split()) == 1, data
        typ, data = client.uid("STORE", data[0].decode(), "+FLAGS", f"({flag})")
        assert typ == "OK", data
        if expunge:
            assert client.expunge()[0] == "OK"
    finally:
        client.logout()


@pytest.mark.parametrize("transport", ["imaps", "starttls"])
def test_mbsync_two_way_sync(imap_daemon, tmp_path, transport):
    mbsync = require_program("mbsync", "isync")
    first, second, third, gone = deliver(imap_daemon, "mbsync one", "mbsync two", "mbsync three",
                                         "mbsync gone")
    maildir = tmp_path / "Maildir"
    maildir.mkdir()
    rc = write_mbsyncrc(imap_daemon, tmp_path, maildir, transport)
    inbox = maildir / "INBOX"

    # 1. The first sync pulls every message and creates every server mailbox locally.
    run_mbsync(mbsync, rc, tmp_path)
    server = server_by_message_id(imap_daemon)
    assert len(server) == 4
    assert local_by_message_id(inbox, b"X-TUID") == server
    for special in ("Archive", "Drafts", "Junk", "Sent", "Trash"):
        assert (maildir / special / "cur").is_dir(), special

    # 2. Change both sides: locally, read one message and delete another, and
    #    file a new message in a new folder; on the server, a new delivery, a flag
    #    and an expunge.
    by_id = {message_id(p.read_bytes()): p for p in maildir_files(inbox)}
    read = by_id[message_id(first)]
    read.rename(inbox / "cur" / (read.name.split(":2,")[0] + ":2,S"))
    by_id[message_id(second)].unlink()
    local_only = make_message("filed locally").replace(b"\r\n", b"\n")
    maildir_deliver(maildir / "Projects", local_only, "1700000000.1_1.local")
    fourth, = deliver(imap_daemon, "mbsync four")
    server_add_flag(imap_daemon, third, "\\Flagged")
    server_add_flag(imap_daemon, gone, "\\Deleted", expunge=True)

    # 3. The second sync brings both sides to the same state.
    run_mbsync(mbsync, rc, tmp_path)
    server = server_by_message_id(imap_daemon)
    assert set(server) == {message_id(m) for m in (first, third, fourth)}
    assert server[message_id(first)][0] == {"\\Seen"}
    assert server[message_id(third)][0] == {"\\Flagged"}
    assert server[message_id(fourth)][0] == frozenset()
    assert local_by_message_id(inbox, b"X-TUID") == server
    # mbsync created Projects on the server (CREATE) and uploaded the message
    # (APPEND), adding its X-TUID field to the uploaded copy only.
    [(flags, uploaded)] = server_by_message_id(imap_daemon, "Projects").values()
    assert flags == frozenset()
    assert without_field(uploaded, b"X-TUID") == local_only
    assert local_by_message_id(maildir / "Projects") == {message_id(local_only): (frozenset(), local_only)}

    # 4. A third sync finds nothing to do: both sides stay as they are.
    before = sorted(p.name for p in maildir_files(inbox))
    run_mbsync(mbsync, rc, tmp_path)
    assert sorted(p.name for p in maildir_files(inbox)) == before
    assert server_by_message_id(imap_daemon) == server


# --- offlineimap -----------------------------------------------------------

def write_offlineimaprc(daemon, tmp_path: Path, mail: Path, remote_extra: str = "") -> Path:
    """An offlineimap config syncing alice over IMAPS into the Maildir ``mail``;
    ``remote_extra`` holds more settings of the remote repository."""
    rc = tmp_path / "offlineimaprc"
    rc.write_text(
        "[general]\naccounts = test\n"
        f"metadata = {tmp_path / 'offlineimap-meta'}\n"
        "\n[Account test]\nlocalrepository = local\nremoterepository = remote\n"
        f"\n[Repository local]\ntype = Maildir\nlocalfolders = {mail}\n"
        "\n[Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\n"
        f"remoteport = {daemon.ports['imaps']}\n"
        f"remoteuser = {ALICE}\nremotepass = {daemon.users[ALICE]}\n"
        f"ssl = yes\nsslcacertfile = {daemon.ca_path}\n"
        + remote_extra
    )
    rc.chmod(0o600)
    return rc


def run_offlineimap(offlineimap: str, rc: Path, tmp_path: Path, *options: str) -> str:
    code, output = run_client([offlineimap, "-c", str(rc), "-o", "-u", "basic", *options],
                              client_env(tmp_path / "home"), tmp_path)
    assert code == 0 and "ERROR" not in output, output
    return output


def test_offlineimap_one_sync_into_a_maildir(imap_daemon, tmp_path):
    offlineimap = require_program("offlineimap", "offlineimap3")
    deliver(imap_daemon, "offlineimap one", "offlineimap two", "offlineimap three")
    client = imap_login(imap_daemon)
    try:
        client.select("INBOX")
        assert client.store("2", "+FLAGS", "(\\Seen \\Answered)")[0] == "OK"
    finally:
        client.logout()
    mail = tmp_path / "Mail"
    run_offlineimap(offlineimap, write_offlineimaprc(imap_daemon, tmp_path, mail), tmp_path)

    server = server_by_message_id(imap_daemon)
    assert len(server) == 3
    assert local_by_message_id(mail / "INBOX") == server  # bytes (LF) and flags
    assert {flags for flags, _ in server.values()} == {frozenset(), frozenset({"\\Seen", "\\Answered"})}
    for special in ("Archive", "Drafts", "Junk", "Sent", "Trash"):
        assert (mail / special / "cur").is_dir(), special


# --- mutt ------------------------------------------------------------------

def test_mutt_copies_and_saves_over_imaps(imap_daemon, tmp_path):
    mutt = require_program("mutt", "mutt")
    script = require_program("script", "bsdutils")  # mutt needs a terminal: script(1) gives it a pty
    deliver(imap_daemon, "mutt one", "mutt two", "mutt three")
    stored = server_by_message_id(imap_daemon)
    saved = tmp_path / "saved.mbox"
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f'set imap_user="{ALICE}"\n'
        f'set imap_pass="{imap_daemon.users[ALICE]}"\n'
        f'set folder="imaps://127.0.0.1:{imap_daemon.ports["imaps"]}/"\n'
        'set spoolfile="+INBOX"\n'
        f'set ssl_ca_certificates_file="{imap_daemon.ca_path}"\n'
        f'set certificate_file="{tmp_path / "mutt-certs"}"\n'
        "set mbox_type=mbox\n"
        "set confirmappend=no\nset confirmcreate=no\n"
        "set delete=yes\nset quit=yes\nset move=no\n"
    )
    muttrc.chmod(0o600)
    # The current message: copied to Archive (UID COPY), then saved to a local
    # mbox, which marks it \Deleted in the INBOX and expunges it on the way out.
    keys = f"<copy-message>=Archive<enter><save-message>{saved}<enter><quit>"
    command = f"{mutt} -n -F {muttrc} -e 'push {keys}'"
    code, output = run_client([script, "-qec", command, "/dev/null"], client_env(tmp_path / "home"), tmp_path)
    assert code == 0, output

    box = mailbox.mbox(str(saved), create=False)
    try:
        [written] = [box.get_bytes(key) for key in box.keys()]
    finally:
        box.close()
    written = without_mutt_fields(written)
    taken = message_id(written)
    assert written == stored[taken][1]
    archive = server_by_message_id(imap_daemon, "Archive")
    assert list(archive) == [taken]
    assert archive[taken][1] == stored[taken][1]
    inbox = server_by_message_id(imap_daemon)
    assert set(inbox) == set(stored) - {taken}


def test_mutt_flags_and_deletes_over_starttls(imap_daemon, tmp_path):
    mutt = require_program("mutt", "mutt")
    script = require_program("script", "bsdutils")
    deliver(imap_daemon, "mutt one", "mutt two", "mutt three")
    stored = server_by_message_id(imap_daemon)
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f'set imap_user="{ALICE}"\n'
        f'set imap_pass="{imap_daemon.users[ALICE]}"\n'
        f'set folder="imap://127.0.0.1:{imap_daemon.ports["imap"]}/"\n'
        'set spoolfile="+INBOX"\n'
        "set ssl_starttls=yes\nset ssl_force_tls=yes\n"  # STARTTLS, or no login at all
        f'set ssl_ca_certificates_file="{imap_daemon.ca_path}"\n'
        f'set certificate_file="{tmp_path / "mutt-certs"}"\n'
        "set delete=yes\nset quit=yes\nset move=no\nset resolve=yes\n"
        "set mark_old=no\n"  # else mutt stores its "Old" keyword on the messages it saw
    )
    muttrc.chmod(0o600)
    # Flag the current message (the cursor then moves on: resolve), delete the
    # next one, and write the changes back: UID STORE, then EXPUNGE.
    keys = "<flag-message><delete-message><sync-mailbox><quit>"
    command = f"{mutt} -n -F {muttrc} -e 'push {keys}'"
    code, output = run_client([script, "-qec", command, "/dev/null"], client_env(tmp_path / "home"), tmp_path)
    assert code == 0, output

    inbox = server_by_message_id(imap_daemon)
    assert len(inbox) == 2 and set(inbox) < set(stored), (list(inbox), list(stored))
    assert sorted(sorted(flags) for flags, _ in inbox.values()) == [[], ["\\Flagged"]]
    assert all(message == stored[key][1] for key, (_flags, message) in inbox.items())


# --- curl ------------------------------------------------------------------

def curl_base(curl: str, daemon) -> list[str]:
    return [curl, "--silent", "--show-error", "--ssl-reqd", "--cacert", str(daemon.ca_path),
            "--user", f"{ALICE}:{daemon.users[ALICE]}", "--max-time", str(CLIENT_TIMEOUT)]


def test_curl_fetches_each_message_by_uid(imap_daemon, tmp_path):
    curl = require_program("curl", "curl")
    deliver(imap_daemon, "curl one", "curl two", "curl three")
    stored = server_view(imap_daemon)
    url = f"imaps://127.0.0.1:{imap_daemon.ports['imaps']}"
    env = client_env(tmp_path / "home")
    for uid, (_flags, message) in stored.items():
        out = tmp_path / f"uid-{uid}"
        code, output = run_client(curl_base(curl, imap_daemon) + ["--output", str(out), f"{url}/INBOX;UID={uid}"],
                                  env, tmp_path)
        assert code == 0, output
        assert out.read_bytes() == message  # byte for byte, CRLF kept
    # curl SELECTs and FETCHes BODY[], which sets \Seen (RFC 9051 §6.4.5).
    assert all(flags == {"\\Seen"} for flags, _ in server_view(imap_daemon).values())

    uid = min(stored)
    code, output = run_client(curl_base(curl, imap_daemon)
                              + [f"{url}/INBOX;UID={uid};SECTION=HEADER.FIELDS%20(SUBJECT)"], env, tmp_path)
    assert code == 0, output
    assert output == "Subject: curl one\r\n\r\n"


def test_curl_custom_commands_and_append(imap_daemon, tmp_path):
    curl = require_program("curl", "curl")
    deliver(imap_daemon, "curl one", "curl two")
    url = f"imaps://127.0.0.1:{imap_daemon.ports['imaps']}"
    env = client_env(tmp_path / "home")

    def curl_lines(*args: str) -> list[str]:
        code, output = run_client(curl_base(curl, imap_daemon) + list(args), env, tmp_path)
        assert code == 0, output
        return output.splitlines()

    examined = curl_lines("-X", "EXAMINE INBOX", f"{url}/INBOX")
    assert "* 2 EXISTS" in examined, examined
    assert any(re.fullmatch(r"\* OK \[UIDVALIDITY \d+\].*", line) for line in examined), examined
    assert any(line.startswith("* OK [UIDNEXT 3]") for line in examined), examined
    listed = curl_lines(f"{url}/")  # LIST "" *
    assert '* LIST (\\HasNoChildren) "/" "INBOX"' in listed, listed
    assert '* LIST (\\HasNoChildren \\Trash) "/" "Trash"' in listed, listed  # RFC 6154 §2
    assert curl_lines(f"{url}/INBOX?SUBJECT%20%22curl%20two%22") == ["* SEARCH 2"]
    assert curl_lines("-X", "STATUS INBOX (MESSAGES UNSEEN)", f"{url}/") == \
        ['* STATUS "INBOX" (MESSAGES 2 UNSEEN 2)']

    # Upload: curl APPENDs the file as it is (CRLF line ends) to the mailbox in the URL.
    upload = tmp_path / "upload.eml"
    upload.write_bytes(make_message("uploaded by curl"))
    curl_lines("--upload-file", str(upload), f"{url}/Archive")
    [(flags, message)] = server_view(imap_daemon, "Archive").values()
    assert message == upload.read_bytes()
    assert flags == {"\\Seen"}  # curl sends APPEND mailbox (\Seen) {size}


def test_curl_without_the_ca_refuses_the_server(imap_daemon, tmp_path):
    """The TLS checks above are real: a client that does not trust the CA gets nothing."""
    curl = require_program("curl", "curl")
    import trustme

    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    code, output = run_client(
        [curl, "--silent", "--show-error", "--cacert", str(other_ca), "--user", f"{ALICE}:x",
         f"imaps://127.0.0.1:{imap_daemon.ports['imaps']}/INBOX;UID=1"],
        client_env(tmp_path / "home"), tmp_path)
    assert code == 60, output  # CURLE_PEER_FAILED_VERIFICATION


# --- imapclient ------------------------------------------------------------

def require_imapclient():
    """The imapclient module; skip without it (fail under CI: it is in the test extras)."""
    try:
        return importlib.import_module("imapclient")
    except ImportError:
        message = "imapclient not installed (pip install '.[test]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def imapclient_login(daemon):
    imapclient = require_imapclient()
    client = imapclient.IMAPClient("127.0.0.1", port=daemon.ports["imaps"], ssl=True,
                                   ssl_context=daemon.ssl_context(), timeout=60)
    client.login(ALICE, daemon.users[ALICE])
    return client


def test_imapclient_select_search_fetch_append_move(imap_daemon):
    sent = deliver(imap_daemon, "imapclient one", "imapclient two")
    client = imapclient_login(imap_daemon)
    try:
        selected = client.select_folder("INBOX")
        assert selected[b"EXISTS"] == 2
        uids = client.search(["SUBJECT", "imapclient two"])
        assert len(uids) == 1
        fetched = client.fetch(uids, ["BODY.PEEK[]", "FLAGS", "RFC822.SIZE"])
        [(uid, data)] = fetched.items()
        assert data[b"BODY[]"].endswith(sent[1])
        assert data[b"RFC822.SIZE"] == len(data[b"BODY[]"])
        assert data[b"FLAGS"] == (b"\\Recent",)  # the first session to select after delivery

        appended = make_message("appended by imapclient")
        answer = client.append("INBOX", appended, flags=[b"\\Seen"])
        appenduid = re.search(rb"\[APPENDUID (\d+) (\d+)\]", answer)  # RFC 4315 §3
        assert appenduid, answer
        new = client.search(["SUBJECT", "appended by imapclient"])
        assert new == [int(appenduid.group(2))]
        assert int(appenduid.group(1)) == selected[b"UIDVALIDITY"]
        data = client.fetch(new, ["BODY.PEEK[]", "FLAGS"])[new[0]]
        assert data[b"BODY[]"] == appended
        assert set(data[b"FLAGS"]) == {b"\\Seen", b"\\Recent"}  # this session was told of it first

        client.move(uids, "Archive")
        assert client.search(["SUBJECT", "imapclient two"]) == []
        assert client.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
        assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 2
    finally:
        client.logout()
    [(_flags, moved)] = server_view(imap_daemon, "Archive").values()
    assert moved.endswith(sent[1])


def test_imapclient_idle_is_woken_by_a_delivery(imap_daemon):
    client = imapclient_login(imap_daemon)
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.idle()
        sender = threading.Thread(target=deliver, args=(imap_daemon, "wakes the idler"))
        sender.start()
        responses = []

        def woken() -> bool:
            responses.extend(client.idle_check(timeout=1))
            return (1, b"EXISTS") in responses

        try:
            wait_for(woken, timeout=60, what="an untagged EXISTS during IDLE")
        finally:
            sender.join(timeout=60)
            client.idle_done()
        assert client.search(["SUBJECT", "wakes the idler"]) != []
    finally:
        client.logout()
