"""What every command shares on the console: exit codes, one-line errors and warnings, each command's ``--help``.

The top floor's lowest module: `crescend_jax.cli` (the one entry point), `crescend_jax.commands`, `crescend_jax.demo`
and `crescend_jax.sweeps` import it; it imports nothing of theirs (no circle on the top floor).
"""

from __future__ import annotations

import sys
import textwrap
from typing import Callable, Mapping, Sequence, TypeVar

import ml_collections

from crescend_jax.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, DataError, exit_code

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "fail", "guarded", "help_text", "one_line_warning"]

WIDTH = 118  # help lines are wrapped here
T = TypeVar("T")


def fail(message: str | BaseException, code: int) -> int:
    """Prints ``error: <message>`` (its first line) on stderr and returns ``code``."""
    text = str(message).strip() or type(message).__name__
    print(f"error: {text}", file=sys.stderr)
    return code


def guarded(run: Callable[[], int]) -> int:
    """``run()``'s exit code; a `ConfigError` (exit 2) or `DataError` (exit 1) it raises is printed as one line.
    Any other exception is a bug and propagates with its traceback."""
    try:
        return run()
    except (ConfigError, DataError) as err:
        return fail(err, exit_code(err))


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """`warnings.formatwarning` for the console: the message, not the source line that raised it."""
    return f"warning: {message}\n"


def _value_text(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_field_lines(config: ml_collections.ConfigDict, depth: int = 2) -> list[str]:
    """The fields of ``config`` as help lines: top-level values, then one wrapped line per section (down to
    ``depth`` dotted levels) listing its fields ``name=value``; deeper sections are named with ``...``."""
    lines, sections = [], []
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            sections.append((name, value, 1))
        else:
            lines.append(f"  {name} = {_value_text(value)}")
    while sections:
        prefix, section, level = sections.pop(0)
        cells = []
        for name, value in section.items():
            if isinstance(value, ml_collections.ConfigDict):
                if level < depth:
                    sections.append((f"{prefix}.{name}", value, level + 1))
                else:
                    cells.append(f"{name}.(...)")
            else:
                cells.append(f"{name}={_value_text(value)}")
        body = ", ".join(cells) if cells else "(no fields)"
        lines.append(textwrap.fill(body, WIDTH, initial_indent=f"  {prefix}: ",
                                   subsequent_indent=" " * (len(prefix) + 4)))
    return lines


def help_text(command: str, summary: str, usage: str, flags: Mapping[str, str],
              config: ml_collections.ConfigDict | None = None, config_source: str = "",
              notes: Sequence[str] = ()) -> str:
    """``crescend-jax COMMAND --help``: the summary, usage, each flag with its meaning, then (given a config) its
    main fields with their values, every one of which ``--config.FIELD=VALUE`` overrides."""
    lines = [f"crescend-jax {command}: {summary}", "", f"usage: {usage}", "", "flags:"]
    width = max(len(name) for name in flags) + 2
    for name, text in flags.items():
        lines.append(textwrap.fill(text, WIDTH, initial_indent=f"  {name:<{width}}",
                                   subsequent_indent=" " * (width + 2)))
    if config is not None:
        lines += ["", f"config fields ({config_source}; override any with --config.FIELD=VALUE):"]
        lines += config_field_lines(config)
    if notes:
        lines += [""] + [textwrap.fill(note, WIDTH) for note in notes]
    return "\n".join(lines)
