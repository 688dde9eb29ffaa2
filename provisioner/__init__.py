"""Bare-metal provisioning service: registry, PXE boot path and per-MAC kickstarts."""

__version__ = "0.1.0"
