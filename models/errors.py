"""Domain errors of the face engines."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised by ``models``."""


class BackendUnavailable(ModelError):
    """A backend whose runtime or model files are missing; the message says what to install."""


class InvalidImage(ModelError):
    """An image that cannot be read or is not an 8-bit grey, RGB or RGBA array."""
