"""opentasks: a self-hosted, durable server for the Google Cloud Tasks API v2."""

__version__ = "0.1.0"
