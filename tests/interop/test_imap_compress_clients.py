"""Real clients syncing with COMPRESS=DEFLATE (RFC 4978) on: mbsync and offlineimap.

mbsync (isync 1.4) sends COMPRESS DEFLATE by itself when the server
announces it; offlineimap does with ``usecompression = yes``. That the
connection really was compressed is read from the daemon's log (one
``compress`` line per connection that turned it on); that the sync worked
is the usual comparison of both sides (see test_imap_clients).
"""

from __future__ import annotations

import pytest

from conftest import require_program
from test_imap_clients import (
    ALICE,
    deliver,
    imap_daemon,  # noqa: F401 (the fixture)
    local_by_message_id,
    maildir_deliver,
    message_id,
    run_mbsync,
    run_offlineimap,
    server_by_message_id,
    write_mbsyncrc,
    without_field,
    write_offlineimaprc,
)
from clients import make_message

pytestmark = pytest.mark.e2e

COMPRESSED = f"compress protocol=imap mechanism=DEFLATE ip=127.0.0.1 user={ALICE}"


def test_mbsync_syncs_both_ways_compressed(imap_daemon, tmp_path):  # noqa: F811
    mbsync = require_program("mbsync", "isync")
    deliver(imap_daemon, "compressed one", "compressed two")
    maildir = tmp_path / "Maildir"
    maildir.mkdir()
    rc = write_mbsyncrc(imap_daemon, tmp_path, maildir, "imaps")
    run_mbsync(mbsync, rc, tmp_path)
    assert imap_daemon.log().count(COMPRESSED) >= 1
    server = server_by_message_id(imap_daemon)
    assert len(server) == 2
    assert local_by_message_id(maildir / "INBOX", b"X-TUID") == server

    # An upload (APPEND) goes compressed too, and a second sync mirrors it.
    local_only = make_message("filed locally, sent compressed").replace(b"\r\n", b"\n")
    maildir_deliver(maildir / "INBOX", local_only, "1700000000.2_1.local")
    compressed_before = imap_daemon.log().count(COMPRESSED)
    run_mbsync(mbsync, rc, tmp_path)
    assert imap_daemon.log().count(COMPRESSED) > compressed_before
    server = server_by_message_id(imap_daemon)
    assert len(server) == 3
    # mbsync adds its X-TUID field to the uploaded copy only.
    flags, uploaded = server.pop(message_id(local_only))
    assert (flags, without_field(uploaded, b"X-TUID")) == (frozenset(), local_only)
    local = local_by_message_id(maildir / "INBOX", b"X-TUID")
    assert local.pop(message_id(local_only)) == (frozenset(), local_only)
    assert local == server


def test_offlineimap_syncs_compressed(imap_daemon, tmp_path):  # noqa: F811
    offlineimap = require_program("offlineimap", "offlineimap3")
    deliver(imap_daemon, "offlineimap compressed one", "offlineimap compressed two")
    mail = tmp_path / "Mail"
    rc = write_offlineimaprc(imap_daemon, tmp_path, mail, "usecompression = yes\n")
    run_offlineimap(offlineimap, rc, tmp_path)
    assert imap_daemon.log().count(COMPRESSED) >= 1
    server = server_by_message_id(imap_daemon)
    assert len(server) == 2
    assert local_by_message_id(mail / "INBOX") == server
