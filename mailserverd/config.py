"""The one configuration loader: a TOML file into frozen dataclasses.

The file is read with the standard library's :mod:`tomllib` and checked whole:
every unknown table or key, wrong type and out-of-range value is collected, and
:class:`~mailserverd.errors.ConfigError` is raised once with all of them, each
naming its table and key (``[limits] smtp_line_max: must be between ...``).

Each table is a frozen dataclass whose fields *are* the schema: a field's
default is the key's default and its ``metadata["check"]`` validates and
converts the TOML value. Unknown keys are the keys that are not fields. The
``[limits]`` table is validated against :mod:`mailserverd.limits`, the single
list of limits.

Relative paths in a file are resolved against the directory holding the file.
Loading never touches the files a config names (certificates, data dir): they
are checked where they are used.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import os
import re
import socket
import ssl
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from mailserverd.errors import ConfigError
from mailserverd.limits import LIMIT_SPECS, Limits, validate_limit
from mailserverd.tls import DEFAULT_CIPHERS, TLS_VERSIONS

__all__ = [
    "AuthConfig",
    "Config",
    "DEFAULT_CIPHERS",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_PORTS",
    "DNSConfig",
    "LISTENER_KINDS",
    "ListenerConfig",
    "LogConfig",
    "MetricsConfig",
    "OutboundConfig",
    "ServerConfig",
    "TLSConfig",
    "CONFIG_ENV_VAR",
    "default_config_path",
    "load_config",
    "parse_config",
    "render_dev_config",
]

DEFAULT_CONFIG_PATH = "/etc/mailserverd/mailserverd.toml"
CONFIG_ENV_VAR = "MAILSERVERD_CONFIG"

LISTENER_KINDS = ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "https", "http")

# The IANA ports; RFC 8314 §3.3 gives 465 to submission over implicit TLS.
DEFAULT_PORTS = {
    "smtp": 25, "submission": 587, "smtps": 465,
    "imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995,
    "https": 443, "http": 80,
}
_PROTOCOL_OF_KIND = {
    "smtp": "smtp", "submission": "smtp", "smtps": "smtp",
    "imap": "imap", "imaps": "imap", "pop3": "pop3", "pop3s": "pop3",
    "https": "http", "http": "http",
}
_IMPLICIT_TLS_KINDS = frozenset({"smtps", "imaps", "pop3s", "https"})
_SUBMISSION_KINDS = frozenset({"submission", "smtps"})



class _Invalid(Exception):
    """A value failed its check; the message is the problem text after ``key:``."""


# --- value checks: each takes (raw TOML value, base dir) and returns the
# converted value or raises _Invalid.

Check = Callable[[Any, Path], Any]

_TOML_TYPE_NAMES = (
    (bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
    (list, "array"), (dict, "table"), (datetime.datetime, "datetime"),
    (datetime.date, "date"), (datetime.time, "time"),
)


def _toml_type(value: object) -> str:
    """Name ``value``'s type as TOML does (bool before int: bool is an int)."""
    for python_type, name in _TOML_TYPE_NAMES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _require_string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {_toml_type(value)}")
    if "\x00" in value:
        raise _Invalid("must not contain a NUL character")
    return value


def _string(value: object, base: Path) -> str:
    return _require_string(value)


def _boolean(value: object, base: Path) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {_toml_type(value)}")
    return value


def _integer(minimum: int, maximum: int, unit: str = "") -> Check:
    unit_text = f" ({unit})" if unit else ""

    def check(value: object, base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be an integer{unit_text}, got {_toml_type(value)}")
        if not minimum <= value <= maximum:
            raise _Invalid(
                f"must be between {minimum} and {maximum}{unit_text}, got {value}")
        return value

    return check


def _number(minimum: float, maximum: float) -> Check:
    def check(value: object, base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"must be a number, got {_toml_type(value)}")
        if not minimum <= value <= maximum:
            raise _Invalid(f"must be between {minimum} and {maximum}, got {value}")
        return float(value)

    return check


def _hostnames(value: object, base: Path) -> tuple[str, ...]:
    """An array of domain names (DNS zones)."""
    if not isinstance(value, list):
        raise _Invalid(f"must be an array of domain names, got {_toml_type(value)}")
    return tuple(_hostname(item, base) for item in value)


def _networks(value: object, base: Path) -> tuple[str, ...]:
    """An array of IP networks in CIDR form (``192.0.2.0/24``, ``2001:db8::/32``); a bare
    address is a network of one."""
    if not isinstance(value, list):
        raise _Invalid(f"must be an array of IP networks, got {_toml_type(value)}")
    networks = []
    for item in value:
        text = _require_string(item)
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise _Invalid(f"must be IP networks like 192.0.2.0/24, got {text!r}") from None
    return tuple(networks)


def _delimiter(value: object, base: Path) -> str:
    text = _require_string(value)
    if len(text) > 1 or (text and (text.isalnum() or text in '@."\\ ' or not text.isascii())):
        raise _Invalid(f"must be one character such as + or -, or empty, got {text!r}")
    return text


def _choice(*options: str) -> Check:
    def check(value: object, base: Path) -> str:
        text = _require_string(value)
        if text not in options:
            raise _Invalid(f"must be one of {', '.join(options)}, got {text!r}")
        return text

    return check


def _path(value: object, base: Path) -> Path:
    """A file-system path; a relative one is taken from the config file's directory."""
    text = _require_string(value)
    if not text:
        raise _Invalid("must not be empty")
    return base / text


def _optional_path(value: object, base: Path) -> str:
    """A path as :func:`_path` takes it, or ``""`` for none."""
    return str(_path(value, base)) if _require_string(value) else ""


def _ip_literal(value: object, base: Path) -> str:
    text = _require_string(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Invalid(f"must be an IPv4 or IPv6 address, got {text!r}") from None


_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def _hostname(value: object, base: Path) -> str:
    """A domain name in ASCII; it is the EHLO and greeting name (RFC 5321 §2.3.5)."""
    text = _require_string(value)
    if not text.isascii():
        raise _Invalid(f"must be an ASCII domain name (use the xn-- form), got {text!r}")
    labels = text.split(".")
    if len(text) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise _Invalid(f"must be a domain name like mail.example.com, got {text!r}")
    return text


def _split_resolver(text: str) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 into (host, port)."""
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1:close + 2] not in ("", ":"):
            raise _Invalid(f"must be host or host:port, got {text!r}")
        host, port_text = text[1:close], text[close + 2:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        # The resolver cannot be found by name: there is no resolver yet.
        raise _Invalid(f"must be an IP address, optionally with :port, got {text!r}") from None
    if not port_text:
        return host, 53
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _Invalid(f"port must be between 1 and 65535, got {text!r}")
    return host, int(port_text)


def _resolver(value: object, base: Path) -> str:
    text = _require_string(value)
    if text:
        _split_resolver(text)
    return text


def _cipher_string(value: object, base: Path) -> str:
    text = _require_string(value)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(text)
    except ssl.SSLError:
        raise _Invalid(f"OpenSSL selects no cipher from {text!r}") from None
    return text


def _key(default: Any = MISSING, check: Check = _string, doc: str = "", **kwargs: Any) -> Any:
    """Declare one config key: its default, the check its value must pass, and
    ``doc``, one or two sentences for the configuration reference (docs/)."""
    metadata = {"check": check, "doc": doc}
    if "default_factory" in kwargs:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata)


# --- the schema


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: who this server is and where it keeps its data.

    ``shards`` is fixed once the data dir exists; the store refuses a
    different count. Empty ``user``/``group`` mean: do not drop privileges.
    """

    hostname: str = _key(check=_hostname, default_factory=socket.getfqdn,
        doc="The name this server gives in greetings, Received headers and EHLO; the host's FQDN by default.")
    data_dir: Path = _key(Path("/var/lib/mailserverd"), _path,
        doc='Where the store keeps its LMDB environments (a local file system).')
    shards: int = _key(4, _integer(1, 256),
        doc='How many shard environments users are spread over; fixed once the data dir exists.')
    user: str = _key("", _string,
        doc='The user to run as once the ports are bound, when started as root (empty: stay).')
    group: str = _key("", _string,
        doc="The group to run as with ``user`` (empty: the user's primary group).")
    socket_activation: bool = _key(False, _boolean,
        doc="Take the listening sockets from systemd (mailserverd.socket) instead of binding: "
            "each listener uses the passed socket bound to its address and port.")


@dataclass(frozen=True)
class TLSConfig:
    """``[tls]``: the server certificate and protocol floor.

    ``cert``/``key`` are ``None`` only when no listener is configured; the
    files are opened by the TLS builder, not by the loader.
    """

    cert: Path | None = _key(None, _path,
        doc='The PEM certificate chain every TLS listener presents.')
    key: Path | None = _key(None, _path,
        doc='The PEM private key of ``cert``.')
    min_version: str = _key("TLSv1.2", _choice(*TLS_VERSIONS),
        doc='The oldest TLS version accepted: ``TLSv1.2`` or ``TLSv1.3``.')
    ciphers: str = _key(DEFAULT_CIPHERS, _cipher_string,
        doc="The OpenSSL cipher list for TLS 1.2 (TLS 1.3 uses OpenSSL's suites).")


@dataclass(frozen=True, kw_only=True)
class ListenerConfig:
    """One ``[[listener]]``: a protocol on an address and port.

    Keyword-only: ``ListenerConfig(kind="imap", port=1143)``. ``address`` is a
    normalised IP literal. ``port`` defaults per kind (:data:`DEFAULT_PORTS`)
    when loaded from a file.
    """

    kind: str = _key(check=_choice(*LISTENER_KINDS),
        doc='What to serve: ``smtp`` (MX), ``submission``, ``smtps``, ``imap``, ``imaps``, ``pop3``, '
            '``pop3s``, ``https`` (the HTTP API, autoconfig and autodiscover over TLS) or ``http`` '
            '(autoconfig only, in clear text).')
    address: str = _key("0.0.0.0", _ip_literal,
        doc='The IP address to listen on (``::`` for every IPv6 and IPv4 address).')
    port: int = _key(check=_integer(1, 65535),
        doc='The TCP port.')

    @property
    def protocol(self) -> str:
        """``"smtp"``, ``"imap"``, ``"pop3"`` or ``"http"``: which protocol core serves it."""
        return _PROTOCOL_OF_KIND[self.kind]

    @property
    def implicit_tls(self) -> bool:
        """True when TLS starts at connect (smtps, imaps, pop3s, RFC 8314 §3; https, RFC 9110 §4.3.3)."""
        return self.kind in _IMPLICIT_TLS_KINDS

    @property
    def is_submission(self) -> bool:
        """True for message submission (587, and 465 per RFC 8314 §3.3): auth required."""
        return self.kind in _SUBMISSION_KINDS


@dataclass(frozen=True)
class AuthConfig:
    """``[auth]``: ``allow_plaintext`` permits passwords before TLS, i.e. in clear text."""

    allow_plaintext: bool = _key(False, _boolean,
        doc='Accept passwords before TLS, in clear text (for tests and trusted networks only).')


@dataclass(frozen=True)
class DNSConfig:
    """``[dns]``: ``resolver`` is ``""`` (system resolv.conf) or ``ip``/``ip:port``."""

    resolver: str = _key("", _resolver,
        doc='The DNS server for MX, SPF, DKIM and DMARC lookups, ``ip`` or ``ip:port`` (empty: /etc/resolv.conf).')
    timeout: int = _key(10, _integer(1, 60, "seconds"),
        doc='Seconds one DNS query may take.')

    @property
    def resolver_address(self) -> tuple[str, int] | None:
        """``(ip, port)`` of the configured resolver, or ``None`` for the system's."""
        return _split_resolver(self.resolver) if self.resolver else None


@dataclass(frozen=True)
class DeliveryConfig:
    """``[delivery]``: ``recipient_delimiter`` separates user and detail in
    ``user+detail@domain`` (RFC 5233 sub-addressing; ``""`` turns it off)."""

    recipient_delimiter: str = _key("+", _delimiter,
        doc='Separates user and detail in ``user+detail@domain`` (RFC 5233); empty turns sub-addressing off.')


@dataclass(frozen=True)
class InboundConfig:
    """``[inbound]``: the checks run on mail from other MTAs before it is stored.

    ``authserv_id`` names us in Authentication-Results (``""``: the hostname).
    Spam score thresholds: above ``junk_threshold`` into Junk, above
    ``reject_threshold`` refused with 550 5.7.1. ``dmarc_reject_action`` is
    what a failing ``p=reject`` domain gets: ``reject`` or ``quarantine`` (Junk).
    """

    authserv_id: str = _key("", _string,
        doc='The name this server uses in Authentication-Results headers (empty: the hostname).')
    spf: bool = _key(True, _boolean,
        doc='Check SPF (RFC 7208) for the envelope sender and the HELO name.')
    dkim: bool = _key(True, _boolean,
        doc='Verify DKIM signatures (RFC 6376).')
    dmarc: bool = _key(True, _boolean,
        doc="Evaluate the sender domain's DMARC policy (RFC 7489).")
    dmarc_reject_action: str = _key("reject", _choice("reject", "quarantine"),
        doc='What mail failing a ``p=reject`` policy gets: ``reject`` (550 5.7.1) or ``quarantine`` (Junk).')
    dnsbl_zones: tuple[str, ...] = _key((), _hostnames,
        doc="DNS block list zones asked about the client's address; each listing adds to the spam score.")
    junk_threshold: float = _key(5.0, _number(-100.0, 1000.0),
        doc='A spam score at or above this files the message in Junk.')
    reject_threshold: float = _key(10.0, _number(-100.0, 1000.0),
        doc='A spam score at or above this refuses the message with 550 5.7.1.')


@dataclass(frozen=True)
class AbuseConfig:
    """``[abuse]``: who the rate limits spare, and greylisting on the MX.

    The numbers (connection and command rates, sessions per account, the
    greylisting times) are in ``[limits]``; see :mod:`mailserverd.abuse`.
    """

    exempt_networks: tuple[str, ...] = _key(("127.0.0.0/8", "::1/128"), _networks,
        doc='Client networks the connection and command rates and greylisting do not apply to '
            '(webmail, monitoring, a local relay), as Postfix exempts $mynetworks.')
    greylisting: bool = _key(False, _boolean,
        doc='Greylist mail on the MX listener: a new (client network, sender, recipient) is '
            'answered 450 4.7.1 until it is tried again after ``greylist_delay`` (RFC 6647).')


@dataclass(frozen=True)
class EncryptionConfig:
    """``[encryption]``: encryption at rest (:mod:`mailserverd.store.sealing`),
    on when one of the two names the master key."""

    master_key_file: str = _key("", _optional_path,
        doc='File holding the 32-byte master key (raw or base64), readable by its owner only '
            '(mode 0400); ``mailserverd keys new FILE`` makes one.')
    master_key_credential: str = _key("", _string,
        doc='Name of a systemd credential (``LoadCredential=NAME:PATH`` in the unit) holding '
            'the master key, read from ``$CREDENTIALS_DIRECTORY``.')

    @property
    def enabled(self) -> bool:
        return bool(self.master_key_file or self.master_key_credential)


def _optional_hostname(value: object, base: Path) -> str:
    """A domain name, or ``""`` for the default."""
    return _hostname(value, base) if _require_string(value) else ""


@dataclass(frozen=True)
class OutboundConfig:
    """``[outbound]``: ``port`` is the TCP port outbound delivery connects to;
    ``helo_name`` our EHLO name (``""``: the hostname); ``starttls`` whether
    STARTTLS is tried when offered (opportunistic, RFC 3207)."""

    port: int = _key(25, _integer(1, 65535))
    helo_name: str = _key("", _optional_hostname)
    starttls: bool = _key(True, _boolean)


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: minimum ``level`` and ``format`` (text lines or JSON objects)."""

    level: str = _key("info", _choice("debug", "info", "warn", "error"),
        doc='The least important events logged: ``debug``, ``info``, ``warn`` or ``error``.')
    format: str = _key("text", _choice("text", "json"),
        doc='``text`` lines or one ``json`` object per event.')


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint, ``GET /metrics`` over plain HTTP on
    ``address`` and ``port``; off unless ``enabled``. Anyone who can connect can
    read it: keep it on a loopback or management address."""

    enabled: bool = _key(False, _boolean,
        doc='Serve metrics for Prometheus at ``http://address:port/metrics``.')
    address: str = _key("127.0.0.1", _ip_literal,
        doc='The IP address the metrics endpoint listens on (a local or management address: '
            'the endpoint has no authentication and no TLS).')
    port: int = _key(9154, _integer(1, 65535),
        doc='The TCP port of the metrics endpoint.')


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``path`` is the file it came from, or ``""``."""

    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    listeners: tuple[ListenerConfig, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    abuse: AbuseConfig = field(default_factory=AbuseConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    limits: Limits = field(default_factory=Limits)  # type: ignore[valid-type]
    path: str = ""


# Plain tables and the dataclass each becomes; [[listener]] and [limits] are special.
_TABLES: dict[str, type] = {
    "server": ServerConfig, "tls": TLSConfig, "auth": AuthConfig,
    "dns": DNSConfig, "delivery": DeliveryConfig, "inbound": InboundConfig,
    "abuse": AbuseConfig, "encryption": EncryptionConfig, "outbound": OutboundConfig, "log": LogConfig, "metrics": MetricsConfig,
}
_ALL_TABLES = ("server", "tls", "listener", "auth", "dns", "delivery", "inbound", "abuse", "encryption",
               "outbound", "log", "metrics", "limits")


# --- reading


def _unknown_key(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _read_table(schema: type, raw: dict, label: str, base: Path,
                problems: list[str], preset: dict | None = None) -> dict | None:
    """Check ``raw`` against ``schema``'s fields; return constructor kwargs or None.

    Appends one problem per unknown key, invalid value and missing required
    key to ``problems``. ``preset`` supplies defaults computed by the caller.
    Returns None when this table had any problem.
    """
    found = len(problems)
    known = {f.name: f for f in fields(schema)}
    values: dict[str, Any] = dict(preset or {})
    for name, value in raw.items():
        spec = known.get(name)
        if spec is None:
            problems.append(f"{label} {name}: {_unknown_key(name, list(known))}")
            continue
        try:
            values[name] = spec.metadata["check"](value, base)
        except _Invalid as problem:
            problems.append(f"{label} {name}: {problem}")
    for name, spec in known.items():
        required = spec.default is MISSING and spec.default_factory is MISSING
        if required and name not in values and name not in raw:
            problems.append(f"{label} {name}: required")
    return values if len(problems) == found else None


def _read_listeners(raw: object, base: Path, problems: list[str]) -> tuple[ListenerConfig, ...]:
    """Read the ``[[listener]]`` array; report duplicate and overlapping binds."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        problems.append(f"[[listener]]: must be an array of tables, got {_toml_type(raw)}")
        return ()
    listeners: list[ListenerConfig] = []
    bound: dict[tuple[str, int], int] = {}
    for number, item in enumerate(raw, start=1):
        label = f"[[listener]] #{number}"
        kind = item.get("kind")
        # An unknown or missing kind is reported itself; its port has no
        # default, but that is not a second problem (None is never built).
        preset = {"port": DEFAULT_PORTS.get(kind) if isinstance(kind, str) else None}
        values = _read_table(ListenerConfig, item, label, base, problems, preset)
        if values is None:
            continue
        listener = ListenerConfig(**values)
        clash = _bind_clash(listener, bound)
        if clash:
            problems.append(f"{label} port: {clash}")
        bound.setdefault((listener.address, listener.port), number)
        listeners.append(listener)
    return tuple(listeners)


def _bind_clash(listener: ListenerConfig, bound: dict[tuple[str, int], int]) -> str:
    """Say why ``listener`` cannot bind next to those in ``bound``, or return ``""``.

    A wildcard address takes the port on every address of its family, so a
    specific address of that family on the same port fails with EADDRINUSE.
    """
    mine = ipaddress.ip_address(listener.address)
    for (address, port), number in bound.items():
        if port != listener.port:
            continue
        theirs = ipaddress.ip_address(address)
        if theirs == mine:
            return f"{address} port {port} is already used by listener #{number}"
        if theirs.version == mine.version and (theirs.is_unspecified or mine.is_unspecified):
            return f"{listener.address} port {port} overlaps listener #{number} ({address})"
    return ""


def _read_limits(raw: dict, problems: list[str]) -> Limits | None:  # type: ignore[valid-type]
    found = len(problems)
    names = [spec.name for spec in LIMIT_SPECS]
    for name, value in raw.items():
        problem = validate_limit(name, value)
        if problem == "unknown key":
            problem = _unknown_key(name, names)
        if problem is not None:
            problems.append(f"[limits] {name}: {problem}")
    return Limits(**raw) if len(problems) == found else None


def _check_tls_files(raw_tls: object, has_listeners: bool, problems: list[str]) -> None:
    """``[tls]`` cert and key go together, and are required once anything listens."""
    present = raw_tls if isinstance(raw_tls, dict) else {}
    for name, other in (("cert", "key"), ("key", "cert")):
        if name in present:
            continue
        if has_listeners:
            problems.append(f"[tls] {name}: required when any listener is configured")
        elif other in present:
            problems.append(f"[tls] {name}: required when {other} is set")


def _check_top_level(data: dict, problems: list[str]) -> None:
    """Report unknown tables, top-level keys, and known tables that are not tables."""
    for name, value in data.items():
        is_table = isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value))
        if name not in _ALL_TABLES:
            problems.append(f"[{name}]: unknown table" if is_table else
                            f"{name}: unknown top-level key (settings belong in a table)")
        elif name != "listener" and not isinstance(value, dict):
            problems.append(f"[{name}]: must be a table, got {_toml_type(value)}")


def parse_config(data: dict, path: str | os.PathLike = "") -> Config:
    """Validate an already-parsed TOML document and build the :class:`Config`.

    ``path`` is the file it came from: relative paths are resolved against its
    directory (against the working directory when ``path`` is empty), and it
    is kept as ``Config.path``. Raises :class:`ConfigError` listing every
    problem. Touches no file.
    """
    path = os.fspath(path)
    base = Path(os.path.abspath(path)).parent if path else Path(os.getcwd())
    problems: list[str] = []
    _check_top_level(data, problems)
    tables = {name: data.get(name, {}) for name in _TABLES}
    read = {name: _read_table(schema, tables[name], f"[{name}]", base, problems)
            if isinstance(tables[name], dict) else None
            for name, schema in _TABLES.items()}
    listeners = _read_listeners(data.get("listener", []), base, problems)
    raw_limits = data.get("limits", {})
    limits = _read_limits(raw_limits, problems) if isinstance(raw_limits, dict) else None
    _check_tls_files(data.get("tls"), bool(data.get("listener")), problems)
    encryption = read["encryption"]
    if encryption and encryption.get("master_key_file") and encryption.get("master_key_credential"):
        problems.append("[encryption]: master_key_file and master_key_credential are two ways "
                        "to name one key; set one of them")
    if problems:
        raise ConfigError(problems, path)
    sections = {name: _TABLES[name](**values) for name, values in read.items()}
    return Config(listeners=listeners, limits=limits, path=path, **sections)


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate the TOML file at ``path``.

    Returns the :class:`Config`. Raises :class:`ConfigError` (with ``path``)
    when the file is missing, unreadable, not UTF-8, not valid TOML (the
    problem gives tomllib's line and column) or fails validation, listing
    every problem found.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as config_file:
            raw = config_file.read()
    except FileNotFoundError:
        raise ConfigError(["cannot read config file: no such file"], path) from None
    except OSError as error:
        raise ConfigError([f"cannot read config file: {error.strerror}"], path) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))  # TOML 1.0 §Spec: UTF-8 only
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ConfigError([f"not valid UTF-8 (at line {line})"], path) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"TOML syntax error: {error}"], path) from None
    return parse_config(data, path)


def default_config_path(explicit: str | None) -> str:
    """The config file to use: ``explicit`` (-c FILE), else $MAILSERVERD_CONFIG, else the default."""
    if explicit:
        return explicit
    return os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH


def _toml_string(text: str) -> str:
    """Quote ``text`` as a TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch >= " " and ch != "\x7f" else f"\\u{ord(ch):04x}"
                      for ch in escaped)
    return f'"{escaped}"'


_DEV_LISTENERS = (
    ("smtp", 2525), ("submission", 2587), ("smtps", 2465),
    ("imap", 1143), ("imaps", 1993), ("pop3", 1110), ("pop3s", 1995),
    ("https", 8443), ("http", 8080),
)


def render_dev_config(var_dir: Path) -> str:
    """Return the TOML text of the development config for ``var_dir``.

    Data in ``var_dir/data``, certificate and key in ``var_dir/tls/``
    (absolute paths), hostname ``localhost``, 2 shards, every listener on
    127.0.0.1 at an unprivileged port. Writes nothing.
    """
    var_dir = Path(os.path.abspath(var_dir))
    lines = [
        "# Development config written by `mailserverd dev`; every listener is on",
        "# 127.0.0.1 at an unprivileged port. See etc/mailserverd.toml for all keys.",
        "",
        "[server]",
        'hostname = "localhost"',
        f"data_dir = {_toml_string(str(var_dir / 'data'))}",
        "shards = 2",
        "",
        "[tls]",
        f"cert = {_toml_string(str(var_dir / 'tls' / 'cert.pem'))}",
        f"key = {_toml_string(str(var_dir / 'tls' / 'key.pem'))}",
    ]
    for kind, port in _DEV_LISTENERS:
        lines += ["", "[[listener]]", f'kind = "{kind}"',
                  'address = "127.0.0.1"', f"port = {port}"]
    return "\n".join(lines) + "\n"
