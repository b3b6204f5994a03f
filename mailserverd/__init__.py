"""mailserverd: an SMTP, IMAP4 and POP3 server on one Twisted reactor and a sharded LMDB store."""

__version__ = "0.1.0"
