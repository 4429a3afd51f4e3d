"""The two ways a pretrained-artifact operation fails, each with a one-line message."""

from __future__ import annotations


class PullError(RuntimeError):
    """A resolve, download, verification or unpacking failure (the destination is untouched)."""


class PublishError(RuntimeError):
    """An artifact could not be published (nothing under the output folder changed)."""
