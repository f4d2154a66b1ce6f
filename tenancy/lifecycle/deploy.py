"""Deploying many stacks: the platform stack first when it is affected, then tenant stacks in parallel.

Every `up` is preceded by a preview, and an update that would delete or replace a stateful resource the
workflow did not plan to remove is refused unless `allow_destroy` is set. A deploy applies tenants.yaml
through the deployed record (tenancy.lifecycle.record): it never changes a tenant's placement, state or
presence -- those wait, reported as pending, for the lifecycle command that moves the data.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from tenancy import naming
from tenancy.catalog import Catalog
from tenancy.engine import Engine, EngineError, OpResult
from tenancy.lifecycle import Refused
from tenancy.lifecycle import record as rec

Say = Callable[[str], None]


class Progress:
    """One line per stack, updated in place on a terminal (rich), plain lines otherwise; a summary at the end."""

    def __init__(self, stacks: list[str], title: str, stream=None):
        self.stacks = stacks
        self.status = {s: "waiting" for s in stacks}
        self.title = title
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._live = None
        if getattr(self.stream, "isatty", lambda: False)() and len(stacks) > 1:
            from rich.console import Console
            from rich.live import Live
            self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=8, transient=False)

    def _render(self):
        from rich.table import Table
        table = Table(title=self.title, show_edge=False)
        table.add_column("stack")
        table.add_column("status")
        for s in self.stacks:
            table.add_row(s, self.status[s])
        return table

    def __enter__(self):
        if self._live:
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live:
            self._live.__exit__(*exc)

    def update(self, stack: str, status: str) -> None:
        with self._lock:
            self.status[stack] = status
            if self._live:
                self._live.update(self._render())
            else:
                print(f"{stack}: {status}", file=self.stream, flush=True)


# -------------------------------------------------------------------------------------------------- deploy

@dataclass
class Outcome:
    stack: str
    status: str                 # ok | refused | failed | skipped
    result: OpResult | None = None
    message: str = ""

    def line(self) -> str:
        counts = ", ".join(f"{n} {op}" for op, n in sorted((self.result.counts() if self.result else {}).items()))
        return f"{self.stack}: {self.status}" + (f" ({counts})" if counts else "") + (f": {self.message}" if self.message else "")


def affected_stacks(catalog: Catalog, env: str, tenants: list[str] | None = None,
                    changed_since: str | None = None) -> tuple[bool, list[str], dict[str, list[str]]]:
    """(platform affected?, tenant stacks, reasons)."""
    platform = naming.stack_name(env)
    tenant_stacks = [naming.stack_name(env, t.id) for t in catalog.stack_tenants]
    reasons: dict[str, list[str]] = {}
    include_platform = True
    if changed_since is not None:
        from tenancy.changes import changes_since
        ch = changes_since(catalog, env, changed_since)
        reasons = ch.reasons
        include_platform = platform in reasons
        tenant_stacks = [s for s in tenant_stacks if s in reasons]
    if tenants:
        for t in tenants:
            catalog.tenant(t)
        wanted = {naming.stack_name(env, t) for t in tenants}
        tenant_stacks = [s for s in tenant_stacks if s in wanted]
        include_platform = include_platform and any(not catalog.tenant(t).has_stack for t in tenants)
    return include_platform, tenant_stacks, reasons


def unexpected_destruction(preview: OpResult, expected: set[str]) -> str | None:
    """What a preview would delete or replace among stateful resources the workflow did not plan to remove."""
    risky = sorted((c for c in preview.destructive() if c.urn not in expected), key=lambda c: c.urn)
    return "; ".join(f"{c.op} {c.type} {c.urn.rsplit('::', 1)[-1]}" for c in risky) or None


def checked_up(engine: Engine, stack: str, catalog: Catalog, allow_destroy: bool, expected: set[str],
                say: Say | None = None) -> OpResult:
    """Preview, refuse unexpected stateful deletes/replaces (nothing changed), then update."""
    preview = engine.preview(stack, catalog)
    what = unexpected_destruction(preview, expected)
    if what and not allow_destroy:
        raise Refused(f"would {what}; nothing was changed (review it, then --allow-destroy)")
    result = engine.up(stack, catalog)
    if say:
        say(f"  {stack}: " + (", ".join(f"{n} {op}" for op, n in sorted(result.counts().items())) or "no changes"))
    return result


def guarded_up(engine: Engine, stack: str, catalog: Catalog, allow_destroy: bool, expected: set[str],
                progress: Progress) -> Outcome:
    progress.update(stack, "updating")
    try:
        result = checked_up(engine, stack, catalog, allow_destroy, expected)
    except Refused as exc:
        progress.update(stack, "refused")
        return Outcome(stack, "refused", None, str(exc))
    except EngineError as exc:
        progress.update(stack, "failed")
        return Outcome(stack, "failed", None, str(exc))
    progress.update(stack, "done")
    return Outcome(stack, "ok", result)


def pending(engine: Engine, desired: Catalog, env: str) -> list[rec.Pending]:
    """What tenants.yaml asks for that only a lifecycle command can do (moves, state changes, removals)."""
    return rec.for_deploy(desired, rec.read(engine, env))[1]


def deploy(engine: Engine, desired: Catalog, env: str, *, mode: str = "up", tenants: list[str] | None = None,
           changed_since: str | None = None, parallel: int = 4, allow_destroy: bool = False,
           expected_deletes: set[str] | None = None, stream=None) -> list[Outcome]:
    """Preview or update the affected stacks: platform first (when affected), then tenants in parallel.

    The catalogue applied is tenants.yaml held at the deployed record (see tenancy.lifecycle.record); each
    held difference is reported as a `pending` outcome naming the command that resolves it."""
    catalog, held = rec.for_deploy(desired, rec.read(engine, env))
    include_platform, tenant_stacks, _ = affected_stacks(catalog, env, tenants, changed_since)
    platform = naming.stack_name(env)
    order = ([platform] if include_platform else []) + tenant_stacks
    expected = set(expected_deletes or ())
    outcomes: list[Outcome] = []
    with Progress(order, f"tenancy {mode} ({env})", stream) as progress:
        def run(stack: str) -> Outcome:
            if mode == "preview":
                try:
                    progress.update(stack, "previewing")
                    res = engine.preview(stack, catalog)
                    progress.update(stack, "previewed")
                    what = unexpected_destruction(res, expected)
                    return Outcome(stack, "ok", res, f"would {what} (stateful)" if what else "")
                except EngineError as exc:
                    progress.update(stack, "failed")
                    return Outcome(stack, "failed", None, str(exc))
            return guarded_up(engine, stack, catalog, allow_destroy, expected, progress)

        if include_platform:
            first = run(platform)
            outcomes.append(first)
            if first.status != "ok":
                for s in tenant_stacks:
                    progress.update(s, "skipped")
                outcomes.extend(Outcome(s, "skipped", None, f"platform stack {first.status}") for s in tenant_stacks)
                return outcomes
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            outcomes.extend(pool.map(run, tenant_stacks))
    wanted = set(tenants or ())
    outcomes.extend(Outcome(naming.stack_name(env, p.tenant), "pending", None,
                            p.message + (f"; run: {p.command} --env {env}" if p.command else ""))
                    for p in held if not wanted or p.tenant in wanted)
    return outcomes
