"""What a reload (SIGHUP) may change, and what only a restart can.

:func:`merge_reload` takes the running config and a freshly loaded one and
returns the config to run with: the new values, except for the keys in
:data:`RESTART_ONLY` (what was built once at start: sockets, the store, the
thread pools, the services that copied a value), which keep their running
value and are named so the reload can log them. Pure: no I/O.

Applied at a reload: ``[tls]`` (certificate, key, versions, ciphers) for
new handshakes; ``[log] level``; ``[dns]`` and ``[inbound]`` for mail received
after it; the protocol limits (``smtp_*``, ``imap_*``, ``pop3_*``,
``message_size_max``, ``connections_*``, ``shutdown_timeout``...) for new
connections, while open ones keep the limits they started with.
"""

from __future__ import annotations

from dataclasses import fields, replace

from mailserverd.config import Config

#: Keys read once at start, by table (``"listener"`` is the whole ``[[listener]]`` array).
RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "server": ("hostname", "data_dir", "shards", "user", "group", "socket_activation"),
    "auth": ("allow_plaintext",),
    "delivery": ("recipient_delimiter",),
    "log": ("format",),
    "outbound": ("*",),
    "metrics": ("*",),
}

#: ``[limits]`` kept at a reload: those of the store, the password checks,
#: the outbound queue and the metrics endpoint, which are built with them once.
RESTART_ONLY_LIMIT_PREFIXES = ("store_", "auth_", "queue_", "smtp_client_", "metrics_")
RESTART_ONLY_LIMITS = frozenset({"mailbox_name_max", "mailboxes_per_user_max", "bcrypt_cost",
                                 "scram_iterations"})

def _restart_only_limit(name: str) -> bool:
    return name in RESTART_ONLY_LIMITS or name.startswith(RESTART_ONLY_LIMIT_PREFIXES)


def _merge_table(old: object, new: object, names: tuple[str, ...], label: str,
                 kept: list[str]) -> object:
    """``new`` with the fields ``names`` (``"*"``: all) of ``old`` where they differ."""
    wanted = [f.name for f in fields(new) if "*" in names or f.name in names]
    keep = {name: getattr(old, name) for name in wanted if getattr(old, name) != getattr(new, name)}
    kept += [f"{label} {name}" for name in keep]
    return replace(new, **keep) if keep else new


def merge_reload(old: Config, new: Config) -> tuple[Config, list[str]]:
    """The config a reload runs with, and the changed keys it kept (``"[server] shards"``).

    The result is ``new`` with every restart-only key at its ``old`` value;
    ``path`` comes from ``new``.
    """
    kept: list[str] = []
    changes: dict[str, object] = {}
    for table, names in RESTART_ONLY.items():
        merged = _merge_table(getattr(old, table), getattr(new, table), names, f"[{table}]", kept)
        if merged is not getattr(new, table):
            changes[table] = merged
    if old.listeners != new.listeners:
        kept.append("[[listener]]")
        changes["listeners"] = old.listeners
    limit_names = tuple(f.name for f in fields(new.limits) if _restart_only_limit(f.name))
    limits = _merge_table(old.limits, new.limits, limit_names, "[limits]", kept)
    if limits is not new.limits:
        changes["limits"] = limits
    return (replace(new, **changes) if changes else new), kept
