"""What a reload applies, and which changed keys it keeps until a restart."""

from __future__ import annotations

from pathlib import Path

from mailserverd.config import parse_config
from mailserverd.reload import merge_reload

BASE = {
    "server": {"hostname": "mx.example.test", "data_dir": "/srv/mail", "shards": 2},
    "tls": {"cert": "/etc/ssl/a.pem", "key": "/etc/ssl/a.key"},
    "listener": [{"kind": "imap", "address": "127.0.0.1", "port": 1143}],
}


def config(**changes):
    """BASE with each table in ``changes`` updated (``listener``: replaced)."""
    data = {table: (dict(value) if isinstance(value, dict) else list(value))
            for table, value in BASE.items()}
    for table, values in changes.items():
        if isinstance(values, dict):
            data.setdefault(table, {}).update(values)
        else:
            data[table] = values
    return parse_config(data, "/etc/mailserverd/mailserverd.toml")


def test_unchanged_config_keeps_nothing():
    old = config()
    merged, kept = merge_reload(old, config())
    assert kept == [] and merged == old


def test_reloadable_keys_take_the_new_value():
    old = config()
    new = config(tls={"cert": "/etc/ssl/b.pem", "key": "/etc/ssl/b.key"},
                 limits={"imap_line_max": 8192, "message_size_max": 1 << 20,
                         "connections_max": 10, "shutdown_timeout": 5},
                 log={"level": "debug"}, dns={"resolver": "192.0.2.53"},
                 inbound={"junk_threshold": 3.0})
    merged, kept = merge_reload(old, new)
    assert kept == []
    assert merged == new


def test_restart_only_keys_keep_the_running_value_and_are_named():
    old = config()
    new = config(server={"data_dir": "/elsewhere", "shards": 8, "hostname": "other.example.test"},
                 listener=[{"kind": "imap", "address": "127.0.0.1", "port": 2143}],
                 limits={"store_map_size": 1 << 30, "auth_pool_threads": 8,
                         "imap_line_max": 8192},
                 log={"format": "json"})
    merged, kept = merge_reload(old, new)
    assert sorted(kept) == sorted([
        "[server] hostname", "[server] data_dir", "[server] shards", "[[listener]]",
        "[limits] store_map_size", "[limits] auth_pool_threads", "[log] format"])
    assert merged.server == old.server
    assert merged.listeners == old.listeners
    assert merged.limits.store_map_size == old.limits.store_map_size
    assert merged.limits.auth_pool_threads == old.limits.auth_pool_threads
    assert merged.log.format == "text"
    assert merged.limits.imap_line_max == 8192  # applied beside the kept ones
    assert merged.server.data_dir == Path("/srv/mail")
