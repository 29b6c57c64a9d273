"""Errors a user can act on.

Every error raised for bad input names the file (or option), the field and the
fix, in one line. The CLI turns these into a one-line message and exit code 2
(usage/input) instead of a traceback.
"""
from __future__ import annotations


class DeepMapperError(Exception):
    """Base class for errors that are reported to the user as one line."""

    exit_code = 2

    def __init__(self, problem: str, *, where: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.problem = problem
        self.where = where
        self.field = field
        self.fix = fix
        super().__init__(self.format())

    def format(self) -> str:
        parts = []
        if self.where:
            parts.append(str(self.where))
        if self.field:
            parts.append(f"field '{self.field}'")
        head = ": ".join(parts)
        msg = f"{head}: {self.problem}" if head else self.problem
        if self.fix:
            msg += f" Fix: {self.fix}"
        return msg


class InputError(DeepMapperError):
    """The input data (files, labels, values) cannot be used as given."""


class ConfigError(DeepMapperError):
    """A configuration value is missing, of the wrong type or out of range."""


class FormatError(DeepMapperError):
    """An intermediate file (pass file, dataset) is not what this version reads."""


class ToolError(DeepMapperError):
    """An external tool (hisat2, salmon, rnaspades.py, ...) is missing or failed."""

    exit_code = 3
