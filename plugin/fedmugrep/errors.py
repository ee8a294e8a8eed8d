"""One family of errors. Every message says what is wrong and what to do next."""

from __future__ import annotations


class FedMugRepError(Exception):
    """Base class of every error fedmugrep raises on purpose."""


class ConfigError(FedMugRepError, ValueError):
    """A configuration value or argument is invalid."""


class PrivacyParameterError(ConfigError):
    """A privacy parameter (epsilon, delta, sensitivity, bound, ...) is invalid."""


class DataValidationError(FedMugRepError, ValueError):
    """An input file violates the schema.

    Attributes:
        file: path of the offending file.
        row: 1-based data row (header excluded) or ``None`` when the problem is file-wide.
        column: offending column or ``None``.
        problem: what is wrong.
        fix: how to fix it.
    """

    def __init__(
        self,
        *,
        file: str,
        problem: str,
        fix: str,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = str(file)
        self.row = row
        self.column = column
        self.problem = problem
        self.fix = fix
        where = [f"file {self.file}"]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {problem}. Fix: {fix}")


class ConfigFileError(DataValidationError, ConfigError):
    """A config file that cannot be read as TOML: not UTF-8 text, or a syntax error.

    Both a :class:`~fedmugrep.errors.ConfigError` and a
    :class:`~fedmugrep.errors.DataValidationError` (bad input: the CLI exits with code 2);
    ``file`` is the path, ``row`` the 1-based line of a syntax error (``None`` otherwise).
    """


class UsageError(ConfigError):
    """Bad usage or bad input a command finds in its arguments (an option's value, a file or
    folder named on the command line): the CLI exits with 2. The message names the option or
    the file. A :class:`ConfigError`, so code catching those sees it too."""


class BudgetExceededError(FedMugRepError):
    """A release would exceed the privacy budget cap; nothing was released."""


class LedgerIntegrityError(FedMugRepError):
    """The privacy ledger fails verification (an entry was edited, deleted, inserted or reordered)."""


class ReleaseRefusedError(FedMugRepError):
    """A datasite could not compute a release on its private data; nothing was released or
    charged. The message is generic on purpose (the detail is in the data owner's log)."""


class RequestDeniedError(FedMugRepError):
    """A data owner denied a request; the message carries their reason."""


class DatasiteUnresponsiveError(FedMugRepError, ConnectionError):
    """A datasite accepted a call but did not answer within the call timeout (hung, not down).

    Not retried: a hung server stays hung. The run's checkpoint stays valid; once the data
    owner has restarted the datasite, resume the run.
    """
