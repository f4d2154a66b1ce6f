"""The project's own error types: each carries what a person needs to fix the problem."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem in an input file: where it is, what is wrong, what to do."""

    file: str
    line: int | None
    subject: str | None  # "tenant 'acme'", "tenants[3] (position 4)", "plan 'premium'", or None for the file
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        subject = f" {self.subject}:" if self.subject else ""
        return f"{where}:{subject} {self.field}: {self.message}"


class TenancyError(Exception):
    """Base for errors the command line reports without a traceback."""

    exit_code = 1


class CatalogError(TenancyError):
    """The catalogue (or another input) is invalid; nothing was applied."""

    exit_code = 2

    def __init__(self, problems: list[Problem], partial=None):
        self.problems = list(problems)
        # The catalogue of the entries without problems (tenancy.catalog.Catalog), so that the checks that need a
        # catalogue (its fit to an environment) report in the same run; None when there is no such catalogue.
        self.partial = partial
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(TenancyError):
    """A stack's configuration is missing or invalid."""

    exit_code = 2


class EngineError(TenancyError):
    """A stack operation (preview, update, destroy, its outputs) failed or could not start."""

    exit_code = 1


class PlanError(TenancyError):
    """A stack program failed while being planned offline."""

    exit_code = 1


class OperationError(TenancyError):
    """An operation on tenant data failed; the message says how to resume or abort it."""

    exit_code = 1


class Refused(OperationError):
    """A safety rule stopped the operation; what it changed (usually nothing) is said in the message."""


class PreflightRefused(Refused):
    """What the operation was given does not fit (a wrong store, an unusable directory, a store out of reach):
    nothing was changed. Bad input: exit 2."""

    exit_code = 2
