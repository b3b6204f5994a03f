"""The outbound queue: durable spool (kept through store/), scheduler, MX routing, DSN bounces."""
