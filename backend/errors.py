"""Errors that the CLI maps to the exit codes of the contract (architecture.md)."""
from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: exit code 2. The message says what is wrong, the hint how to fix it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Cancelled(Exception):
    """The job was cancelled (cancel file or signal): exit code 3."""


EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 3
