"""Mail going out: the outbox worker, SMTP, Maildir and news sinks, the delivery journal."""
