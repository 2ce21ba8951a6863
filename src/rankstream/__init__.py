"""rankstream: from event log to served score."""

__version__ = "0.1.0"
