"""Every size, count and time limit of the server, named, with default and bounds.

This table is the one source: the config loader validates ``[limits]`` against
it, ``etc/mailserverd.toml`` documents each entry, and protocol code reads the
values from :class:`Limits` (``config.limits.smtp_line_max``). Add a limit here,
never as a literal in protocol code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass


@dataclass(frozen=True)
class LimitSpec:
    """One named limit: its default, inclusive bounds, unit and meaning."""

    name: str
    default: int
    minimum: int
    maximum: int
    unit: str
    doc: str


KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

LIMIT_SPECS: tuple[LimitSpec, ...] = (
    # --- SMTP (RFC 5321 §4.5.3.1 gives the minimum sizes a server must accept)
    LimitSpec("smtp_line_max", 2048, 512, 65536, "bytes",
              "Longest SMTP command line; RFC 5321 §4.5.3.1.4 requires at least 512."),
    LimitSpec("smtp_text_line_max", 100000, 1000, 1000000, "bytes",
              "Longest line inside DATA; RFC 5321 §4.5.3.1.6 requires at least 1000."),
    LimitSpec("message_size_max", 50 * MIB, 64 * KIB, 2 * GIB, "bytes",
              "Largest message accepted (SMTP SIZE, IMAP APPENDLIMIT)."),
    LimitSpec("smtp_recipients_max", 100, 1, 100000, "count",
              "Recipients per message (RFC 5321 §4.5.3.1.8 requires at least 100; LIMITS RCPTMAX)."),
    LimitSpec("smtp_bad_commands_max", 20, 1, 1000, "count",
              "Unknown or malformed commands before the connection is closed."),
    LimitSpec("smtp_commands_max", 10000, 10, 10000000, "count",
              "Commands in one SMTP session."),
    LimitSpec("smtp_auth_failures_max", 3, 1, 100, "count",
              "Failed AUTH exchanges in one SMTP session before 421 and close."),
    LimitSpec("inbound_threads", 4, 1, 64, "count",
              "Threads running SPF, DKIM, DMARC and DNSBL checks for received mail."),
    LimitSpec("dkim_signatures_max", 8, 1, 50, "count",
              "DKIM signatures verified per message; later ones are ignored."),
    LimitSpec("spf_check_timeout", 20, 20, 120, "seconds",
              "Time for one SPF evaluation with all its lookups (RFC 7208 §4.6.4: at least 20)."),
    LimitSpec("dns_cache_entries", 10000, 0, 10000000, "count",
              "DNS answers the inbound checks keep, each for its TTL (0: no cache)."),
    LimitSpec("spf_cache_seconds", 60, 0, 3600, "seconds",
              "How long an SPF result is reused for the same client, sender and HELO (0: never)."),
    LimitSpec("smtp_idle_timeout", 300, 10, 3600, "seconds",
              "Idle time before an SMTP session is closed (RFC 5321 §4.5.3.2.7: at least 5 minutes)."),
    LimitSpec("smtp_data_timeout", 600, 10, 3600, "seconds",
              "Time allowed between data blocks while a message is received."),
    # --- IMAP
    LimitSpec("imap_line_max", 65536, 1000, 10 * MIB, "bytes",
              "Longest IMAP command line (literals not counted); RFC 7162 §4 suggests 8192 at least."),
    LimitSpec("imap_literal_max", 50 * MIB, 1024, 2 * GIB, "bytes",
              "Largest literal in a command other than APPEND's message."),
    LimitSpec("imap_append_bytes_max", 100 * MIB, 64 * KIB, 4 * GIB, "bytes",
              "All messages of one APPEND together (RFC 3502 MULTIAPPEND; each is also "
              "bounded by message_size_max)."),
    LimitSpec("imap_bad_commands_max", 20, 1, 1000, "count",
              "Malformed commands before the connection is closed."),
    LimitSpec("imap_idle_timeout", 1800, 60, 86400, "seconds",
              "Idle time before an IMAP session is closed (RFC 9051 §5.4: at least 30 minutes)."),
    LimitSpec("imap_idle_poll_interval", 5, 1, 60, "seconds",
              "How often an idling session looks for changes other processes (the CLI) "
              "made; this process's own changes are pushed at once."),
    LimitSpec("imap_idle_notify_interval", 120, 10, 1800, "seconds",
              "Time between the '* OK Still here' lines sent to an idling client (keeps NAT "
              "and firewall state alive, as Dovecot's imap_idle_notify_interval)."),
    LimitSpec("imap_unauth_timeout", 60, 5, 3600, "seconds",
              "Time a connection may stay unauthenticated."),
    LimitSpec("imap_compress_level", 1, 1, 9, "zlib level",
              "DEFLATE level of COMPRESS=DEFLATE output (RFC 4978 §4 suggests 1-5; higher "
              "costs the server's CPU for little gain on mail)."),
    LimitSpec("imap_inflate_step", 64 * KIB, 4 * KIB, 1 * MIB, "bytes",
              "Input inflated at a time under COMPRESS=DEFLATE before the session reads "
              "it, which bounds what a decompression bomb costs."),
    # --- POP3
    LimitSpec("pop3_line_max", 512, 255, 65536, "bytes",
              "Longest POP3 command line (RFC 2449 §4: 255 octets plus CRLF at least)."),
    LimitSpec("pop3_bad_commands_max", 20, 1, 1000, "count",
              "Malformed commands before the connection is closed."),
    LimitSpec("pop3_idle_timeout", 600, 60, 86400, "seconds",
              "Idle time before a POP3 session is closed (RFC 1939 §3: at least 10 minutes)."),
    # --- Authentication
    LimitSpec("auth_failures_per_ip", 10, 1, 100000, "count",
              "Failed logins from one IP within auth_failure_window before it is throttled."),
    LimitSpec("auth_failures_per_account", 10, 1, 100000, "count",
              "Failed logins for one account within auth_failure_window before it is throttled."),
    LimitSpec("auth_failure_window", 300, 10, 86400, "seconds",
              "Window over which failed logins are counted."),
    LimitSpec("auth_failure_delay", 1, 0, 60, "seconds",
              "Delay before a failed login is answered."),
    LimitSpec("auth_pool_threads", 2, 1, 64, "count",
              "Threads that check passwords (bcrypt)."),
    LimitSpec("auth_pool_queue_max", 200, 1, 100000, "count",
              "Password checks waiting for a thread before new ones are refused."),
    LimitSpec("bcrypt_cost", 12, 4, 16, "log2 rounds",
              "bcrypt cost for newly set passwords."),
    LimitSpec("scram_iterations", 8192, 4096, 1000000, "count",
              "PBKDF2 iterations for newly derived SCRAM-SHA-256 secrets (RFC 7677 §4: at least 4096)."),
    # --- Connections
    LimitSpec("connections_max", 2000, 1, 1000000, "count",
              "Open client connections over all listeners."),
    LimitSpec("connections_per_ip_max", 50, 1, 100000, "count",
              "Open client connections from one IP address."),
    LimitSpec("listen_backlog", 511, 1, 65535, "count",
              "Connections the kernel queues on a listener before the daemon accepts them "
              "(capped by net.core.somaxconn); systemd's sockets take Backlog= instead."),
    # --- Abuse limits shared by every protocol (mailserverd/abuse.py)
    LimitSpec("connections_per_ip_per_minute", 120, 1, 1000000, "count",
              "New connections one client network (an IPv4 address, an IPv6 /64) may open "
              "a minute over all listeners; [abuse] exempt_networks are spared."),
    LimitSpec("commands_per_ip_per_second", 100, 1, 1000000, "count",
              "Sustained commands a second from one client network over all its sessions "
              "(SMTP, IMAP, POP3 commands; HTTP requests have http_requests_per_minute)."),
    LimitSpec("commands_burst_per_ip", 2000, 1, 10000000, "count",
              "Commands one client network may send at once above commands_per_ip_per_second "
              "(a client pipelining a resync, a big SMTP batch)."),
    LimitSpec("sessions_per_account_max", 50, 1, 100000, "count",
              "Logged-in SMTP, IMAP and POP3 sessions one account may have open at once "
              "(each device of a user keeps several IMAP connections)."),
    LimitSpec("abuse_tracked_keys_max", 100000, 100, 10000000, "count",
              "Client networks each rate limit keeps track of; past it the least recently "
              "seen one is forgotten."),
    LimitSpec("greylist_delay", 300, 1, 86400, "seconds",
              "Time a new (network, sender, recipient) must wait before it is accepted, "
              "when [abuse] greylisting is on (postgrey's delay)."),
    LimitSpec("greylist_retry_window", 2 * 86400, 60, 30 * 86400, "seconds",
              "Time after the first try in which a retry must come to pass greylisting."),
    LimitSpec("greylist_pass_lifetime", 35 * 86400, 3600, 365 * 86400, "seconds",
              "How long a (network, sender, recipient) that passed is accepted at once "
              "after it was last seen (postgrey's max-age)."),
    LimitSpec("greylist_entries_max", 100000, 100, 10000000, "count",
              "Greylisting entries kept; past it the least recently seen one is forgotten."),
    # --- HTTP gateway (mailserverd/web/)
    LimitSpec("http_body_max", 72 * MIB, 64 * KIB, 3 * GIB, "bytes",
              "Largest HTTP request body; base64 attachments need about 4/3 of "
              "message_size_max. Refused by Content-Length first, else while read."),
    LimitSpec("http_requests_per_minute", 600, 1, 1000000, "count",
              "Sustained API requests per minute for one token or account (429 past it)."),
    LimitSpec("http_requests_burst", 60, 1, 1000000, "count",
              "API requests one token or account may make at once above the per-minute rate."),
    LimitSpec("http_idle_timeout", 60, 5, 3600, "seconds",
              "Idle time before an HTTP connection is closed (also while a body is sent)."),
    LimitSpec("http_status_retention", 7 * 86400, 3600, 365 * 86400, "seconds",
              "How long GET /api/v1/messages/{id} can show a sent message (and its "
              "idempotency key is remembered)."),
    # --- Store
    LimitSpec("store_map_size", 64 * GIB, 1 * MIB, 1 << 40, "bytes",
              "Maximum size of each LMDB environment (sparse; the file grows as needed)."),
    LimitSpec("store_batch_max", 256, 1, 100000, "count",
              "Writes committed together by one group commit."),
    LimitSpec("store_queue_max", 10000, 1, 1000000, "count",
              "Writes waiting for a shard's writer before new ones get a temporary error."),
    LimitSpec("store_parse_workers", 2, 1, 64, "count",
              "Worker processes that parse incoming messages into their stored IMAP facts "
              "(processes, so that parsing uses other cores than the reactor's)."),
    # --- search index (mailserverd/search/)
    LimitSpec("search_index_batch", 500, 1, 100000, "count",
              "Messages the indexer adds to the search index in one transaction."),
    LimitSpec("search_index_interval", 1, 1, 3600, "seconds",
              "How often the indexer looks for changes to add to the search index when idle."),
    LimitSpec("search_index_nice", 10, 0, 19, "count",
              "Nice value added to the indexer's worker process, so that it yields the CPU "
              "to deliveries and catches up when they pause."),
    LimitSpec("search_index_workers", 2, 1, 64, "count",
              "Worker processes that extract the text of messages for the search index "
              "(at the lower priority of search_index_nice)."),
    LimitSpec("search_rebuild_chunk", 100, 1, 100000, "count",
              "Messages that mailserverd index rebuild gives new index entries in one "
              "transaction (small, so that deliveries to other users interleave)."),
    LimitSpec("search_compact_chunk", 1000, 1, 1000000, "count",
              "Postings that mailserverd index rebuild clears of removed messages in "
              "one transaction."),
    LimitSpec("search_text_max", 4 * MIB, 64 * KIB, 1 * GIB, "bytes",
              "Decoded text of one message above which it is not split into tokens "
              "(every text search then reads its stored text)."),
    LimitSpec("search_threads", 2, 1, 64, "count",
              "Threads that run IMAP SEARCH, SORT and THREAD off the reactor."),
    LimitSpec("search_verify_direct_max", 200, 0, 100000, "count",
              "Messages at or below which a text key reads their stored text "
              "directly instead of narrowing by the index's vocabulary first."),
    # --- the spam classifier (mailserverd/delivery/bayes.py, spamtrainer.py)
    LimitSpec("spam_training_min", 20, 1, 1000000, "count",
              "Messages of each class (spam, ham) a user's own spam model needs before "
              "it is used; until then the site-wide model decides."),
    LimitSpec("spam_tokens_max", 1000, 10, 100000, "count",
              "Distinct tokens the spam classifier takes from one message."),
    LimitSpec("spam_message_max", 512 * KIB, 16 * KIB, 50 * MIB, "bytes",
              "Messages larger than this are neither classified nor learnt from by the "
              "spam classifier (the rules still score them)."),
    LimitSpec("spam_train_batch", 200, 1, 100000, "count",
              "Messages the spam trainer learns from in one transaction."),
    LimitSpec("spam_train_interval", 1, 1, 3600, "seconds",
              "How often the spam trainer looks for moves into and out of Junk when idle."),
    LimitSpec("mailbox_name_max", 400, 16, 480, "bytes",
              "Longest mailbox name in UTF-8 (LMDB keys are at most 511 bytes)."),
    LimitSpec("mailboxes_per_user_max", 10000, 10, 1000000, "count",
              "Mailboxes one user may have."),
    LimitSpec("quota_default", 0, 0, 1 << 50, "bytes",
              "Storage quota for new users; 0 means unlimited."),
    LimitSpec("import_batch_max", 64, 1, 10000, "count",
              "Messages mailserverd import has in flight at once (committed together; "
              "also at most message_size_max bytes)."),
    LimitSpec("shutdown_timeout", 30, 0, 3600, "seconds",
              "Time sessions get to finish on SIGTERM."),
    LimitSpec("metrics_idle_timeout", 60, 1, 3600, "seconds",
              "Idle time before a connection to the metrics endpoint is closed."),
    # --- Outbound queue (Postfix's qmgr defaults)
    LimitSpec("queue_retry_min", 300, 1, 86400, "seconds",
              "Delay before the first retry of a deferred recipient; doubles at each "
              "attempt (Postfix's minimal_backoff_time)."),
    LimitSpec("queue_retry_max", 14400, 1, 604800, "seconds",
              "Longest delay between two attempts (Postfix's maximal_backoff_time)."),
    LimitSpec("queue_lifetime", 432000, 1, 30 * 86400, "seconds",
              "Time a recipient may stay undelivered before it bounces (5 days; "
              "RFC 5321 §4.5.4.1: at least 4-5 days)."),
    LimitSpec("queue_active_max", 1000, 1, 1000000, "count",
              "Recipients the scheduler holds in memory at once (the active window); "
              "the rest wait in the store."),
    LimitSpec("queue_destination_concurrency", 10, 1, 1000, "count",
              "Deliveries in progress to one destination domain at once."),
    LimitSpec("queue_destination_rate", 0, 0, 100000, "count",
              "Delivery attempts started per destination domain per minute; 0: no limit."),
    LimitSpec("queue_scan_interval", 60, 1, 3600, "seconds",
              "Longest time between two looks at the queue for due recipients (for "
              "changes made by other processes)."),
    LimitSpec("queue_control_interval", 1, 1, 60, "seconds",
              "How often the scheduler looks for changes the CLI made to the queue "
              "(flush, retry, hold, release, remove)."),
    LimitSpec("queue_delay_warning", 14400, 0, 30 * 86400, "seconds",
              "Time undelivered after which the sender gets one delay notice "
              "(RFC 3464 action=delayed; Postfix's delay_warning_time); 0: never."),
    LimitSpec("queue_done_retention", 7 * 86400, 0, 365 * 86400, "seconds",
              "How long the final state of each recipient of a message that left the "
              "queue is kept, for the HTTP status endpoint (0: not kept)."),
    LimitSpec("dkim_sign_threads", 2, 1, 64, "count",
              "Threads signing outgoing mail with DKIM."),
    # --- SMTP client (outbound), RFC 5321 §4.5.3.2 timeouts
    LimitSpec("smtp_client_connect_timeout", 30, 1, 600, "seconds",
              "Time to open a TCP connection to a remote MX."),
    LimitSpec("smtp_client_greeting_timeout", 300, 1, 3600, "seconds",
              "Time to wait for the 220 greeting (RFC 5321 §4.5.3.2.1: 5 minutes)."),
    LimitSpec("smtp_client_command_timeout", 300, 1, 3600, "seconds",
              "Time to wait for the reply to EHLO, STARTTLS, MAIL, RCPT "
              "(RFC 5321 §4.5.3.2.2-3: 5 minutes)."),
    LimitSpec("smtp_client_data_init_timeout", 120, 1, 3600, "seconds",
              "Time to wait for the 354 reply to DATA (RFC 5321 §4.5.3.2.4: 2 minutes)."),
    LimitSpec("smtp_client_data_block_timeout", 180, 1, 3600, "seconds",
              "Time for the peer to take one block of the message (RFC 5321 §4.5.3.2.5: 3 minutes)."),
    LimitSpec("smtp_client_data_done_timeout", 600, 1, 3600, "seconds",
              "Time to wait for the reply after the final dot (RFC 5321 §4.5.3.2.6: 10 minutes)."),
    LimitSpec("smtp_client_reply_line_max", 2048, 512, 65536, "bytes",
              "Longest reply line accepted from a peer (RFC 5321 §4.5.3.1.5: 512 at least)."),
    LimitSpec("smtp_client_reply_lines_max", 200, 1, 10000, "count",
              "Lines in one multi-line reply from a peer."),
)

LIMITS_BY_NAME = {spec.name: spec for spec in LIMIT_SPECS}

Limits = make_dataclass(
    "Limits",
    [(spec.name, int, field(default=spec.default)) for spec in LIMIT_SPECS],
    frozen=True,
)
Limits.__doc__ = "The limits in force; each attribute is named by a :data:`LIMIT_SPECS` entry."


def validate_limit(name: str, value: object) -> str | None:
    """Return a problem text for ``value`` of limit ``name``, or ``None`` if valid."""
    spec = LIMITS_BY_NAME.get(name)
    if spec is None:
        return "unknown key"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer ({spec.unit}), got {type(value).__name__}"
    if not spec.minimum <= value <= spec.maximum:
        return f"must be between {spec.minimum} and {spec.maximum} ({spec.unit}), got {value}"
    return None
