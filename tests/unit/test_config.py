"""The config loader: every error path, defaults, paths, the dev and example files."""

from __future__ import annotations

import dataclasses

import mailserverd.config as config_module
import re
import socket
import tomllib
from pathlib import Path

import pytest

from mailserverd.config import (
    DEFAULT_CIPHERS,
    DEFAULT_CONFIG_PATH,
    AuthConfig,
    Config,
    DNSConfig,
    ListenerConfig,
    LogConfig,
    OutboundConfig,
    ServerConfig,
    TLSConfig,
    default_config_path,
    load_config,
    parse_config,
    render_dev_config,
)
from mailserverd.errors import ConfigError
from mailserverd.limits import LIMIT_SPECS, LIMITS_BY_NAME, Limits

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "mailserverd.toml"
TLS = {"cert": "/etc/ssl/cert.pem", "key": "/etc/ssl/key.pem"}


def problems_of(data: dict, path: str = "") -> list[str]:
    """Parse ``data`` expecting failure; return the reported problems."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data, path)
    return caught.value.problems


def write(tmp_path: Path, text: str, name: str = "mailserverd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults


def test_empty_document_gives_every_default():
    config = parse_config({})
    assert config.server == ServerConfig(
        hostname=socket.getfqdn(), data_dir=Path("/var/lib/mailserverd"),
        shards=4, user="", group="")
    assert config.tls == TLSConfig(cert=None, key=None, min_version="TLSv1.2",
                                   ciphers=DEFAULT_CIPHERS)
    assert config.listeners == ()
    assert config.auth == AuthConfig(allow_plaintext=False)
    assert config.dns == DNSConfig(resolver="", timeout=10)
    assert config.dns.resolver_address is None
    assert config.outbound == OutboundConfig(port=25)
    assert config.log == LogConfig(level="info", format="text")
    assert config.limits == Limits()
    assert config.path == ""


def test_listener_port_defaults_to_the_kinds_standard_port():
    kinds = ["smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s"]
    config = parse_config({"tls": TLS, "listener": [
        {"kind": kind, "address": f"127.0.0.{n}"} for n, kind in enumerate(kinds, 1)]})
    assert [l.port for l in config.listeners] == [25, 587, 465, 143, 993, 110, 995]
    assert [l.protocol for l in config.listeners] == ["smtp"] * 3 + ["imap"] * 2 + ["pop3"] * 2
    assert [l.implicit_tls for l in config.listeners] == [False, False, True, False, True, False, True]
    assert [l.is_submission for l in config.listeners] == [False, True, True] + [False] * 4


def test_listener_address_defaults_to_all_ipv4_and_is_normalised():
    config = parse_config({"tls": TLS, "listener": [
        {"kind": "imap"}, {"kind": "imap", "address": "0:0::1", "port": 1143}]})
    assert config.listeners == (
        ListenerConfig(kind="imap", address="0.0.0.0", port=143),
        ListenerConfig(kind="imap", address="::1", port=1143),
    )


def test_values_given_override_defaults():
    config = parse_config({
        "server": {"hostname": "mx.example.org", "shards": 8, "user": "mail", "group": "mail"},
        "tls": {**TLS, "min_version": "TLSv1.3", "ciphers": "ECDHE+AESGCM"},
        "auth": {"allow_plaintext": True},
        "dns": {"resolver": "127.0.0.1:5353", "timeout": 3},
        "outbound": {"port": 2025},
        "log": {"level": "debug", "format": "json"},
        "limits": {"smtp_line_max": 4096, "quota_default": 1 << 30},
    })
    assert (config.server.hostname, config.server.shards) == ("mx.example.org", 8)
    assert (config.server.user, config.server.group) == ("mail", "mail")
    assert config.tls.min_version == "TLSv1.3" and config.tls.ciphers == "ECDHE+AESGCM"
    assert config.auth.allow_plaintext is True
    assert config.dns.resolver_address == ("127.0.0.1", 5353) and config.dns.timeout == 3
    assert config.outbound.port == 2025
    assert (config.log.level, config.log.format) == ("debug", "json")
    assert config.limits.smtp_line_max == 4096
    assert config.limits.quota_default == 1 << 30
    assert config.limits.imap_line_max == LIMITS_BY_NAME["imap_line_max"].default


@pytest.mark.parametrize("resolver, address", [
    ("10.0.0.53", ("10.0.0.53", 53)),
    ("::1", ("::1", 53)),
    ("[::1]:5353", ("::1", 5353)),
])
def test_dns_resolver_forms(resolver, address):
    assert parse_config({"dns": {"resolver": resolver}}).dns.resolver_address == address


def test_config_is_frozen():
    config = parse_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.shards = 9  # type: ignore[misc]


# --- paths


def test_relative_paths_resolve_against_the_config_files_directory(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write(conf_dir, '[server]\ndata_dir = "../data"\n'
                           '[tls]\ncert = "tls/cert.pem"\nkey = "/abs/key.pem"\n')
    config = load_config(path)
    assert config.server.data_dir == conf_dir / ".." / "data"
    assert config.tls.cert == conf_dir / "tls" / "cert.pem"
    assert config.tls.key == Path("/abs/key.pem")
    assert config.path == str(path)


def test_relative_paths_without_a_file_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_config({"server": {"data_dir": "d"}}).server.data_dir == tmp_path / "d"


def test_default_config_path_order(monkeypatch):
    monkeypatch.delenv("MAILSERVERD_CONFIG", raising=False)
    assert default_config_path(None) == DEFAULT_CONFIG_PATH == "/etc/mailserverd/mailserverd.toml"
    monkeypatch.setenv("MAILSERVERD_CONFIG", "/srv/env.toml")
    assert default_config_path(None) == "/srv/env.toml"
    assert default_config_path("/srv/explicit.toml") == "/srv/explicit.toml"


# --- one problem each


@pytest.mark.parametrize("data, problem", [
    ({"colour": {}}, "[colour]: unknown table"),
    ({"colour": 1}, "colour: unknown top-level key (settings belong in a table)"),
    ({"server": 1}, "[server]: must be a table, got integer"),
    ({"server": {"colour": "red"}}, "[server] colour: unknown key"),
    ({"server": {"shard": 2}}, "[server] shard: unknown key (did you mean 'shards'?)"),
    ({"log": {"lvl": "info", "format": "text"}}, "[log] lvl: unknown key (did you mean 'level'?)"),
    ({"server": {"shards": "4"}}, "[server] shards: must be an integer, got string"),
    ({"server": {"shards": True}}, "[server] shards: must be an integer, got boolean"),
    ({"server": {"shards": 4.0}}, "[server] shards: must be an integer, got float"),
    ({"server": {"shards": 0}}, "[server] shards: must be between 1 and 256, got 0"),
    ({"server": {"shards": 257}}, "[server] shards: must be between 1 and 256, got 257"),
    ({"server": {"user": 0}}, "[server] user: must be a string, got integer"),
    ({"server": {"hostname": "mail example"}},
     "[server] hostname: must be a domain name like mail.example.com, got 'mail example'"),
    ({"server": {"hostname": "-bad.example"}},
     "[server] hostname: must be a domain name like mail.example.com, got '-bad.example'"),
    ({"server": {"hostname": "bücher.example"}},
     "[server] hostname: must be an ASCII domain name (use the xn-- form), got 'bücher.example'"),
    ({"server": {"data_dir": ""}}, "[server] data_dir: must not be empty"),
    ({"server": {"data_dir": ["a"]}}, "[server] data_dir: must be a string, got array"),
    ({"tls": {"min_version": "TLSv1.1"}},
     "[tls] min_version: must be one of TLSv1.2, TLSv1.3, got 'TLSv1.1'"),
    ({"tls": {"ciphers": "NOSUCHCIPHER"}},
     "[tls] ciphers: OpenSSL selects no cipher from 'NOSUCHCIPHER'"),
    ({"tls": {"cert": "c.pem"}}, "[tls] key: required when cert is set"),
    ({"auth": {"allow_plaintext": "no"}},
     "[auth] allow_plaintext: must be true or false, got string"),
    ({"dns": {"resolver": "dns.example"}},
     "[dns] resolver: must be an IP address, optionally with :port, got 'dns.example'"),
    ({"dns": {"resolver": "127.0.0.1:0"}},
     "[dns] resolver: port must be between 1 and 65535, got '127.0.0.1:0'"),
    ({"dns": {"timeout": 61}}, "[dns] timeout: must be between 1 and 60 (seconds), got 61"),
    ({"outbound": {"port": 65536}}, "[outbound] port: must be between 1 and 65535, got 65536"),
    ({"log": {"level": "warning"}},
     "[log] level: must be one of debug, info, warn, error, got 'warning'"),
    ({"log": {"format": "xml"}}, "[log] format: must be one of text, json, got 'xml'"),
    ({"limits": {"smtp_line_max": 5}},
     "[limits] smtp_line_max: must be between 512 and 65536 (bytes), got 5"),
    ({"limits": {"smtp_line_max": "2048"}},
     "[limits] smtp_line_max: must be an integer (bytes), got str"),
    ({"limits": {"smtp_line_mx": 2048}},
     "[limits] smtp_line_mx: unknown key (did you mean 'smtp_line_max'?)"),
    ({"limits": 3}, "[limits]: must be a table, got integer"),
])
def test_each_problem_is_reported_naming_table_and_key(data, problem):
    assert problems_of(data) == [problem]


@pytest.mark.parametrize("listener, problem", [
    ({"kind": "smpt"}, "[[listener]] #2 kind: must be one of smtp, submission, smtps, "
                       "imap, imaps, pop3, pop3s, https, http, got 'smpt'"),
    ({"port": 26}, "[[listener]] #2 kind: required"),
    ({"kind": "smtp", "port": 0}, "[[listener]] #2 port: must be between 1 and 65535, got 0"),
    ({"kind": "smtp", "port": "25"}, "[[listener]] #2 port: must be an integer, got string"),
    ({"kind": "smtp", "address": "localhost"},
     "[[listener]] #2 address: must be an IPv4 or IPv6 address, got 'localhost'"),
    ({"kind": "smtp", "tls": True}, "[[listener]] #2 tls: unknown key"),
    ({"kind": "imap", "address": "127.0.0.1", "port": 2525},
     "[[listener]] #2 port: 127.0.0.1 port 2525 is already used by listener #1"),
    ({"kind": "imap", "address": "0.0.0.0", "port": 2525},
     "[[listener]] #2 port: 0.0.0.0 port 2525 overlaps listener #1 (127.0.0.1)"),
])
def test_listener_problems_name_the_listener(listener, problem):
    first = {"kind": "smtp", "address": "127.0.0.1", "port": 2525}
    assert problems_of({"tls": TLS, "listener": [first, listener]}) == [problem]


def test_listeners_on_other_families_or_ports_do_not_clash():
    config = parse_config({"tls": TLS, "listener": [
        {"kind": "smtp", "address": "0.0.0.0", "port": 2525},
        {"kind": "smtp", "address": "::1", "port": 2525},
        {"kind": "imap", "address": "127.0.0.1", "port": 2526}]})
    assert len(config.listeners) == 3


def test_listener_must_be_an_array_of_tables():
    assert problems_of({"tls": TLS, "listener": {"kind": "smtp"}}) == [
        "[[listener]]: must be an array of tables, got table"]


def test_listeners_without_tls_need_cert_and_key():
    assert problems_of({"listener": [{"kind": "smtp", "port": 2525}]}) == [
        "[tls] cert: required when any listener is configured",
        "[tls] key: required when any listener is configured",
    ]


def test_every_problem_is_reported_at_once():
    problems = problems_of({
        "server": {"colour": "red", "shards": 0},
        "tls": {"min_version": "SSLv3"},
        "listener": [{"kind": "smtp"}, {"kind": "bogus"}, {"kind": "smtp"}],
        "dns": {"timeout": "10"},
        "limits": {"smtp_line_max": 5, "pop3_line_max": 10},
        "extra": {},
    }, path="/etc/x.toml")
    assert problems == [
        "[extra]: unknown table",
        "[server] colour: unknown key",
        "[server] shards: must be between 1 and 256, got 0",
        "[tls] min_version: must be one of TLSv1.2, TLSv1.3, got 'SSLv3'",
        "[dns] timeout: must be an integer (seconds), got string",
        "[[listener]] #2 kind: must be one of smtp, submission, smtps, imap, imaps, "
        "pop3, pop3s, https, http, got 'bogus'",
        "[[listener]] #3 port: 0.0.0.0 port 25 is already used by listener #1",
        "[limits] smtp_line_max: must be between 512 and 65536 (bytes), got 5",
        "[limits] pop3_line_max: must be between 255 and 65536 (bytes), got 10",
        "[tls] cert: required when any listener is configured",
        "[tls] key: required when any listener is configured",
    ]


def test_config_error_message_names_the_file_and_every_problem():
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": {"a": 1, "b": 2}}, "/etc/x.toml")
    assert caught.value.path == "/etc/x.toml"
    assert str(caught.value) == "/etc/x.toml: [server] a: unknown key; [server] b: unknown key"


# --- reading the file


def test_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == ["cannot read config file: no such file"]
    assert caught.value.path == str(path)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)  # a directory cannot be read as a file
    assert caught.value.problems == ["cannot read config file: Is a directory"]


def test_toml_syntax_error_gives_line_and_column(tmp_path):
    path = write(tmp_path, '[server]\nshards = 2\nhostname "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith("TOML syntax error: ")
    assert "(at line 3, column 10)" in problem
    assert str(caught.value).startswith(f"{path}: TOML syntax error")


def test_duplicate_key_is_a_toml_error(tmp_path):
    path = write(tmp_path, "[server]\nshards = 2\nshards = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "line 3" in caught.value.problems[0]


def test_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nuser = "j\xf6rg"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == ["not valid UTF-8 (at line 2)"]


def test_validation_errors_from_a_file_carry_its_path(tmp_path):
    path = write(tmp_path, "[limits]\nbcrypt_cost = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.path == str(path)
    assert caught.value.problems == [
        "[limits] bcrypt_cost: must be between 4 and 16 (log2 rounds), got 3"]


# --- the dev config


def test_dev_config_round_trips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = render_dev_config(Path("var"))
    var = tmp_path / "var"
    path = write(tmp_path, text, "elsewhere.toml")
    for config in (parse_config(tomllib.loads(text)), load_config(path)):
        assert config.server.data_dir == var / "data"
        assert config.tls.cert == var / "tls" / "cert.pem"
        assert config.tls.key == var / "tls" / "key.pem"
        assert config.server.hostname == "localhost"
        assert config.server.shards == 2
        assert [(l.kind, l.address, l.port) for l in config.listeners] == [
            ("smtp", "127.0.0.1", 2525), ("submission", "127.0.0.1", 2587),
            ("smtps", "127.0.0.1", 2465), ("imap", "127.0.0.1", 1143),
            ("imaps", "127.0.0.1", 1993), ("pop3", "127.0.0.1", 1110),
            ("pop3s", "127.0.0.1", 1995), ("https", "127.0.0.1", 8443),
            ("http", "127.0.0.1", 8080)]
    assert str(var / "data") in text  # written absolute, not relative


def test_dev_config_quotes_awkward_paths(tmp_path):
    var = tmp_path / 'we"ird\\dir'
    config = parse_config(tomllib.loads(render_dev_config(var)))
    assert config.server.data_dir == var / "data"


# --- the example file


def documented_keys(text: str) -> dict[str, dict[str, str]]:
    """Map each table of the example to its keys: set ones and ``#key = default`` ones.

    Values are the TOML text of ``#key = value`` lines (the documented default)
    or ``None`` for a key that is set.
    """
    keys: dict[str, dict[str, str | None]] = {}
    table = ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[\[?([a-z]+)\]\]?", line)
        if header:
            table = header.group(1)
            keys.setdefault(table, {})
            continue
        setting = re.fullmatch(r"(#?)([a-z_0-9]+) = (.*)", line)
        if setting:
            commented, name, value = setting.groups()
            keys[table][name] = value if commented else None
    return keys


def test_example_file_loads():
    config = load_config(EXAMPLE)
    assert sorted(l.port for l in config.listeners) == [25, 110, 143, 465, 587, 993, 995]
    assert config.tls.cert == Path("/etc/mailserverd/tls/cert.pem")
    assert config.tls.key == Path("/etc/mailserverd/tls/key.pem")


def test_example_file_documents_every_key():
    keys = documented_keys(EXAMPLE.read_text(encoding="utf-8"))
    schema = {**config_module._TABLES, "listener": ListenerConfig}
    for table, cls in schema.items():
        missing = {f.name for f in dataclasses.fields(cls)} - set(keys.get(table, {}))
        assert not missing, f"[{table}] not documented: {sorted(missing)}"
    assert {spec.name for spec in LIMIT_SPECS} <= set(keys["limits"])
    assert set(keys) == {f.name.replace("listeners", "listener")
                         for f in dataclasses.fields(Config)} - {"path"}


def default_of(table: str, name: str) -> object:
    if table == "limits":
        return LIMITS_BY_NAME[name].default
    value = getattr(config_module._TABLES[table](), name)
    if isinstance(value, tuple):
        return list(value)
    return str(value) if isinstance(value, Path) else value


def test_example_file_shows_the_true_defaults():
    keys = documented_keys(EXAMPLE.read_text(encoding="utf-8"))
    shown = [(table, name, value) for table, names in keys.items()
             for name, value in names.items() if value is not None]
    assert len(shown) > len(LIMIT_SPECS)
    for table, name, value in shown:
        documented = tomllib.loads(f"v = {value}")["v"]
        assert documented == default_of(table, name), f"[{table}] {name}"


def test_example_file_loads_with_every_default_uncommented(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^#([a-z_0-9]+ = )", r"\1", text)
    assert uncommented != text
    config = load_config(write(tmp_path, uncommented))
    assert config.limits == Limits()
    assert config.tls == load_config(EXAMPLE).tls
