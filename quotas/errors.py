"""Errors of the port ledger."""

from __future__ import annotations


class LedgerError(RuntimeError):
    """A ledger script answered something it never answers (a bug or a foreign write)."""


class NoNodeAvailable(RuntimeError):
    """No live, ready media node has room for the outage being placed."""
