"""Search: the searchable text of messages, the index kept from the change log, and queries."""
