"""A sample application on the client library (tenancy/client.py), as `make demo` runs it beside the commands.

It writes one tenant's users the way an application should: each transaction goes to the database the environment's
registry names for the tenant's table (connecting as the runtime role `tenancy_app`, reading the registry as
`tenancy_registry_reader`), and when that database refuses the write -- the tenant is frozen by a move, suspended,
or no longer there -- it waits a moment and tries again, and the client library reads the registry anew: after a
move's switch, the next write goes to the tenant's new database. When the registry no longer knows the tenant
(offboarded), the application stops.

It remembers when each write committed and what it wrote, so that one can say how long the tenant could not write
across a command (the longest gap between two committed writes) and check that every committed write is where the
registry points, with its last value.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

import psycopg

from tenancy import client


class _Missing(Exception):
    """A user the application wrote is not in the database it was routed to."""


class App(threading.Thread):
    """Inserts and renames `tenant`'s users every `interval` seconds, until stopped or the tenant is gone."""

    def __init__(self, registry_dsn: str, env: str, tenant: str, interval: float = 0.01):
        super().__init__(daemon=True, name=f"app-{tenant}")
        self.router = client.Router(registry_dsn, env, user="tenancy_app")
        self.tenant, self.interval = tenant, interval
        self.commits: list[float] = []          # when each write committed (monotonic, increasing)
        self.refused: list[float] = []          # when a database refused a write (then retried)
        self.names: dict[str, str] = {}         # user id -> the display name last committed
        self.gone_at: float | None = None       # when the registry stopped knowing the tenant
        self.errors: list[str] = []
        self._halt, self._hold, self._idle = threading.Event(), threading.Event(), threading.Event()
        self._rng = random.Random(7)

    def run(self) -> None:
        while not self._halt.is_set():
            if self._hold.is_set():
                self._idle.set()
                time.sleep(0.005)
                continue
            self._idle.clear()
            try:
                self._write()
            except (client.Moved, _Missing):
                self.refused.append(time.monotonic())
                time.sleep(0.02)
                continue
            except client.UnknownTenant:
                self.gone_at = time.monotonic()
                return
            except psycopg.Error as exc:
                self.errors.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
                return
            time.sleep(self.interval)

    def _write(self) -> None:
        name = f"user-{uuid.uuid4().hex[:8]}"
        with self.router.transaction(self.tenant, "app.users") as c:
            if self.names and self._rng.random() < 0.5:
                uid = self._rng.choice(sorted(self.names))
                if c.execute("UPDATE app.users SET display_name = %s WHERE id = %s", (name, uid)).rowcount != 1:
                    # An update that matches no row changes nothing, so no database refuses it: the route may be
                    # stale (the tenant moved, or is being offboarded and its rows are gone). Read the registry anew
                    # and try again; a write that is really lost shows in the check against the registry's database.
                    self.router.invalidate(self.tenant)
                    raise _Missing(uid)
            else:
                uid = str(c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, %s) "
                                    "RETURNING id", (self.tenant, f"{name}@{self.tenant}.example", name)).fetchone()[0])
        self.names[uid] = name
        self.commits.append(time.monotonic())

    # --------------------------------------------------------------------------------------------- measuring

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time within [start, end] without a committed write (monotonic clock)."""
        points = [start, *self.commits[bisect.bisect_right(self.commits, start):bisect.bisect_left(self.commits, end)], end]
        return max(b - a for a, b in zip(points, points[1:]))

    def committed(self, start: float, end: float) -> int:
        return bisect.bisect_left(self.commits, end) - bisect.bisect_right(self.commits, start)

    def refusals(self, start: float, end: float) -> int:
        return sum(start < t <= end for t in self.refused)

    # --------------------------------------------------------------------------------------------- control

    @contextmanager
    def held(self) -> Iterator[None]:
        """The application writes nothing inside (a check reads the databases meanwhile)."""
        self._hold.set()
        try:
            while self.is_alive() and not self._idle.wait(0.05):
                pass
            yield
        finally:
            self._hold.clear()

    def halt(self) -> None:
        self._halt.set()
        self.join(30)
