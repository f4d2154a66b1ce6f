"""Operating the platform: deploy many stacks, move tenants between tiers, suspend, resume, offboard.

Deploys run the platform stack first when it is affected, then the tenant stacks in parallel. Every `up`
is preceded by a preview, and an update that would delete or replace a stateful resource the workflow
did not plan to remove is refused unless `allow_destroy` is set.

A tier move is a state machine whose phases are journalled in the pooled database
(`tenancy.move_journal`), so any interruption is resumed by running the same command again:

    provision -> freeze -> copy -> verify -> cutover -> unfreeze -> cleanup

Before `cutover`, `abort` rolls back and leaves the tenant where it was, data intact.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from tenancy import db, naming
from tenancy.stores import postgres as data
from tenancy.catalog import Catalog, Model, State, with_tenant
from tenancy.engine import Engine, EngineError, OpResult
from tenancy.errors import TenancyError

PHASES = ("provision", "freeze", "copy", "verify", "cutover", "unfreeze", "cleanup")
Say = Callable[[str], None]


class OperationError(TenancyError):
    exit_code = 1


class Refused(OperationError):
    """A safety rule stopped the operation before anything was changed."""


# ------------------------------------------------------------------------------------------------ progress

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


def _checked_up(engine: Engine, stack: str, catalog: Catalog, allow_destroy: bool, expected: set[str],
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


def _guarded_up(engine: Engine, stack: str, catalog: Catalog, allow_destroy: bool, expected: set[str],
                progress: Progress) -> Outcome:
    progress.update(stack, "updating")
    try:
        result = _checked_up(engine, stack, catalog, allow_destroy, expected)
    except Refused as exc:
        progress.update(stack, "refused")
        return Outcome(stack, "refused", None, str(exc))
    except EngineError as exc:
        progress.update(stack, "failed")
        return Outcome(stack, "failed", None, str(exc))
    progress.update(stack, "done")
    return Outcome(stack, "ok", result)


@dataclass(frozen=True)
class PendingMove:
    tenant: str
    from_plan: str
    to_plan: str
    from_model: str
    to_model: str

    def command(self, env: str) -> str:
        return f"tenancy upgrade {self.tenant} --to {self.to_plan} --env {env} --source-dsn ... --target-dsn ..."


def deployed_directory(engine: Engine, env: str) -> dict[str, dict[str, Any]]:
    """The tenant directory the deployed platform stack exports ({} before the first deploy)."""
    try:
        return json.loads(engine.outputs(naming.stack_name(env)).get("tenantDirectory") or "{}")
    except EngineError:
        return {}


def pending_moves(engine: Engine, catalog: Catalog, env: str) -> list[PendingMove]:
    """Tenants whose catalogue plan crosses the pooled boundary from where the deployed directory says they are."""
    directory = deployed_directory(engine, env)
    moves = []
    for t in catalog.tenants:
        entry = directory.get(t.id)
        if not entry or t.state is State.OFFBOARDED:
            continue
        was_pooled, is_pooled = entry["model"] == Model.POOLED.value, t.model is Model.POOLED
        if was_pooled != is_pooled:
            moves.append(PendingMove(t.id, entry["plan"], t.plan_name, entry["model"], t.model.value))
    return moves


def hold_moves(catalog: Catalog, moves: list[PendingMove]) -> Catalog:
    """The catalogue with tenants awaiting a tier move kept on their deployed plan (their data has not moved)."""
    for m in moves:
        catalog = with_tenant(catalog, m.tenant, plan=m.from_plan)
    return catalog


def deploy(engine: Engine, catalog: Catalog, env: str, *, mode: str = "up", tenants: list[str] | None = None,
           changed_since: str | None = None, parallel: int = 4, allow_destroy: bool = False,
           expected_deletes: set[str] | None = None, stream=None) -> list[Outcome]:
    """Preview or update the affected stacks: platform first (when affected), then tenants in parallel.

    A tenant whose plan moves it into or out of the pool is held on its deployed placement (the directory is
    the routing switch, and its data has not moved): it is reported as `pending` for `tenancy upgrade`."""
    moves = pending_moves(engine, catalog, env)
    held = hold_moves(catalog, moves)
    include_platform, tenant_stacks, _ = affected_stacks(catalog, env, tenants, changed_since)
    moving = {naming.stack_name(env, m.tenant) for m in moves}
    tenant_stacks = [s for s in tenant_stacks if s not in moving]
    catalog = held
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
            return _guarded_up(engine, stack, catalog, allow_destroy, expected, progress)

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
    outcomes.extend(Outcome(naming.stack_name(env, m.tenant), "pending", None,
                            f"tier move {m.from_plan} ({m.from_model}) → {m.to_plan} ({m.to_model}) waits for: {m.command(env)}")
                    for m in moves)
    return outcomes


# ----------------------------------------------------------------------------------------------- journal

class Journal:
    """Phases of tier moves, durably in the pooled database (`tenancy.move_journal`)."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def _conn(self):
        return data.connect(self.dsn)

    def open_move(self, tenant: str) -> dict[str, Any] | None:
        """The tenant's unfinished move: {move_id, detail of its 'provision' phase, phases done}."""
        with self._conn() as c:
            rows = c.execute("SELECT move_id, phase, status, detail FROM tenancy.move_journal WHERE tenant_id = %s "
                             "ORDER BY at", (tenant,)).fetchall()
        moves: dict[str, dict[str, Any]] = {}
        for move_id, phase, status, detail in rows:
            m = moves.setdefault(move_id, {"move_id": move_id, "done": [], "status": {}, "detail": {}})
            m["status"][phase] = status
            if status == "done":
                m["done"].append(phase)
            m["detail"].setdefault(phase, detail)
            if phase == "provision":
                m["plan"] = detail
        for m in moves.values():
            finished = m["status"].get("cleanup") == "done" or "aborted" in m["status"].values()
            if not finished:
                return m
        return None

    def record(self, move_id: str, tenant: str, phase: str, status: str, detail: dict | None = None) -> None:
        with self._conn() as c:
            c.execute("INSERT INTO tenancy.move_journal (move_id, tenant_id, phase, status, detail) VALUES (%s, %s, %s, %s, %s) "
                      "ON CONFLICT (move_id, phase) DO UPDATE SET status = excluded.status, "
                      "detail = tenancy.move_journal.detail || excluded.detail, at = now()",
                      (move_id, tenant, phase, status, json.dumps(detail or {})))
            c.commit()

    def history(self, tenant: str) -> list[tuple[str, str, str]]:
        with self._conn() as c:
            return [tuple(r) for r in c.execute("SELECT move_id, phase, status FROM tenancy.move_journal "
                                                "WHERE tenant_id = %s ORDER BY at, phase", (tenant,)).fetchall()]


def set_state(dsn: str, tenant: str, state: str, plan: str | None = None, model: str | None = None) -> None:
    with data.connect(dsn) as c:
        if plan and model:
            c.execute("INSERT INTO tenancy.tenants (id, plan, model, state) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO "
                      "UPDATE SET state = excluded.state, plan = excluded.plan, model = excluded.model, updated_at = now()",
                      (tenant, plan, model, state))
        else:
            n = c.execute("UPDATE tenancy.tenants SET state = %s, updated_at = now() WHERE id = %s", (state, tenant)).rowcount
            if n == 0:
                raise OperationError(f"tenant '{tenant}' is not registered in that database's tenancy.tenants")
        c.commit()


def unregister(dsn: str, tenant: str) -> None:
    with data.connect(dsn) as c:
        c.execute("DELETE FROM tenancy.tenants WHERE id = %s", (tenant,))
        c.commit()


# ------------------------------------------------------------------------------------------------- upgrade

@dataclass
class MovePlan:
    tenant: str
    from_plan: str
    to_plan: str
    from_model: str
    to_model: str
    source_dsn: str
    target_dsn: str
    move_id: str
    keep_source_days: int = 0


@dataclass
class MoveOutcome:
    move_id: str
    phases_run: list[str] = field(default_factory=list)
    rows: int = 0
    freeze_seconds: float | None = None
    status: str = "done"        # done | aborted | waiting (source kept for the rollback window)
    message: str = ""


Hook = Callable[[str], None]   # called before each phase runs (tests inject interruptions here)


@dataclass(frozen=True)
class Buckets:
    """Where the tenant's objects are: the shared bucket (under `{tenant_id}/`) and the tenant's own bucket."""

    shared: str    # store URL: gs://bucket or a directory
    tenant: str


def bucket_urls(engine: Engine, env: str, tenant_id: str, objects_root: str | None) -> Buckets:
    """Store URLs from the deployed platform (project) and the naming rules; a directory per bucket for dry runs."""
    project = engine.outputs(naming.stack_name(env)).get("gcpProject", "")
    shared, own = naming.shared_bucket(env, project), naming.bucket(env, tenant_id)
    if objects_root:
        return Buckets(str(Path(objects_root) / shared), str(Path(objects_root) / own))
    return Buckets(f"gs://{shared}", f"gs://{own}")


def upgrade(engine: Engine, catalog: Catalog, env: str, tenant_id: str, to_plan: str, *, pooled_dsn: str,
            tenant_dsn: str, keep_source_days: int = 0, abort: bool = False, allow_destroy: bool = False,
            buckets: Buckets | None = None, say: Say | None = None, before_phase: Hook | None = None,
            now: Callable[[], datetime] | None = None) -> MoveOutcome:
    """Move a tenant between pooled and namespace/dedicated, data included; resumable, abortable before cutover.

    `catalog` is the catalogue before the move; `tenant_dsn` is the tenant's own primary database (its
    postgres-1), the source of a downgrade and the target of an upgrade.
    """
    say = say or (lambda m: None)
    clock = now or (lambda: datetime.now(timezone.utc))
    journal = Journal(pooled_dsn)
    current = catalog.tenant(tenant_id)
    open_move = journal.open_move(tenant_id)
    if open_move is not None:
        detail = open_move["plan"]
        if detail.get("to_plan") != to_plan and not abort:
            raise Refused(f"a move of '{tenant_id}' to plan '{detail.get('to_plan')}' is unfinished (done: "
                          f"{', '.join(open_move['done']) or 'nothing'}); resume it with --to {detail.get('to_plan')} or --abort it")
        from_plan = detail["from_plan"]
        keep_source_days = int(detail.get("keep_source_days", keep_source_days))  # as the move was started
        done = list(open_move["done"])
        say(f"resuming move {open_move['move_id']} after: {', '.join(done) or 'nothing'}")
    else:
        if abort:
            raise Refused(f"tenant '{tenant_id}' has no unfinished move to abort")
        # Where the tenant is deployed now (the catalogue may already name the new plan).
        from_plan = deployed_directory(engine, env).get(tenant_id, {}).get("plan") or current.plan_name
        done = []
        if from_plan == to_plan:
            raise Refused(f"tenant '{tenant_id}' is already on plan '{to_plan}'")
    before = with_tenant(catalog, tenant_id, plan=from_plan)
    after = with_tenant(catalog, tenant_id, plan=to_plan)
    b, a = before.tenant(tenant_id), after.tenant(tenant_id)
    if (b.model is Model.POOLED) == (a.model is Model.POOLED):
        raise Refused(f"moving '{tenant_id}' from {b.model.value} to {a.model.value} is not supported: tier moves go between "
                      "pooled and namespace/dedicated (the tenant's data must live in two places at once)")
    upgrade_ = b.model is Model.POOLED
    move_id = open_move["move_id"] if open_move else f"{tenant_id}:{from_plan}->{to_plan}@{clock():%Y%m%dT%H%M%S%f}"
    mp = MovePlan(tenant_id, from_plan, to_plan, b.model.value, a.model.value,
                  source_dsn=pooled_dsn if upgrade_ else tenant_dsn, target_dsn=tenant_dsn if upgrade_ else pooled_dsn,
                  move_id=move_id, keep_source_days=keep_source_days)
    stack = naming.stack_name(env, tenant_id)
    platform = naming.stack_name(env)
    outcome = MoveOutcome(mp.move_id)
    # Objects: under `{tenant}/` in the shared bucket while pooled, at the root of the tenant's bucket otherwise.
    obj = None
    if buckets is not None:
        from tenancy.stores import objects
        shared, own = objects.open_store(buckets.shared), objects.open_store(buckets.tenant)
        obj = (shared, f"{tenant_id}/", own, "") if upgrade_ else (own, "", shared, f"{tenant_id}/")

    if abort:
        if obj is not None and ("copy" in done or "freeze" in done):
            from tenancy.stores import objects
            objects.delete_objects(obj[2], obj[3])  # the copies; the originals stay
        return _abort(engine, before, env, mp, done, journal, say, outcome)

    def phase(name: str, fn: Callable[[], dict | None]) -> None:
        if name in done:
            return
        if before_phase:
            before_phase(name)
        say(f"[{name}] {PHASE_TEXT[name]}")
        journal.record(mp.move_id, tenant_id, name, "started",
                       {"from_plan": from_plan, "to_plan": to_plan, "from_model": mp.from_model, "to_model": mp.to_model,
                        "keep_source_days": mp.keep_source_days} if name == "provision" else {})
        detail = fn() or {}
        journal.record(mp.move_id, tenant_id, name, "done", detail)
        done.append(name)
        outcome.phases_run.append(name)

    def provision() -> dict:
        if upgrade_:
            _checked_up(engine, stack, after, allow_destroy, set(), say)
        db.apply(mp.target_dsn)   # the same tenancy SQL the stack's Job applies; idempotent
        set_state(mp.target_dsn, tenant_id, "frozen", to_plan, mp.to_model)
        return {}

    def freeze() -> dict:
        set_state(mp.source_dsn, tenant_id, "frozen")
        return {"frozen_at": clock().isoformat()}

    def copy() -> dict:
        report = data.move(mp.source_dsn, mp.target_dsn, tenant_id, target_plan=to_plan, target_model=mp.to_model,
                           target_state="frozen", progress=say)
        outcome.rows = report.total_rows
        detail: dict[str, Any] = {"rows": report.rows}
        if obj is not None:
            from tenancy.stores import objects
            copied = objects.copy_objects(*obj, progress=say)
            detail["objects"] = {"copied": copied.copied, "bytes": copied.bytes}
        return detail

    def verify() -> dict:
        checks = data.verify(mp.source_dsn, mp.target_dsn, tenant_id)
        bad = [c for c in checks if not c.ok]
        if bad:
            raise OperationError(f"verification failed for {', '.join(c.table for c in bad)}; the tenant stays frozen "
                                 f"on {mp.from_model}. Run the same command to retry, or --abort")
        detail: dict[str, Any] = {"tables": {c.table: c.source_rows for c in checks}}
        if obj is not None:
            from tenancy.stores import objects
            count, bad_objects = objects.verify_objects(*obj)
            if bad_objects:
                raise OperationError(f"object verification failed ({len(bad_objects)} of {count}: "
                                     f"{', '.join(bad_objects[:5])}); run the same command to retry, or --abort")
            detail["objects"] = count
        return detail

    def cutover() -> dict:
        _checked_up(engine, platform, after, allow_destroy, set(), say)
        return {}

    def unfreeze() -> dict:
        set_state(mp.target_dsn, tenant_id, "active")
        set_state(mp.source_dsn, tenant_id, "readonly")
        started = journal_detail(journal, tenant_id, mp.move_id, "freeze").get("frozen_at")
        if started:
            outcome.freeze_seconds = (clock() - datetime.fromisoformat(started)).total_seconds()
        return {"unfrozen_at": clock().isoformat(), "freeze_seconds": outcome.freeze_seconds}

    def cleanup() -> dict | None:
        unfrozen = journal_detail(journal, tenant_id, mp.move_id, "unfreeze").get("unfrozen_at")
        keep_until = datetime.fromisoformat(unfrozen) + timedelta(days=mp.keep_source_days) if unfrozen else clock()
        if clock() < keep_until:
            raise _Waiting(f"source rows kept read-only until {keep_until.isoformat()}; run the same command after that "
                           "to remove them")
        deleted = data.delete(mp.source_dsn, tenant_id)
        unregister(mp.source_dsn, tenant_id)
        if obj is not None:
            from tenancy.stores import objects
            objects.delete_objects(obj[0], obj[1])
        if not upgrade_:
            old_stack_catalog = before
            engine.destroy(stack, old_stack_catalog)
        return {"deleted_rows": deleted}

    steps = {"provision": provision, "freeze": freeze, "copy": copy, "verify": verify, "cutover": cutover,
             "unfreeze": unfreeze, "cleanup": cleanup}
    try:
        for name in PHASES:
            phase(name, steps[name])
    except _Waiting as w:
        outcome.status = "waiting"
        outcome.message = str(w)
        say(str(w))
    return outcome


class _Waiting(Exception):
    pass


def journal_detail(journal: Journal, tenant: str, move_id: str, phase: str) -> dict:
    with journal._conn() as c:
        row = c.execute("SELECT detail FROM tenancy.move_journal WHERE move_id = %s AND phase = %s", (move_id, phase)).fetchone()
    return row[0] if row else {}


PHASE_TEXT = {
    "provision": "tenant stack up with the new plan; tenancy SQL on the target database",
    "freeze": "the source refuses the tenant's writes (registry state frozen)",
    "copy": "rows move table by table in foreign-key order",
    "verify": "row counts and ordered checksums compared on both sides",
    "cutover": "platform stack up: the tenant directory points at the new placement",
    "unfreeze": "the target accepts the tenant's writes; the source stays read-only",
    "cleanup": "the source rows are removed (after the --keep-source window)",
}


def _abort(engine: Engine, before: Catalog, env: str, mp: MovePlan, done: list[str], journal: Journal, say: Say,
           outcome: MoveOutcome) -> MoveOutcome:
    if "cutover" in done:
        raise Refused(f"move {mp.move_id} is past cutover; it can no longer be aborted. Move the tenant back with "
                      f"`tenancy upgrade {mp.tenant} --to {mp.from_plan}`")
    say(f"aborting {mp.move_id}: the tenant stays on {mp.from_plan}")
    # The target's copy goes; the source is untouched apart from its freeze, which is lifted.
    if "provision" in done or "copy" in done:
        try:
            data.delete(mp.target_dsn, mp.tenant)
            unregister(mp.target_dsn, mp.tenant)
        except data.DataError as exc:
            say(f"  could not clear the target's partial copy ({exc}); it is not in use and a later move clears it")
    try:
        set_state(mp.source_dsn, mp.tenant, "active")
    except OperationError:
        pass
    if mp.from_model == Model.POOLED.value and "provision" in done:
        engine.destroy(naming.stack_name(env, mp.tenant), with_tenant(before, mp.tenant, plan=mp.to_plan))
    journal.record(mp.move_id, mp.tenant, "abort", "aborted", {"after": done})
    outcome.status = "aborted"
    return outcome


# --------------------------------------------------------------------------------------- suspend / offboard

def suspend(engine: Engine, catalog: Catalog, env: str, tenant_id: str, pooled_dsn: str | None, resume: bool = False,
            say: Say | None = None) -> list[OpResult]:
    """Suspend (or resume): registry state, directory entry, and for tenant stacks scale-to-zero and no routes."""
    say = say or (lambda m: None)
    state = State.ACTIVE if resume else State.SUSPENDED
    new = with_tenant(catalog, tenant_id, state=state.value)
    t = new.tenant(tenant_id)
    results = []
    if t.model is Model.POOLED and pooled_dsn:
        set_state(pooled_dsn, tenant_id, state.value)
    if t.has_stack:
        results.append(_checked_up(engine, naming.stack_name(env, tenant_id), new, False, set(), say))
    results.append(_checked_up(engine, naming.stack_name(env), new, False, set(), say))
    say(f"tenant '{tenant_id}' is {state.value}; edit tenants.yaml to `state: {state.value}` so the next deploy agrees")
    return results


def offboard(engine: Engine, catalog: Catalog, env: str, tenant_id: str, *, source_dsn: str, export_to: str | None,
             pooled_dsn: str | None = None, yes: bool = False, say: Say | None = None) -> dict[str, Any]:
    """Export the tenant's rows first, then destroy its stack and delete its pooled rows."""
    say = say or (lambda m: None)
    t = catalog.tenant(tenant_id)
    if export_to is None and not yes:
        raise Refused(f"offboarding '{tenant_id}' destroys its data; give --export-to DIR (or --no-export --yes)")
    result: dict[str, Any] = {"tenant": tenant_id}
    if export_to is not None:
        if export_to.startswith("gs://"):
            raise OperationError("exports to gs:// need google-cloud-storage, which this installation lacks; export to a "
                                 "directory and copy it with `gcloud storage cp -r`")
        manifest = data.export(source_dsn, tenant_id, export_to, progress=say)
        result["export"] = {"dir": export_to, "tables": {k: v["rows"] for k, v in manifest["tables"].items()}}
    gone = with_tenant(catalog, tenant_id, state=State.OFFBOARDED.value)
    if t.has_stack:
        engine.destroy(naming.stack_name(env, tenant_id), catalog)
        result["destroyed"] = naming.stack_name(env, tenant_id)
    else:
        result["deletedRows"] = data.delete(source_dsn, tenant_id)
        unregister(source_dsn, tenant_id)
    _checked_up(engine, naming.stack_name(env), gone, False,
                {c for c in _identity_urns(engine, env, tenant_id)}, say)
    say(f"tenant '{tenant_id}' offboarded; set `state: offboarded` in tenants.yaml")
    return result


def _identity_urns(engine: Engine, env: str, tenant_id: str) -> set[str]:
    """The offboarded tenant's Identity Platform tenant: its removal from the platform stack is expected."""
    return {f"urn:pulumi:{naming.stack_name(env)}::tenancy::tenancy:gcp:IdentityPlatform$gcp:identityplatform/tenant:Tenant::identity-{tenant_id}"}
