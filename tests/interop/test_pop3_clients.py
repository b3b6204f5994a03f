"""Real POP3 clients against the real daemon: fetchmail, getmail6, curl and mutt.

Each client retrieves over verified TLS (the test CA, never "insecure") and
what it delivers must be the stored messages, byte for byte as far as the
client allows: the clients that write local files use LF line ends, and
some add headers of their own, which are named and removed before the
comparison. Keep modes must leave the maildrop intact, delete modes empty.

Every client runs in its own process group with a temporary HOME and no
stdin, under a timeout; the whole group is killed when the test is done
with it, so nothing outlives a test.
"""

from __future__ import annotations

import mailbox
import os
import pwd
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from clients import imap_fetch_all, make_message, pop_fetch_all, smtp_send
from conftest import make_daemon, require_program

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
CLIENT_TIMEOUT = 120


@pytest.fixture
def pop_daemon(tmp_path):
    """A running daemon like conftest's ``daemon``, whose certificate also has a subject CN.

    fetchmail 6.4 reads a server certificate's subjectAltName only when the
    subject has a commonName, and never matches IP addresses: it is told to
    expect "localhost" (sslcommonname) and the certificate names localhost.
    """
    import trustme

    d = make_daemon(tmp_path / "d")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    ca.cert_pem.write_to_path(str(d.ca_path))
    cert.private_key_pem.write_to_path(str(d.root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d.root / "cert.pem"))
    d.cli("domain", "add", "example.test")
    d.add_user(ALICE, "alice-secret-1")
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.fixture
def stored(pop_daemon) -> list[bytes]:
    """Three messages delivered to alice (one ~60 KiB, all with dot lines), as IMAP returns them."""
    for sent in (make_message("interop one"), make_message("interop big", body_lines=3000),
                 make_message("interop three", body_lines=2)):
        smtp_send(pop_daemon, sent)
    messages = imap_fetch_all(pop_daemon, ALICE)
    assert len(messages) == 3
    return messages


def as_lf(messages: list[bytes]) -> list[bytes]:
    """The messages with LF line ends (as written to local files), sorted."""
    return sorted(m.replace(b"\r\n", b"\n") for m in messages)


def client_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "LANG": "C.UTF-8", "TERM": "xterm"}


def run_client(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run a client to completion in its own process group; kill the group afterwards.

    Returns (exit status, stdout and stderr). A client still running after
    CLIENT_TIMEOUT seconds is killed and the test fails with its output.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{argv[0]} still running after {CLIENT_TIMEOUT}s:\n"
                             f"{out.decode('utf-8', 'replace')}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the client left behind
        except ProcessLookupError:
            pass
    return proc.returncode, out.decode("utf-8", "replace")


def maildrop_count(daemon) -> int:
    """Messages left in alice's maildrop, seen by a fresh POP3 session and by IMAP (which must agree)."""
    popped = pop_fetch_all(daemon, ALICE, implicit=True)
    assert len(imap_fetch_all(daemon, ALICE)) == len(popped)
    return len(popped)


# --- fetchmail -------------------------------------------------------------

@pytest.mark.parametrize("transport", ["pop3s", "stls"])
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "nokeep"])
def test_fetchmail_retrieves_the_stored_messages(pop_daemon, stored, tmp_path, transport, keep):
    fetchmail = require_program("fetchmail", "fetchmail")
    out_dir = tmp_path / "delivered"
    out_dir.mkdir()
    mda = tmp_path / "mda"  # one file per message: fetchmail pipes each message to the MDA
    mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp -p {out_dir} msg.XXXXXX)"\n')
    mda.chmod(0o755)
    if transport == "pop3s":
        port, tls = pop_daemon.ports["pop3s"], "ssl"
    else:
        # Without "ssl", an sslproto makes fetchmail insist on STLS (fetchmail(1)).
        port, tls = pop_daemon.ports["pop3"], 'sslproto "tls1.2+"'
    rc_file = tmp_path / "fetchmailrc"
    rc_file.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 protocol pop3 port {port}\n"
        f'  user "{ALICE}" there with password "{pop_daemon.users[ALICE]}" is "{pwd.getpwuid(os.getuid()).pw_name}" here\n'
        f'  options {"keep fetchall" if keep else "nokeep"} {tls}\n'
        f'  sslcertfile "{pop_daemon.ca_path}" sslcertck sslcommonname "localhost"\n'
        f'  mda "{mda}"\n'
    )
    rc_file.chmod(0o600)  # fetchmail refuses a password file others can read
    env = client_env(tmp_path / "home")
    env["FETCHMAILHOME"] = env["HOME"]
    code, output = run_client([fetchmail, "-f", str(rc_file), "--nodetach", "--invisible", "-v"],
                              env, tmp_path)
    assert code == 0, output  # 0: mail was retrieved
    if transport == "stls":
        assert "STLS" in output, output

    # --invisible: fetchmail adds no Received: header, so the files are the stored bytes.
    delivered = sorted(p.read_bytes() for p in out_dir.iterdir())
    assert delivered == as_lf(stored)
    assert maildrop_count(pop_daemon) == (3 if keep else 0)


# --- getmail6 --------------------------------------------------------------

@pytest.mark.parametrize("delete", [False, True], ids=["keep", "delete"])
def test_getmail_maildir_over_pop3s(pop_daemon, stored, tmp_path, delete):
    getmail = require_program("getmail", "getmail6")
    getmail_dir = tmp_path / "getmail"
    getmail_dir.mkdir()
    with tempfile.TemporaryDirectory(prefix="getmail-maildir-") as maildir_root:
        maildir = Path(maildir_root) / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        deliver_as = ""
        if os.geteuid() == 0:
            # getmail refuses to deliver as root: its delivery child switches to
            # "nobody", which must own the Maildir (in a dir outside pytest's 0700 tree).
            nobody = pwd.getpwnam("nobody")
            os.chmod(maildir_root, 0o755)
            for path in [maildir] + [maildir / sub for sub in ("cur", "new", "tmp")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            deliver_as = "user = nobody\n"
        (getmail_dir / "getmailrc").write_text(
            "[retriever]\n"
            "type = SimplePOP3SSLRetriever\n"
            "server = 127.0.0.1\n"
            f"port = {pop_daemon.ports['pop3s']}\n"
            f"username = {ALICE}\n"
            f"password = {pop_daemon.users[ALICE]}\n"
            f"ca_certs = {pop_daemon.ca_path}\n"
            "\n[destination]\n"
            "type = Maildir\n"
            f"path = {maildir}/\n"
            f"{deliver_as}"
            "\n[options]\n"
            "read_all = true\n"
            f"delete = {'true' if delete else 'false'}\n"
            "received = false\n"
            "delivered_to = false\n"
        )
        (getmail_dir / "getmailrc").chmod(0o600)
        code, output = run_client([getmail, "--getmaildir", str(getmail_dir), "--rcfile", "getmailrc"],
                                  client_env(tmp_path / "home"), tmp_path)
        assert code == 0, output
        assert "3 messages" in output and "error" not in output.lower(), output
        assert not list((maildir / "cur").iterdir())
        delivered = [p.read_bytes() for p in (maildir / "new").iterdir()]

    # getmail's Maildir writer puts the envelope sender first; POP3 has none to give.
    prefix = b"Return-Path: <unknown>\n"
    assert all(m.startswith(prefix) for m in delivered), [m[:80] for m in delivered]
    assert sorted(m[len(prefix):] for m in delivered) == as_lf(stored)
    assert maildrop_count(pop_daemon) == (0 if delete else 3)


# --- curl ------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["pop3", "pop3s"])
def test_curl_retrieves_each_message_and_the_listing(pop_daemon, stored, tmp_path, scheme):
    curl = require_program("curl", "curl")
    port = pop_daemon.ports[scheme]
    base = [curl, "--silent", "--show-error", "--cacert", str(pop_daemon.ca_path),
            "--user", f"{ALICE}:{pop_daemon.users[ALICE]}", "--max-time", str(CLIENT_TIMEOUT)]
    if scheme == "pop3":
        base.append("--ssl-reqd")  # STLS, or fail
    env = client_env(tmp_path / "home")
    for number, message in enumerate(stored, start=1):
        out = tmp_path / f"retr-{number}"
        code, output = run_client(base + ["--output", str(out), f"{scheme}://127.0.0.1:{port}/{number}"],
                                  env, tmp_path)
        assert code == 0, output
        assert out.read_bytes() == message  # curl undoes the dot-stuffing and keeps CRLF

    code, output = run_client(base + [f"{scheme}://127.0.0.1:{port}/"], env, tmp_path)
    assert code == 0, output
    assert output == "".join(f"{n} {len(m)}\r\n" for n, m in enumerate(stored, start=1))  # LIST
    assert maildrop_count(pop_daemon) == 3


def test_curl_without_the_ca_refuses_the_server(pop_daemon, stored, tmp_path):
    """The TLS checks above are real: a client that does not trust the CA gets nothing."""
    curl = require_program("curl", "curl")
    other_ca = tmp_path / "other-ca.pem"
    import trustme

    trustme.CA().cert_pem.write_to_path(str(other_ca))
    code, output = run_client(
        [curl, "--silent", "--show-error", "--cacert", str(other_ca), "--user", f"{ALICE}:x",
         f"pop3s://127.0.0.1:{pop_daemon.ports['pop3s']}/1"],
        client_env(tmp_path / "home"), tmp_path)
    assert code == 60, output  # CURLE_PEER_FAILED_VERIFICATION


# --- mutt ------------------------------------------------------------------

#: Fields mutt's mbox writer adds after the header of each message it stores.
MUTT_ADDED_FIELDS = (b"Status: ", b"Content-Length: ", b"Lines: ")


def without_mutt_fields(message: bytes) -> bytes:
    """``message`` without the fields mutt adds; checks Content-Length and Lines first."""
    head, body = message.split(b"\n\n", 1)
    kept = []
    for line in head.split(b"\n"):
        if line.startswith(b"Content-Length: "):
            assert int(line.split()[1]) == len(body), line
        if line.startswith(b"Lines: "):
            assert int(line.split()[1]) == body.count(b"\n"), line
        if not line.startswith(MUTT_ADDED_FIELDS):
            kept.append(line)
    return b"\n".join(kept) + b"\n\n" + body


@pytest.mark.parametrize("delete", [False, True], ids=["keep", "delete"])
def test_mutt_fetch_mail_into_an_mbox(pop_daemon, stored, tmp_path, delete):
    mutt = require_program("mutt", "mutt")
    script = require_program("script", "bsdutils")  # mutt needs a terminal: script(1) gives it a pty
    spool = tmp_path / "spool.mbox"
    spool.write_bytes(b"")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f'set pop_host="pops://127.0.0.1:{pop_daemon.ports["pop3s"]}"\n'
        f'set pop_user="{ALICE}"\n'
        f'set pop_pass="{pop_daemon.users[ALICE]}"\n'
        f"set pop_delete={'yes' if delete else 'no'}\n"
        "set pop_last=no\n"
        f'set ssl_ca_certificates_file="{pop_daemon.ca_path}"\n'
        f'set certificate_file="{tmp_path / "mutt-certs"}"\n'
        f'set spoolfile="{spool}"\n'
        "set mbox_type=mbox\n"
        f'set folder="{tmp_path}"\n'
        "set quit=yes\n"
        "set move=no\n"
    )
    muttrc.chmod(0o600)
    command = f"{mutt} -n -F {muttrc} -e 'push <fetch-mail><quit>'"
    code, output = run_client([script, "-qec", command, "/dev/null"], client_env(tmp_path / "home"), tmp_path)
    assert code == 0, output

    box = mailbox.mbox(str(spool), create=False)
    try:
        delivered = [box.get_bytes(key) for key in box.keys()]
    finally:
        box.close()
    assert sorted(without_mutt_fields(m) for m in delivered) == as_lf(stored)
    assert maildrop_count(pop_daemon) == (0 if delete else 3)
