"""The SMTP client for outbound delivery: a sans-I/O core and a thin Twisted adapter.

:class:`ClientCore` takes one message for one server and says what to send
(:class:`Send`, :class:`StartTLS`, :class:`SendContent`, :class:`SetTimer`,
:class:`Close`) as replies come in; it ends with a :class:`ClientResult` that
judges every recipient by its own reply (RFC 5321 §4.2, §6.1: 2xx delivered,
4xx deferred, 5xx bounced). It never touches a socket or a clock: the
adapter (:class:`SMTPClientProtocol`, :func:`deliver_message`) carries the
actions out, runs the timers and streams the content dot-stuffed.

What it speaks: EHLO with HELO as fallback (RFC 5321 §4.1.1.1), opportunistic
STARTTLS (RFC 3207) then EHLO again, PIPELINING (RFC 2920) when offered,
SIZE (RFC 1870: a message larger than the peer's limit is not sent, it
bounces), BODY=8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531) when the message
needs them, DSN parameters (RFC 3461) when the peer supports DSN. Bad peers
(no answer, garbage, an endless line, a dropped connection) end in a
deferral with a reason; before MAIL is sent they also say "try the next
address" (:attr:`ClientResult.try_next`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Union

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from mailserverd.mail.dotstuff import stuff_chunks
from mailserverd.smtp.session import Send, StartTLS  # the server's actions: write, start TLS
from mailserverd.tls import describe

#: Octets of the message read and dot-stuffed per write while sending DATA.
CONTENT_CHUNK = 64 * 1024

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")


# --- replies


@dataclass(frozen=True)
class PeerReply:
    """A reply that decides a recipient: ``code`` (``451``), its ``lines``
    of text, and ``remote``: whether the peer sent it (False: our own
    reason, e.g. a timeout, worded as a reply)."""

    code: int
    lines: tuple[str, ...]
    remote: bool = True

    @property
    def enhanced(self) -> str:
        """The RFC 3463 code at the start of the first line, or ``""``."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        return match.group(0) if match else ""

    @property
    def kind(self) -> str:
        """``delivered`` (2xx), ``deferred`` (4xx or anything unexpected) or ``bounced`` (5xx)."""
        return {2: "delivered", 5: "bounced"}.get(self.code // 100, "deferred")

    def text(self) -> str:
        """One line: ``"550 5.1.1 No such user"`` (lines joined by spaces)."""
        return f"{self.code} " + " ".join(line.strip() for line in self.lines)


def local_reply(code: int, enhanced: str, text: str) -> PeerReply:
    """A reason of ours for a recipient, shaped as a reply."""
    return PeerReply(code, (f"{enhanced} {text}",), remote=False)


class PeerProtocolError(Exception):
    """The peer sent something that is not an SMTP reply (RFC 5321 §4.2)."""


_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|$)(.*)", re.S)


class ReplyParser:
    """Splits bytes from the server into replies (RFC 5321 §4.2.1).

    ``feed(data)`` returns the replies completed by ``data``; raises
    PeerProtocolError for a line that is not a reply, a multi-line reply
    whose lines disagree on the code, a line over ``line_max`` octets (also
    before its end arrives, so an endless line cannot grow memory) or a
    reply of more than ``lines_max`` lines.
    """

    def __init__(self, line_max: int, lines_max: int):
        self._line_max = line_max
        self._lines_max = lines_max
        self._buffer = bytearray()
        self._code: bytes | None = None
        self._lines: list[str] = []

    def feed(self, data: bytes) -> list[PeerReply]:
        self._buffer += data
        replies: list[PeerReply] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._line_max:
                    raise PeerProtocolError(f"reply line longer than {self._line_max} octets")
                return replies
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[:end + 1]
            if len(line) > self._line_max:
                raise PeerProtocolError(f"reply line longer than {self._line_max} octets")
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)

    def _line(self, line: bytes) -> PeerReply | None:
        match = _REPLY_LINE.fullmatch(line)
        if match is None:
            raise PeerProtocolError(f"not an SMTP reply: {line[:60]!r}")
        code, separator, text = match.groups()
        if self._code is not None and code != self._code:
            raise PeerProtocolError("multi-line reply with mixed codes")
        self._code = code
        self._lines.append(text.decode("utf-8", "replace"))
        if len(self._lines) > self._lines_max:
            raise PeerProtocolError(f"reply of more than {self._lines_max} lines")
        if separator == b"-":
            return None
        reply = PeerReply(int(code), tuple(self._lines) or ("",))
        self._code, self._lines = None, []
        return reply


# --- what the core is given and gives back


@dataclass(frozen=True)
class OutboundRecipient:
    """A forward-path with its RFC 3461 parameters (``notify`` () = not given)."""

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str = ""


@dataclass(frozen=True)
class OutboundMessage:
    """One message to hand to one server: envelope, RFC 3461/6152/6531 parameters, content."""

    sender: str
    recipients: tuple[OutboundRecipient, ...]
    content: bytes
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str = ""
    envid: str = ""


@dataclass
class ClientResult:
    """How one attempt ended: ``replies`` maps each recipient address to the
    reply that decides it; ``try_next`` says no recipient was judged by this
    server itself (connection, greeting, EHLO or TLS failed: another address
    may do better); ``tls_failed`` that the TLS handshake failed;
    ``tls`` describes the TLS session (``""``: none); ``dsn`` that the peer
    offered DSN (RFC 3461 §5.2.2: the reports are then its job)."""

    replies: dict[str, PeerReply]
    try_next: bool = False
    tls_failed: bool = False
    tls: str = ""
    dsn: bool = False


@dataclass(frozen=True)
class SendContent:
    """Stream ``chunks`` (the dot-stuffed content, its terminator last), each
    within ``block_timeout`` seconds, then call :meth:`ClientCore.content_sent`."""

    chunks: Iterator[bytes]
    block_timeout: float


@dataclass(frozen=True)
class SetTimer:
    """(Re)start the reply timer: ``seconds``, or None to stop it."""

    seconds: float | None


@dataclass(frozen=True)
class Close:
    """Close the connection once what was sent is written (``abort``: at once,
    dropping what is unsent, for a peer that stopped reading); the attempt is over."""

    abort: bool = False


Action = Union[Send, StartTLS, SendContent, SetTimer, Close]


@dataclass(frozen=True)
class ClientTimeouts:
    """RFC 5321 §4.5.3.2 timeouts, in seconds (from the ``smtp_client_*`` limits)."""

    greeting: float = 300
    command: float = 300
    data_init: float = 120
    data_block: float = 180
    data_done: float = 600

    @classmethod
    def from_limits(cls, limits: Any) -> "ClientTimeouts":
        return cls(greeting=limits.smtp_client_greeting_timeout,
                   command=limits.smtp_client_command_timeout,
                   data_init=limits.smtp_client_data_init_timeout,
                   data_block=limits.smtp_client_data_block_timeout,
                   data_done=limits.smtp_client_data_done_timeout)


# --- the core


class ClientCore:
    """One SMTP client connection delivering one message, sans I/O.

    Takes the ``message``, our ``helo_name``, ``starttls`` (try it when
    offered), the :class:`ClientTimeouts` and the reply limits. Call
    :meth:`connected` first, then :meth:`data_received`, :meth:`timed_out`,
    :meth:`content_sent`, :meth:`connection_lost` as things happen; each
    returns actions. :attr:`result` is set (and :attr:`done` true) once
    every recipient is decided.
    """

    def __init__(self, message: OutboundMessage, helo_name: str, starttls: bool = True,
                 timeouts: ClientTimeouts = ClientTimeouts(), line_max: int = 2048,
                 lines_max: int = 200):
        self.message = message
        self.helo_name = helo_name
        self.starttls = starttls
        self.timeouts = timeouts
        self.extensions: dict[str, str] = {}
        self.tls_active = False
        self.tls = ""
        self.result: ClientResult | None = None
        self._parser = ReplyParser(line_max, lines_max)
        self._state = "greeting"
        self._expect: list[tuple[str, int]] = []  # replies awaited: (what, recipient index)
        self._queued: list[tuple[bytes, str, int]] = []  # commands not yet sent (no PIPELINING)
        self._replies: dict[str, PeerReply] = {}
        self._mail_reply: PeerReply | None = None
        self._accepted: list[str] = []
        self._tls_failed = False

    @property
    def done(self) -> bool:
        return self.result is not None

    # --- events

    def connected(self) -> list[Action]:
        """The TCP connection is up: wait for the greeting (RFC 5321 §4.5.3.2.1)."""
        return [SetTimer(self.timeouts.greeting)]

    def data_received(self, data: bytes) -> list[Action]:
        if self.done:
            return []
        try:
            replies = self._parser.feed(data)
        except PeerProtocolError as problem:
            return self._fail(f"protocol error from peer: {problem}")
        actions: list[Action] = []
        for reply in replies:
            if self.done:
                break
            actions += self._on_reply(reply)
        return actions

    def timed_out(self) -> list[Action]:
        """The reply timer (or the content's block timer) ran out."""
        if self.done:
            return []
        return self._fail(f"timeout waiting for the peer ({self._state})", enhanced="4.4.2")

    def connection_lost(self, reason: str) -> list[Action]:
        """The connection is gone (``reason`` for people); decides what is undecided."""
        if self.done:
            return []
        if self.tls_active and self._state == "ehlo" and not self.tls:
            self._tls_failed = True
            return self._fail(f"TLS handshake failed: {reason}")
        return self._fail(f"connection lost ({self._state}): {reason}", enhanced="4.4.2")

    def tls_described(self, description: str) -> None:
        """The adapter's description of the TLS session, once data came over it."""
        self.tls = description

    def content_sent(self) -> list[Action]:
        """The whole content and its final dot are written: wait for the reply (§4.5.3.2.6)."""
        self._state = "dot"
        self._expect = [("dot", -1)]
        return [SetTimer(self.timeouts.data_done)]

    # --- replies

    def _on_reply(self, reply: PeerReply) -> list[Action]:
        state = self._state
        if state == "greeting":
            if reply.code != 220:  # RFC 5321 §3.1: 554 instead of 220, or garbage
                return self._fail_host(reply)
            return self._ehlo()
        if state == "ehlo":
            if reply.code == 250:
                self._read_extensions(reply)
                return self._after_ehlo()
            if self.tls_active:
                return self._fail_host(reply)
            self._state = "helo"  # RFC 5321 §3.2: fall back to HELO
            return [Send(f"HELO {self.helo_name}\r\n".encode()), SetTimer(self.timeouts.command)]
        if state == "helo":
            if reply.code != 250:
                return self._fail_host(reply)
            self.extensions = {}
            return self._after_ehlo()
        if state == "starttls":
            if reply.code != 220:  # opportunistic: go on in clear text (RFC 3207 §4.1)
                return self._transaction()
            self.tls_active = True
            self.extensions = {}
            self._state = "ehlo"  # RFC 3207 §4.2: forget everything, EHLO again
            return [StartTLS(), Send(f"EHLO {self.helo_name}\r\n".encode()),
                    SetTimer(self.timeouts.command)]
        if state in ("transaction", "dot"):
            return self._transaction_reply(reply)
        return []

    def _ehlo(self) -> list[Action]:
        self._state = "ehlo"
        return [Send(f"EHLO {self.helo_name}\r\n".encode()), SetTimer(self.timeouts.command)]

    def _read_extensions(self, reply: PeerReply) -> None:
        """RFC 5321 §4.1.1.1: each line after the first names an extension and its parameters."""
        self.extensions = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                self.extensions[keyword.upper()] = params.strip()

    def _after_ehlo(self) -> list[Action]:
        if self.starttls and not self.tls_active and "STARTTLS" in self.extensions:
            self._state = "starttls"
            return [Send(b"STARTTLS\r\n"), SetTimer(self.timeouts.command)]
        return self._transaction()

    # --- the mail transaction

    def _transaction(self) -> list[Action]:
        """MAIL, every RCPT and DATA: pipelined when offered (RFC 2920 §3.1), else one by one."""
        refusal = self._refusal()
        if refusal is not None:
            return self._finish({rcpt.address: refusal for rcpt in self.message.recipients}) + \
                [Send(b"QUIT\r\n"), Close()]
        self._state = "transaction"
        commands = [(self._mail_command(), "mail", -1)]
        commands += [(self._rcpt_command(rcpt), "rcpt", index)
                     for index, rcpt in enumerate(self.message.recipients)]
        commands.append((b"DATA\r\n", "data", -1))
        if "PIPELINING" in self.extensions:
            self._expect = [(what, index) for _, what, index in commands]
            return [Send(b"".join(line for line, _, _ in commands)), SetTimer(self.timeouts.command)]
        self._queued = commands
        return self._send_next()

    def _refusal(self) -> PeerReply | None:
        """Why the message must not be sent to this peer at all, or None."""
        size_limit = self.extensions.get("SIZE", "")
        if size_limit.isdigit() and int(size_limit) and len(self.message.content) > int(size_limit):
            # RFC 1870 §6.1: the peer announced it would refuse the message.
            return local_reply(552, "5.3.4", f"message of {len(self.message.content)} octets exceeds "
                                             f"the peer's limit of {size_limit}")
        if self.message.smtputf8 and "SMTPUTF8" not in self.extensions:
            # RFC 6531 §3.2: a message that needs SMTPUTF8 must not go to a peer without it.
            return local_reply(553, "5.6.7", "the peer does not support SMTPUTF8, which this message needs")
        return None

    def _mail_command(self) -> bytes:
        message = self.message
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={len(message.content)}")  # RFC 1870 §6
        if message.body == "8BITMIME" and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")  # RFC 6152 §2
        if message.smtputf8:
            params.append("SMTPUTF8")  # RFC 6531 §3.4
        if "DSN" in self.extensions:  # RFC 3461 §4.3, §4.4
            if message.ret:
                params.append(f"RET={message.ret}")
            if message.envid:
                params.append(f"ENVID={xtext(message.envid)}")
        return _command(f"MAIL FROM:<{message.sender}>", params)

    def _rcpt_command(self, rcpt: OutboundRecipient) -> bytes:
        params = []
        if "DSN" in self.extensions:  # RFC 3461 §4.1, §4.2
            if rcpt.notify:
                params.append("NOTIFY=" + ",".join(rcpt.notify))
            if rcpt.orcpt:
                addr_type, _, address = rcpt.orcpt.partition(";")
                params.append(f"ORCPT={addr_type};{xtext(address) if addr_type == 'rfc822' else address}")
        return _command(f"RCPT TO:<{rcpt.address}>", params)

    def _send_next(self) -> list[Action]:
        line, what, index = self._queued.pop(0)
        self._expect = [(what, index)]
        timeout = self.timeouts.data_init if what == "data" else self.timeouts.command
        return [Send(line), SetTimer(timeout)]

    def _transaction_reply(self, reply: PeerReply) -> list[Action]:
        if not self._expect:
            return []
        what, index = self._expect.pop(0)
        recipients = self.message.recipients
        if what == "mail":
            self._mail_reply = reply
            if reply.code != 250 and self._queued:  # no PIPELINING: stop here
                return self._finish({rcpt.address: reply for rcpt in recipients}) + self._quit()
        elif what == "rcpt":
            address = recipients[index].address
            refused = self._mail_reply is not None and self._mail_reply.code != 250
            self._replies[address] = self._mail_reply if refused else reply
            if reply.code // 100 == 2 and not refused:
                self._accepted.append(address)
            if self._queued and self._queued[0][1] == "data" and not self._accepted:
                return self._finish(self._replies) + self._quit()  # nobody to send to
        elif what == "data":
            return self._data_reply(reply)
        elif what == "dot":
            return self._finish({**self._replies, **{address: reply for address in self._accepted}}) + \
                self._quit()
        if self._queued:
            return self._send_next()
        if self._expect and self._expect[0][0] == "data":
            return [SetTimer(self.timeouts.data_init)]  # §4.5.3.2.4
        return [SetTimer(self.timeouts.command)]

    def _data_reply(self, reply: PeerReply) -> list[Action]:
        if self._mail_reply is not None and self._mail_reply.code != 250:
            return self._finish({rcpt.address: self._mail_reply for rcpt in self.message.recipients}) + \
                self._quit()
        if reply.code != 354:
            return self._finish({**self._replies, **{address: reply for address in self._accepted}}) + \
                self._quit()
        if not self._accepted:  # RFC 2920 §3.1: a peer that says 354 with no recipient
            self._state = "dot"
            self._expect = [("dot", -1)]
            return [Send(b".\r\n"), SetTimer(self.timeouts.data_done)]
        self._state = "content"
        return [SetTimer(None), SendContent(stuff_chunks(self.message.content, CONTENT_CHUNK),
                                            self.timeouts.data_block)]

    # --- endings

    def _quit(self) -> list[Action]:
        return [Send(b"QUIT\r\n"), Close()]

    def _finish(self, replies: dict[str, PeerReply], try_next: bool = False) -> list[Action]:
        self._state = "done"
        self.result = ClientResult(replies=dict(replies), try_next=try_next,
                                   tls_failed=self._tls_failed, tls=self.tls, dsn="DSN" in self.extensions)
        return [SetTimer(None)]

    def _fail_host(self, reply: PeerReply) -> list[Action]:
        """The server refused the session before any transaction: every
        recipient gets its reply (4xx or 5xx alike: another MX may accept),
        and another address may be tried."""
        deferred = reply if reply.code // 100 == 4 else PeerReply(451, (f"4.4.0 {reply.text()}",), remote=True)
        return self._finish({rcpt.address: deferred for rcpt in self.message.recipients},
                            try_next=True) + self._quit()

    def _fail(self, reason: str, enhanced: str = "4.4.0") -> list[Action]:
        """Something broke the session: every undecided recipient is deferred with ``reason``."""
        deferred = local_reply(451, enhanced, reason)
        before_mail = self._state in ("greeting", "ehlo", "helo", "starttls")
        undecided = [rcpt.address for rcpt in self.message.recipients
                     if rcpt.address not in self._replies or rcpt.address in self._accepted]
        replies = dict(self._replies)
        replies.update({address: deferred for address in undecided})
        return self._finish(replies, try_next=before_mail) + [Close(abort=True)]


def _command(verb_and_path: str, params: list[str]) -> bytes:
    return (" ".join([verb_and_path, *params]) + "\r\n").encode("utf-8")


def xtext(text: str) -> str:
    """RFC 3461 §4 xtext: ``+``, ``=`` and octets outside 33..126 as ``+HH``."""
    return "".join(char if 33 <= ord(char) <= 126 and char not in "+=" else
                   "".join(f"+{byte:02X}" for byte in char.encode("utf-8")) for char in text)


# --- the Twisted adapter


@implementer(IPullProducer)
class _ContentProducer:
    """Writes the dot-stuffed content one chunk per resumeProducing (the
    transport pulls when its buffer drains); each chunk restarts the block timer."""

    def __init__(self, protocol: "SMTPClientProtocol", action: SendContent):
        self._protocol = protocol
        self._chunks = action.chunks
        self._timeout = action.block_timeout

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted's name)
        protocol = self._protocol
        try:
            chunk = next(self._chunks)
        except StopIteration:
            protocol.stop_producing()
            protocol.run(protocol.core.content_sent())
            return
        protocol.set_timer(self._timeout)
        protocol.transport.write(chunk)

    def stopProducing(self) -> None:  # noqa: N802
        self._chunks = iter(())


class SMTPClientProtocol(Protocol):
    """Carries out a :class:`ClientCore`'s actions on a transport.

    ``tls_creator`` builds the STARTTLS connection (:class:`mailserverd.tls.ClientTLS`);
    ``clock`` runs the timers; ``finished`` fires with the ClientResult once
    the connection is closed.
    """

    def __init__(self, core: ClientCore, tls_creator: Any, clock: Any):
        self.core = core
        self._tls_creator = tls_creator
        self._clock = clock
        self._timer = None
        self._producing = False
        self.finished: Deferred = Deferred()

    def connectionMade(self) -> None:  # noqa: N802
        self.run(self.core.connected())

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.core.tls_active and not self.core.tls:
            self.core.tls_described(describe(self.transport))
        self.run(self.core.data_received(data))

    def connectionLost(self, reason) -> None:  # noqa: N802
        self.set_timer(None)
        self.run(self.core.connection_lost(_reason_text(reason.value)))
        if not self.finished.called:
            self.finished.callback(self.core.result)

    def set_timer(self, seconds: float | None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None if seconds is None else self._clock.callLater(seconds, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self.run(self.core.timed_out())

    def run(self, actions: list[Action]) -> None:
        """Carry out ``actions`` in order."""
        for action in actions:
            if isinstance(action, Send):
                self.transport.write(action.data)
            elif isinstance(action, SetTimer):
                self.set_timer(action.seconds)
            elif isinstance(action, StartTLS):
                self.transport.startTLS(self._tls_creator)
            elif isinstance(action, SendContent):
                self._producing = True
                self.transport.registerProducer(_ContentProducer(self, action), False)
            elif isinstance(action, Close):
                self.set_timer(None)
                self.stop_producing()
                if action.abort:
                    self.transport.abortConnection()
                else:
                    self.transport.loseConnection()

    def stop_producing(self) -> None:
        """Unregister the content producer, if any (a close would wait for it)."""
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()


def _reason_text(value: BaseException) -> str:
    if isinstance(value, net_error.ConnectionDone):
        return "closed by the peer"
    text = str(value).strip() or type(value).__name__
    return text[:200]


def deliver_message(reactor: Any, address: str, port: int, core: ClientCore, tls_creator: Any,
                    connect_timeout: float) -> "Deferred[ClientResult]":
    """Connect to ``address`` (an IP literal) on ``port`` and run ``core``.

    Fires with the ClientResult (never fails): a connection that cannot be
    made defers every recipient with ``try_next`` set.
    """
    endpoint_class = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
    endpoint = endpoint_class(reactor, address, port, timeout=connect_timeout)
    protocol = SMTPClientProtocol(core, tls_creator, reactor)

    def connected(_):
        return protocol.finished

    def not_connected(failure):
        reply = local_reply(451, "4.4.1", f"cannot connect to {address}:{port}: "
                                          f"{_reason_text(failure.value)}")
        return ClientResult({rcpt.address: reply for rcpt in core.message.recipients}, try_next=True)

    attempt = endpoint.connect(Factory.forProtocol(lambda: protocol))
    return attempt.addCallbacks(connected, not_connected)
