"""Moving mail in and out: Maildir and mbox import, Maildir export (through the store API)."""
