"""Errors a user can act on.

Every error recon3d raises on bad input is a `Recon3dError`: its message names the input that was wrong
and says what to do. The CLI prints it as one line, without a traceback, and exits non-zero.
"""


class Recon3dError(Exception):
    """What was wrong with which input, and what the user can do about it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)

    def __reduce__(self):  # pickled whole, so an error raised on a Dask worker arrives with its fix
        return type(self), (self.problem, self.fix)


class ConfigError(Recon3dError):
    """A pipeline file, preset or `--set` override that does not validate."""


class DataError(Recon3dError):
    """Input data (a folder, an image, a model file) that cannot be read or recognised."""


class StageError(Recon3dError):
    """A stage that could not do its job on the scene it was given."""
