"""The Firestore API as the store calls it: one client per project, database and emulator host, retries of
transient errors, and every API error as one line naming the location and what to do.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

from tenancy.stores import Mismatch, StoreError
from tenancy.stores.firestore.location import FirestoreLocation, SHOWN


RETRY_SECONDS = 60.0            # how long transient errors (unavailable, deadline) are retried per call


# --- clients, errors and checks ------------------------------------------------------------------------------

_clients: dict[tuple[str, str, str | None], Any] = {}


def client_for(loc: FirestoreLocation):
    """One client per project, database and emulator host (FIRESTORE_EMULATOR_HOST selects a local server)."""
    key = (loc.project, loc.database, os.environ.get("FIRESTORE_EMULATOR_HOST"))
    if key not in _clients:
        try:
            from google.auth.exceptions import GoogleAuthError
            from google.cloud import firestore
        except ImportError:
            raise StoreError("Firestore stores need the google-cloud-firestore package (pinned in "
                             "requirements.txt; run `make venv`)") from None
        try:
            _clients[key] = firestore.Client(project=loc.project, database=loc.database)
        except GoogleAuthError as exc:
            raise StoreError(f"{loc}: no Google credentials ({_one_line(exc)}); run `gcloud auth "
                             "application-default login`, or set FIRESTORE_EMULATOR_HOST=host:port for a local "
                             "Firestore API server") from None
    return _clients[key]


def retry():
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry, if_exception_type

    transient = if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
                                  gexc.ResourceExhausted)
    return Retry(predicate=transient, initial=0.2, maximum=5.0, multiplier=2.0, timeout=RETRY_SECONDS)


@contextmanager
def api_errors(loc: FirestoreLocation, doing: str):
    """Firestore and auth errors become one StoreError line naming the project and database."""
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except gexc.FailedPrecondition as exc:
        raise Mismatch(f"{loc}: {doing}: a document changed after it was read ({_one_line(exc)}); that commit was "
                       "not applied; run again to re-check") from None
    except (gexc.PermissionDenied, gexc.Unauthenticated) as exc:
        raise StoreError(f"{loc}: permission denied while {doing} ({_one_line(exc)}); the caller needs "
                         f"roles/datastore.user (or owner for deletes) on project {loc.project}") from None
    except gexc.NotFound as exc:
        raise StoreError(f"{loc}: not found while {doing} ({_one_line(exc)}); does database "
                         f"{loc.database!r} exist in project {loc.project}?") from None
    except gexc.RetryError as exc:
        raise StoreError(f"{loc}: cannot reach Firestore while {doing} (gave up after {RETRY_SECONDS:.0f}s: "
                         f"{_one_line(exc.cause or exc)})") from None
    except (gexc.GoogleAPIError, GoogleAuthError) as exc:
        raise StoreError(f"{loc}: {doing} failed: {type(exc).__name__}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]


def shown(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more
