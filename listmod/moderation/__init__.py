"""Moderators at work: digests, replies and their commands, receipts, the moderation worker, IMAP."""
