"""The project's error types and the one boundary that turns them into a line for the user.

``HfAttnError`` is the root. ``UsageError`` (also a ``ValueError``) is a problem the user can fix: a bad option,
data file, output folder or checkpoint; its message names the option / file / line and the fix. Its subclasses say
which (``ConfigError``, ``DataError``, ``CheckpointError``, ``OutputError``, ``FolderLockedError``, ...).
``hf_attn.push.HubError`` (a Hub failure the user can fix) and ``RunFailedError`` are the others.

``cli_errors(prog)`` wraps every console entry point (``hf-attn ...`` and the recipes), the way argparse's
``parser.error`` does for bad flags: a user error becomes one line ``prog: error: <what> (<how to fix>)`` on stderr
and exit code 2, without a traceback. ``--debug`` on the command line, or ``HF_ATTN_DEBUG=1`` in the environment,
shows the traceback as well. Anything else (a bug) is raised as is.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback


class HfAttnError(Exception):
    """The root of hf_attn's own errors: the entry points print their message as one line."""


class UsageError(HfAttnError, ValueError):
    """A problem the user can fix (a bad option, data file, output folder or checkpoint): the entry points print its
    message, which names the option / file / line and the fix, without a traceback and exit with code 2."""


class RunFailedError(HfAttnError, RuntimeError):
    """A run that started but could not finish (e.g. a non-finite loss): one line, exit code 1."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    """What the boundary prints as one line: the project's own error types, the validation errors API code raises
    (``ValueError`` naming argument, expected and got), missing or clashing files, and a missing optional package."""
    types: list[type[BaseException]] = [HfAttnError, ValueError, FileNotFoundError, FileExistsError,
                                        NotADirectoryError, IsADirectoryError, PermissionError, ImportError]
    export_check = sys.modules.get("hf_attn.export_check")  # only an imported module can have raised its error
    if export_check is not None:
        types.append(export_check.ExportVerificationError)
    return tuple(types)


def check_device(name: str, flag: str = "--device") -> str:
    """``name`` resolved ('auto' -> cuda when available, else cpu) if this machine has that device, else
    ``UsageError`` saying which devices it has."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{flag} {name}: not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {name}: CUDA is not available on this machine; use {flag} cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{flag} {name}: MPS is not available on this machine; use {flag} cpu (or auto)")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise UsageError(f"{flag} {name}: unsupported device type; use auto, cpu or cuda")
    return name


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("HF_ATTN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def one_line(exc: BaseException) -> str:
    """The error's message on one line (whitespace, newlines included, collapsed)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def exit_code(exc: BaseException) -> int:
    """2 for everything the user can fix; 1 for a run that could not finish and for an export that did not verify
    (the folder was written but differs)."""
    mod = sys.modules.get("hf_attn.export_check")
    if isinstance(exc, RunFailedError) or mod is not None and isinstance(exc, mod.ExportVerificationError):
        return 1
    return 2


def run_entry_point(prog: str, main, argv: list[str] | None = None, *args, **kwargs) -> int:
    """``main(argv, ...)`` behind the user-error boundary (see ``cli_errors``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv, *args, **kwargs)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except _user_error_types() as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return exit_code(e)


def cli_errors(prog: str):
    """Decorator for a console entry point ``main(argv=None) -> int``.

    ``--debug`` is taken out of ``argv`` (it only decides whether a traceback is shown). A user error (see
    ``_user_error_types``) prints ``prog: error: <message>`` and returns its exit code (2); KeyboardInterrupt prints
    ``prog: interrupted`` and returns 130.
    """

    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None, *args, **kwargs):
            return run_entry_point(prog, main, argv, *args, **kwargs)

        return wrapper

    return decorate


__all__ = ["HfAttnError", "RunFailedError", "UsageError", "check_device", "cli_errors", "debug_requested", "exit_code",
           "one_line", "run_entry_point"]
