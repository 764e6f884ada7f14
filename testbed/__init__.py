"""A chaos-engineering testbed for the synchronous-versus-asynchronous trade-off."""

__version__ = "0.1.0"
