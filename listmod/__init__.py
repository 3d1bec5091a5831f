"""listmod: a moderation daemon for mailing lists and moderated newsgroups."""

__version__ = "0.1.0"
