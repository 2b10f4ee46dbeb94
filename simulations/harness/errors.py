"""The harness's one error type."""

from __future__ import annotations


class HarnessError(RuntimeError):
    """A request the harness refuses, or a run that failed; the message says which and why."""
