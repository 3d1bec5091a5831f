"""Mail coming in: the SMTP/LMTP server, its limits, and replies mailed to LIST-moderation@."""
