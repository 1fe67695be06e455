"""The project's two kinds of failure and the exit code of each (the same in every command).

- `ConfigError`: a config file, an override or a flag that cannot be used -- a mistake the user fixes in the command
  line or the config (a misspelled field, an encoder that does not exist, a negative batch size, a composition to
  hold out that the data does not have). Exit code 2 (`EXIT_USAGE`).
- `DataError`: the command was well formed but the run failed on its input, its data or its disk (a damaged store or
  checkpoint, a full disk, a split that cannot be ranked, a NaN loss, a workdir trained on other data, a failed
  extraction item). Exit code 1 (`EXIT_FAILED`).

Every error class of the project derives from one of the two, so a command catches these two and nothing else: any
other exception is a bug and keeps its traceback. A class may derive from both when a check of the config can only
be made against the data (e.g. `crescend_jax.data.splits.SplitConfigError`): it is a config mistake (exit 2).
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ConfigError(ValueError):
    """A config file, an override or a flag that cannot be applied; nothing was started (exit 2)."""


class DataError(RuntimeError):
    """A run that failed on its input, data or disk (exit 1); the message names the file or item and the way out."""


def exit_code(err: BaseException) -> int:
    """`EXIT_USAGE` for a `ConfigError` (also one that is a `DataError` too), `EXIT_FAILED` for a `DataError`;
    anything else is not one of the project's failures: TypeError (a bug keeps its traceback)."""
    if isinstance(err, ConfigError):
        return EXIT_USAGE
    if isinstance(err, DataError):
        return EXIT_FAILED
    raise TypeError(f"{type(err).__name__} is neither a ConfigError nor a DataError") from err
