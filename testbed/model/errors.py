"""What the model raises: a question it cannot answer, said plainly rather than guessed."""

from __future__ import annotations

from testbed.errors import TestbedError


class ModelError(TestbedError, ValueError):
    """The model was asked for something impossible (the message names the argument)."""


class NotModelled(ModelError):
    """A fault, knob or option the simulation does not reproduce; the message names it and
    lists what is modelled, so a prediction is never silently wrong."""
