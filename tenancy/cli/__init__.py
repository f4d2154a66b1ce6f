"""The `tenancy` command line: parse, run the subcommand, and turn what goes wrong into one line on stderr (a
catalogue's problems, the project's errors, a missing file, a database error with its password redacted), never a
traceback. Exit codes: 0 ok, 1 failure, 2 bad input.

The grammar is `parser.py`; the commands are grouped by what they act on (`plan_commands`, `deploy_commands`,
`tenant_commands`, `registry_commands`) over what they share (`common`)."""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

from tenancy.cli.common import EXIT_FAIL, EXIT_INPUT, redact
from tenancy.cli.parser import build_parser
from tenancy.errors import CatalogError, TenancyError

__all__ = ["build_parser", "main", "run"]


def run() -> NoReturn:
    """The `tenancy` command: main(), then an exit without the interpreter's teardown when nothing is left to
    finish (no child process, no other thread): freeing a 10,000-tenant catalogue and every imported SDK module
    object by object takes about a second, after the work is done and written."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:          # a closed pipe: the interpreter's own exit says so as it always has
        sys.exit(code)
    import multiprocessing
    import threading

    if threading.active_count() == 1 and not multiprocessing.active_children():
        os._exit(code)
    sys.exit(code)


def _quiet_google_python_warning() -> None:
    """google.api_core warns, when a command first opens a Firestore or Cloud Storage client, that new releases of
    Google's libraries will drop this Python version: nothing an operator can act on (Python 3.11 is the project's
    pinned runtime, raised with its dependencies), printed on every such command. Only that warning is silenced:
    FutureWarning, from google.api_core's Python-version check, with its message; every other warning still shows."""
    import warnings

    warnings.filterwarnings("ignore", message=r"You are using a (non-supported )?Python version", category=FutureWarning,
                            module=r"google\.api_core\._python_version_support")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PULUMI_ERROR_OUTPUT_STRING", "1")
    _quiet_google_python_warning()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    func: Callable = args.func
    try:
        return func(args)
    except CatalogError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); nothing was planned or applied", file=sys.stderr)
        return EXIT_INPUT
    except TenancyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:   # a file or directory the command needs (export directory, state directory, ...)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error:{where}: {exc.strerror or exc}; nothing more was done", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # noqa: BLE001 -- the last line of defence: one line, never a traceback or a secret
        import psycopg

        if isinstance(exc, psycopg.Error):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"error: database: {redact(first)}; nothing more was done", file=sys.stderr)
            return EXIT_FAIL
        raise
