"""Postfix as the receiving MTA: mail submitted to mailserverd for remote.test is
delivered by our outbound queue to a private Postfix, which stores it in a maildir.

The private instance is the one of test_postfix.py with Postfix's own
virtual delivery agent added: remote.test is a virtual mailbox domain whose
every address lands in one maildir. The test DNS server gives remote.test an
MX on 127.0.0.1, and our outbound port is Postfix's smtpd port.
"""

from __future__ import annotations

import pwd
import shutil

import pytest

from clients import make_message, smtp_send
from conftest import make_daemon, wait_for
from test_postfix import PostfixInstance, require_root

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"


class ReceivingPostfix(PostfixInstance):
    """A private Postfix that accepts remote.test into ``maildir`` (owned by ``postfix``)."""

    def _main_cf(self, relay_port: int, tls_level: str) -> str:
        self.mail_base = self.root / "vmail"
        self.mail_base.mkdir(mode=0o755)
        shutil.chown(self.mail_base, user="postfix")
        account = pwd.getpwnam("postfix")
        return super()._main_cf(relay_port, tls_level) + "\n".join([
            "virtual_mailbox_domains = remote.test",
            f"virtual_mailbox_base = {self.mail_base}",
            "virtual_mailbox_maps = static:inbox/",
            f"virtual_uid_maps = static:{account.pw_uid}",
            f"virtual_gid_maps = static:{account.pw_gid}",
            "virtual_minimum_uid = 1",
            "",
        ])

    def delivered(self) -> list[bytes]:
        new = self.mail_base / "inbox" / "new"
        return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


def test_outbound_delivery_to_a_real_postfix(tmp_path, dns_server):
    require_root()
    postfix = ReceivingPostfix(relay_port=9)  # relayhost unused: remote.test is local to it
    try:
        postfix.start()
        dns_server.add("remote.test", "MX", "10 mx.remote.test.")
        dns_server.add("mx.remote.test", "A", "127.0.0.1")
        a = make_daemon(tmp_path / "a", dns=dns_server,
                        extra_config=f"\n[outbound]\nport = {postfix.smtpd_port}\n")
        a.cli("domain", "add", "example.test")
        a.add_user(ALICE, "alice-secret-1")
        a.start()
        sent = make_message("to postfix")
        smtp_send(a, sent, "bob@remote.test", kind="submission")
        [got] = wait_for(postfix.delivered, timeout=120, what=f"the maildir delivery\n{postfix.log()}")
        body = sent.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
        assert got.endswith(body)  # Postfix stores LF line ends
        assert b"Return-Path: <alice@example.test>" in got
        assert b"by mx.example.test (mailserverd)" in got
        log = a.log()
        assert "state=delivered" in log and "relay=mx.remote.test[127.0.0.1]" in log
        a.stop()
    finally:
        postfix.stop()
