"""IMAP AUTHENTICATE, ENABLE, ID, IDLE and APPEND against the sans-I/O session.

AUTHENTICATE, ENABLE, ID and IDLE without a mailbox run on the in-memory
fakes and a Clock; APPEND and IDLE's change reports use the real LMDB store
(its writes fire through the reactor, so those tests run under pytest-twisted).
"""

from __future__ import annotations

import base64
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from mailserverd import __version__
from mailserverd.auth.accounts import AuthThrottled, AuthUnavailable
from mailserverd.imap import session as imap_session
from mailserverd.imap.commands import append, authenticate
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.session import ImapSession
from mailserverd.limits import MIB, Limits

from imap_real_store import open_store
from imap_fakes import PASSWORD, USER, FakeAuthenticator, Harness, RecordingOutput, make_ctx
from test_sasl import ScramClient


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


PLAIN_IR = b64(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())


# ---------------------------------------------------------------- AUTHENTICATE


def test_authenticate_plain_with_initial_response():
    h = Harness()
    reply = h.c(b"a AUTHENTICATE PLAIN " + PLAIN_IR + b"\r\n")
    assert reply.startswith(b"a OK [CAPABILITY IMAP4rev1 ") and reply.endswith(b"] Authenticated\r\n")
    assert h.session.user == USER
    assert h.auth.calls == [(USER, PASSWORD, "192.0.2.7", "PLAIN")]
    assert h.c(b"b SELECT INBOX\r\n").endswith(b"b OK [READ-WRITE] Select completed\r\n")


def test_authenticate_plain_with_a_challenge():
    h = Harness()
    assert h.c(b"a authenticate plain\r\n") == b"+ \r\n"
    assert h.c(PLAIN_IR + b"\r\n").startswith(b"a OK [CAPABILITY ")
    assert h.session.user == USER


def test_a_response_sent_with_the_command_is_answered_after_the_challenge():
    h = Harness()
    reply = h.c(b"a AUTHENTICATE PLAIN\r\n" + PLAIN_IR + b"\r\nb NOOP\r\n")
    assert reply.startswith(b"+ \r\na OK [CAPABILITY ")
    assert reply.endswith(b"b OK NOOP completed\r\n")


def test_authenticate_wrong_password_throttled_unavailable():
    h = Harness()
    wrong = b64(b"\0" + USER.encode() + b"\0nope")
    assert h.c(b"a AUTHENTICATE PLAIN " + wrong + b"\r\n") == (
        b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n")
    h.auth.error = AuthThrottled("x")
    assert h.c(b"b AUTHENTICATE PLAIN " + PLAIN_IR + b"\r\n").startswith(b"b NO [UNAVAILABLE] ")
    h.auth.error = AuthUnavailable("x")
    assert h.c(b"c AUTHENTICATE PLAIN " + PLAIN_IR + b"\r\n").startswith(b"c NO [UNAVAILABLE] ")
    assert h.session.user is None


def test_authenticate_foreign_authorization_identity():
    h = Harness()
    other = b64(b"bob@example.test\0" + USER.encode() + b"\0" + PASSWORD.encode())
    assert h.c(b"a AUTHENTICATE PLAIN " + other + b"\r\n") == (
        b"a NO [AUTHORIZATIONFAILED] Not allowed to act as that user\r\n")


def test_authenticate_cancel_and_bad_base64_are_bad():
    h = Harness()
    assert h.c(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert h.c(b"*\r\n") == b"a BAD Authentication cancelled\r\n"
    assert h.c(b"b AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert h.c(b"not base64!\r\n") == b"b BAD Invalid base64 in authentication response\r\n"
    assert h.c(b"c AUTHENTICATE PLAIN not-base64\r\n") == b"c BAD Invalid base64 in initial response\r\n"
    # "=" is an empty initial response (RFC 4959 §3): not a PLAIN message.
    assert h.c(b"d AUTHENTICATE PLAIN =\r\n") == b"d BAD Malformed authentication message\r\n"
    assert h.session.user is None
    assert h.c(b"e NOOP\r\n") == b"e OK NOOP completed\r\n"


def test_authenticate_mechanism_refusals():
    h = Harness()
    assert h.c(b"a AUTHENTICATE X-FOO\r\n") == b"a NO Unsupported authentication mechanism\r\n"
    # LOGIN exists in the SASL module but IMAP does not offer it.
    assert h.c(b"b AUTHENTICATE LOGIN\r\n") == b"b NO Unsupported authentication mechanism\r\n"
    assert h.c(b"c AUTHENTICATE\r\n") == b"c BAD Expected a space between arguments\r\n"
    assert h.c(b"d AUTHENTICATE PLAIN a b\r\n") == b"d BAD Unexpected extra arguments\r\n"
    assert Harness(tls_active=False).c(b"e AUTHENTICATE PLAIN\r\n") == (
        b"e NO [PRIVACYREQUIRED] Authenticate over TLS (use STARTTLS)\r\n")


def test_authenticate_before_tls_when_plaintext_is_allowed():
    h = Harness(tls_active=False, allow_plaintext=True)
    assert h.c(b"a AUTHENTICATE PLAIN " + PLAIN_IR + b"\r\n").startswith(b"a OK ")


def test_authenticate_only_before_login():
    h = Harness()
    h.login()
    assert h.c(b"a AUTHENTICATE PLAIN " + PLAIN_IR + b"\r\n") == (
        b"a BAD AUTHENTICATE is not allowed in this state\r\n")


def test_a_response_line_with_a_literal_marker_is_not_a_literal():
    h = Harness()
    assert h.c(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    # No "+ Ready for literal data": the line goes to the exchange as it is.
    assert h.c(b"abc {5}\r\n") == b"a BAD Invalid base64 in authentication response\r\n"
    assert h.c(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


def test_a_literal_pushed_into_a_response_line_closes():
    h = Harness()
    assert h.c(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    reply = h.c(b"abc {9}\r\nb LOGOUT\r\n")
    assert reply.startswith(b"a BAD Invalid base64")
    assert b"b OK" not in reply and h.closed


def test_commands_wait_for_a_pending_authentication():
    h = Harness()
    h.auth.hold = True
    assert h.c(b"a AUTHENTICATE PLAIN " + PLAIN_IR + b"\r\nb SELECT INBOX\r\n") == b""
    h.auth.release()
    reply = h.out.take()
    assert reply.startswith(b"a OK [CAPABILITY") and reply.endswith(b"b OK [READ-WRITE] Select completed\r\n")


def scram_to_final(h: Harness, client: ScramClient, *, initial: bool) -> bytes:
    """Run AUTHENTICATE SCRAM-SHA-256 up to the server-final challenge; return that line."""
    if initial:
        challenge = h.c(b"a AUTHENTICATE SCRAM-SHA-256 " + b64(client.first()) + b"\r\n")
    else:
        assert h.c(b"a AUTHENTICATE SCRAM-SHA-256\r\n") == b"+ \r\n"
        challenge = h.c(b64(client.first()) + b"\r\n")
    assert challenge.startswith(b"+ ") and challenge.endswith(b"\r\n")
    return h.c(b64(client.final(base64.b64decode(challenge[2:-2], validate=True))) + b"\r\n")


@pytest.mark.parametrize("initial", [False, True])
def test_authenticate_scram(initial):
    h = Harness()
    client = ScramClient(USER, PASSWORD)
    server_final = scram_to_final(h, client, initial=initial)
    assert client.server_final_ok(base64.b64decode(server_final[2:-2], validate=True))
    assert h.session.user is None  # not before the client's empty answer
    assert h.c(b"\r\n").startswith(b"a OK [CAPABILITY ")
    assert h.session.user == USER


@pytest.mark.parametrize("answer", [b"*", b"Zm9v"])
def test_scram_final_challenge_needs_an_empty_answer(answer):
    h = Harness()
    assert scram_to_final(h, ScramClient(USER, PASSWORD), initial=True).startswith(b"+ ")
    assert h.c(answer + b"\r\n") == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert h.session.user is None


def test_scram_wrong_password():
    h = Harness()
    assert scram_to_final(h, ScramClient(USER, "wrong"), initial=False) == (
        b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n")


def test_auth_capabilities():
    h = Harness()
    assert authenticate.auth_capabilities(h.session) == ["AUTH=SCRAM-SHA-256", "AUTH=PLAIN"]
    assert authenticate.auth_capabilities(Harness(tls_active=False).session) == []
    h.login()
    assert authenticate.auth_capabilities(h.session) == []


# ---------------------------------------------------------------- ENABLE


@pytest.fixture
def announced(monkeypatch):
    """Announce the enable-able extensions, as the session will once they are done."""
    monkeypatch.setattr(imap_session, "BASE_CAPABILITIES", imap_session.BASE_CAPABILITIES + (
        "ENABLE", "CONDSTORE", "QRESYNC", "IMAP4rev2", "UTF8=ACCEPT"))


def test_enable_turns_on_announced_extensions(announced):
    h = Harness()
    h.login()
    assert h.c(b"a ENABLE condstore X-UNKNOWN CONDSTORE\r\n") == (
        b"* ENABLED CONDSTORE\r\na OK Enabled\r\n")
    # Additive; each ENABLED lists only what this command enabled (RFC 5161 §3.1).
    assert h.c(b"b ENABLE CONDSTORE IMAP4rev2 UTF8=ACCEPT\r\n") == (
        b"* ENABLED IMAP4rev2 UTF8=ACCEPT\r\nb OK Enabled\r\n")
    assert h.session.enabled == {"CONDSTORE", "IMAP4REV2", "UTF8=ACCEPT"}
    assert h.session.utf8_names


def test_enable_ignores_extensions_not_announced():
    h = Harness()
    h.login()
    assert h.c(b"a ENABLE X-NOT-ANNOUNCED METADATA\r\n") == b"* ENABLED\r\na OK Enabled\r\n"
    assert h.session.enabled == set()


def test_enable_syntax_and_states(announced):
    h = Harness()
    assert h.c(b"a ENABLE CONDSTORE\r\n") == b"a BAD Log in first\r\n"
    h.login()
    assert h.c(b"b ENABLE\r\n") == b"b BAD Expected a space between arguments\r\n"
    assert h.c(b"c ENABLE (CONDSTORE)\r\n") == b"c BAD Expected an atom\r\n"
    h.c(b"s SELECT INBOX\r\n")
    assert h.c(b"d ENABLE CONDSTORE\r\n") == b"d BAD ENABLE is not allowed in this state\r\n"


# ---------------------------------------------------------------- ID


def server_id() -> bytes:
    return b'* ID ("name" "mailserverd" "version" "' + __version__.encode() + b'")\r\n'


def test_id_in_any_state():
    h = Harness()
    assert h.c(b'a ID ("name" "client" "version" NIL)\r\n') == server_id() + b"a OK ID completed\r\n"
    assert h.c(b"b ID NIL\r\n") == server_id() + b"b OK ID completed\r\n"
    h.login()
    assert h.c(b"c id ()\r\n") == server_id() + b"c OK ID completed\r\n"


def test_id_with_literals_and_long_values_is_accepted():
    h = Harness()
    value = b"v" * 5000
    assert h.c(b'a ID ("name" {%d+}\r\n' % len(value) + value + b")\r\n").endswith(b"a OK ID completed\r\n")


def test_id_syntax_errors():
    h = Harness()
    assert h.c(b"a ID\r\n") == b"a BAD Expected a space between arguments\r\n"
    assert h.c(b'b ID ("name")\r\n') == b"b BAD Expected a space between arguments\r\n"
    assert h.c(b'c ID ("name" "x" )\r\n') == b"c BAD Expected a string\r\n"
    assert h.c(b"d ID FOO\r\n") == b"d BAD Expected a parenthesized list or NIL\r\n"
    pairs = b" ".join(b'"f%d" "v"' % n for n in range(31))
    assert h.c(b"e ID (" + pairs + b")\r\n") == b"e BAD More than 30 ID fields\r\n"


# ---------------------------------------------------------------- IDLE without a mailbox


def test_idle_until_done():
    h = Harness()
    h.login()
    assert h.c(b"a IDLE\r\n") == b"+ idling\r\n"
    h.clock.advance(5)
    assert h.c(b"b NOOP\r\n") == b"a BAD Expected DONE\r\n"
    assert h.c(b"c IDLE\r\n") == b"+ idling\r\n"
    assert h.c(b"done\r\nd NOOP\r\n") == b"c OK IDLE terminated\r\nd OK NOOP completed\r\n"


def test_idle_syntax_and_state():
    h = Harness()
    assert h.c(b"a IDLE\r\n") == b"a BAD Log in first\r\n"
    h.login()
    assert h.c(b"b IDLE now\r\n") == b"b BAD Unexpected extra arguments\r\n"


def test_idle_ends_with_the_autologout_timer():
    h = Harness(imap_idle_timeout=60)
    h.login()
    assert h.c(b"a IDLE\r\n") == b"+ idling\r\n"
    h.clock.advance(60)
    assert h.out.take() == b"* BYE Autologout; idle for too long\r\n"
    assert h.closed


# ---------------------------------------------------------------- APPEND argument parsing


def parse(arguments: bytes, *literals: bytes):
    """Parse APPEND's messages from a command's text after the mailbox (lines split at literals)."""
    lines = arguments.split(b"\n")
    segments: list[bytes] = []
    for index, line in enumerate(lines):
        segments.append(line)
        if index < len(literals):
            segments.append(literals[index])
    return append.parse_messages(ArgCursor(tuple(segments)))


def test_parse_messages_with_flags_and_dates():
    messages = parse(b' (\\seen $Label) " 2-Jan-2024 03:04:05 +0100" {3}\n {2}\n', b"abc", b"de")
    assert messages == [
        append.AppendMessage(b"abc", ("\\Seen", "$Label"), 1704164645 - 3600),
        append.AppendMessage(b"de", (), None),
    ]


@pytest.mark.parametrize("arguments", [
    b" (\\Recent) {3}\n",
    b" (\\Bogus) {3}\n",
    b" (\\*) {3}\n",
    b' "31-Feb-2024 00:00:00 +0000" {3}\n',
    b' "1-Foo-2024 00:00:00 +0000" {3}\n',
    b' "01-Jan-1960 00:00:00 +0000" {3}\n',
    b" ~ {3}\n",
    b" abc",
    b" {3}\n ",
    b"",
])
def test_parse_messages_refusals(arguments):
    with pytest.raises(ParseError):
        parse(arguments, b"abc")


def test_parse_date_time():
    assert append.parse_date_time(b"17-Jul-1996 02:44:25 -0700") == 837596665
    assert append.parse_date_time(b" 1-jan-1970 00:00:00 +0000") == 0


# ---------------------------------------------------------------- with the real store

LIMITS = dict(store_map_size=32 * MIB, message_size_max=65536)
MESSAGE = b"From: a@example.test\r\nSubject: hi\r\n\r\nHello\r\n"


class StoreHarness:
    """A logged-in session on the real store; ``c`` sends bytes, ``reply`` waits for a tag."""

    def __init__(self, store):
        self.store = store
        self.ctx = make_ctx(store, FakeAuthenticator({USER: PASSWORD}), **LIMITS)
        self.clock = self.ctx.clock
        self.out = RecordingOutput()
        self.session = ImapSession(self.ctx, self.out, client_ip="192.0.2.7", tls_active=True)
        self.session.start()
        self.out.take()
        self.session.data_received(b'L LOGIN alice@example.test "correct horse"\r\n')
        assert self.out.take().startswith(b"L OK")

    def c(self, data: bytes) -> bytes:
        self.session.data_received(data)
        return self.out.take()

    async def reply(self, data: bytes, tag: bytes) -> bytes:
        """Send ``data``; collect output until the tagged reply of ``tag`` (deadline 30 s)."""
        collected = self.c(data)
        deadline = time.monotonic() + 30
        while b"\r\n" + tag + b" " not in b"\r\n" + collected:
            assert time.monotonic() < deadline, collected
            await deferLater(reactor, 0.005, lambda: None)
            collected += self.out.take()
        return collected

    def inbox(self):
        return self.store.get_mailbox(USER, "INBOX")


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path, Limits(**LIMITS))


@pytest_twisted.ensureDeferred
async def test_append_stores_flags_and_date(store):
    h = StoreHarness(store)
    reply = await h.reply(b'a APPEND inbox (\\Seen $Work) "17-Jul-1996 02:44:25 -0700" {%d+}\r\n'
                          % len(MESSAGE) + MESSAGE + b"\r\n", b"a")
    box = h.inbox()
    assert reply == b"a OK [APPENDUID %d 1] Append completed\r\n" % box.uidvalidity
    message = store.get_message(USER, box.mailbox_id, 1)
    assert message.flags == {"\\Seen", "$Work"} and message.internaldate == 837596665
    assert store.read_message(USER, message.blob_id) == MESSAGE


@pytest_twisted.ensureDeferred
async def test_multiappend_with_synchronizing_literals(store):
    h = StoreHarness(store)
    assert h.c(b"a APPEND Drafts {%d}\r\n" % len(MESSAGE)) == b"+ Ready for literal data\r\n"
    assert h.c(MESSAGE + b" (\\Draft) {%d}\r\n" % len(MESSAGE)) == b"+ Ready for literal data\r\n"
    reply = await h.reply(MESSAGE + b"\r\n", b"a")
    box = store.get_mailbox(USER, "Drafts")
    assert reply == b"a OK [APPENDUID %d 1:2] Append completed\r\n" % box.uidvalidity
    assert [m.flags for m in store.list_messages(USER, box.mailbox_id)] == [frozenset(), {"\\Draft"}]


@pytest_twisted.ensureDeferred
async def test_multiappend_is_all_or_nothing(store):
    await store.set_quota(USER, len(MESSAGE) + 10)
    h = StoreHarness(store)
    reply = await h.reply(b"a APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n"
                          % (len(MESSAGE), MESSAGE, len(MESSAGE), MESSAGE), b"a")
    assert reply == b"a NO [OVERQUOTA] Quota exceeded\r\n"
    assert store.list_messages(USER, h.inbox().mailbox_id) == []
    assert store.used_bytes(USER) == 0


@pytest_twisted.ensureDeferred
async def test_append_to_a_missing_mailbox_says_trycreate(store):
    h = StoreHarness(store)
    reply = await h.reply(b"a APPEND Nope {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE), b"a")
    assert reply == b"a NO [TRYCREATE] Mailbox doesn't exist\r\n"


@pytest_twisted.ensureDeferred
async def test_append_refusals(store):
    h = StoreHarness(store)
    assert h.c(b"a APPEND INBOX (\\Recent) {3+}\r\nabc\r\n") == b"a BAD Invalid system flag \\Recent\r\n"
    assert h.c(b"b APPEND INBOX {0+}\r\n\r\n") == b"b NO Can't save an empty message\r\n"
    assert h.c(b"c APPEND INBOX\r\n") == b"c BAD Expected a space between arguments\r\n"
    assert h.c(b'd APPEND INBOX "x"\r\n') == b"d BAD Invalid date-time\r\n"
    assert store.list_messages(USER, h.inbox().mailbox_id) == []


@pytest_twisted.ensureDeferred
async def test_append_over_the_limit_is_refused_before_it_is_sent(store):
    h = StoreHarness(store)
    # RFC 7889: NO [TOOBIG], no continuation, the command is not a bad one.
    assert h.c(b"a APPEND INBOX {65537}\r\n") == b"a NO [TOOBIG] Message too big\r\n"
    # A non-synchronizing one is read and thrown away (RFC 7888 §4), never run.
    big = b"b NOOP\r\n" * (65537 // 8 + 1)
    assert h.c(b"b APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n") == b"b NO [TOOBIG] Message too big\r\n"
    assert h.c(b"c NOOP\r\n") == b"c OK NOOP completed\r\n"
    # At the limit it is taken.
    exact = b"Subject: x\r\n\r\n" + b"x" * (65536 - 14)
    reply = await h.reply(b"d APPEND INBOX {65536+}\r\n" + exact + b"\r\n", b"d")
    assert reply.startswith(b"d OK [APPENDUID ")


@pytest_twisted.ensureDeferred
async def test_multiappend_total_is_bounded(store):
    h = StoreHarness(store)
    h.session.limits = Limits(**LIMITS, imap_append_bytes_max=100000)
    assert h.c(b"a APPEND INBOX {60000}\r\n") == b"+ Ready for literal data\r\n"
    assert h.c(b"x" * 60000 + b" {60000}\r\n") == b"a NO [TOOBIG] Message too big\r\n"


@pytest_twisted.ensureDeferred
async def test_append_to_the_selected_mailbox_sends_exists(store):
    h = StoreHarness(store)
    assert h.c(b"s SELECT INBOX\r\n").endswith(b"s OK [READ-WRITE] Select completed\r\n")
    reply = await h.reply(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE), b"a")
    # RFC 3501 §6.3.11: appended messages are \Recent; this session is told first, so it has it.
    assert reply.startswith(b"* 1 EXISTS\r\n* 1 RECENT\r\na OK [APPENDUID ")
    assert h.c(b"f FETCH 1 FLAGS\r\n") == b"* 1 FETCH (FLAGS (\\Recent))\r\nf OK Fetch completed\r\n"


# ---------------------------------------------------------------- IDLE with the real store


async def until_output(h: StoreHarness, expected: bytes) -> None:
    """Tick the session's clock until ``expected`` has been written (deadline 30 s)."""
    collected = b""
    deadline = time.monotonic() + 30
    while collected != expected:
        assert time.monotonic() < deadline and expected.startswith(collected), collected
        h.clock.advance(1)
        await deferLater(reactor, 0.005, lambda: None)
        collected += h.out.take()


@pytest_twisted.ensureDeferred
async def test_idle_pushes_new_messages_flag_changes_and_expunges(store):
    h = StoreHarness(store)
    await store.append(USER, "INBOX", MESSAGE)
    await h.reply(b"s SELECT INBOX\r\n", b"s")  # claims message 1 as \Recent
    assert h.c(b"a IDLE\r\n") == b"+ idling\r\n"
    h.clock.advance(3)
    assert h.out.take() == b""  # nothing changed: nothing sent
    box_id = h.inbox().mailbox_id
    await store.append(USER, "INBOX", MESSAGE)
    await until_output(h, b"* 2 EXISTS\r\n* 2 RECENT\r\n")
    await store.store_flags(USER, box_id, [1], "+", ["\\Seen"])
    await until_output(h, b"* 1 FETCH (FLAGS (\\Recent \\Seen))\r\n")
    await store.store_flags(USER, box_id, [1], "+", ["\\Deleted"])
    await until_output(h, b"* 1 FETCH (FLAGS (\\Deleted \\Recent \\Seen))\r\n")
    await store.expunge(USER, box_id, [1])
    await until_output(h, b"* 1 EXPUNGE\r\n")
    assert h.c(b"DONE\r\n") == b"a OK IDLE terminated\r\n"
    h.clock.advance(5)
    await store.append(USER, "INBOX", MESSAGE)
    h.clock.advance(5)
    assert h.out.take() == b""  # no more pushes after DONE


@pytest_twisted.ensureDeferred
async def test_idle_reports_changes_made_before_it(store):
    h = StoreHarness(store)
    h.c(b"s SELECT INBOX\r\n")
    await store.append(USER, "INBOX", MESSAGE)
    assert h.c(b"a IDLE\r\n") == b"* 1 EXISTS\r\n+ idling\r\n"
    await until_output(h, b"* 1 RECENT\r\n")  # once the claim of message 1 is written
    assert h.c(b"DONE\r\n") == b"a OK IDLE terminated\r\n"
