"""onss-relay: relay Belgian social security declarations to the ONSS transfer point."""

__version__ = "0.1.0"
