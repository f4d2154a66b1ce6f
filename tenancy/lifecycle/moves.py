"""Tier moves: a tenant goes between pooled and namespace/dedicated, data included.

A move is a state machine whose phases are journalled in the pooled database (`tenancy.move_journal`),
so any interruption is resumed by running the same command again:

    provision -> freeze -> copy -> verify -> cutover -> unfreeze -> cleanup

- provision: the tenant stack (upgrade) and the tenancy SQL on the target; the target registers the tenant
  frozen. A downgrade first checks that destroying the old stack later is covered (every stateful store
  moved, exported or explicitly discarded) and refuses before changing anything otherwise.
- freeze: `tenancy.freeze()` at the source -- it waits for every transaction that already wrote the tenant,
  so no write can commit after it and be left behind.
- copy, verify: rows (and objects) copied; counts and checksums compared on both sides. The source's
  verified summary is journalled.
- cutover: the platform stack runs with the deployed record changed for this tenant only; every other
  tenant's directory entry stays byte-for-byte as it was.
- unfreeze: the target accepts writes; the source stays read-only for the --keep-source window.
- cleanup: the source is re-verified against the journalled summary right before its rows are deleted;
  a downgrade destroys the old stack through the guarded destroy.
Before `cutover`, `--abort` rolls back and leaves the tenant where it was, data intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from tenancy import db, naming
from tenancy.catalog import Catalog, Model
from tenancy.db import describe_dsn
from tenancy.engine import Engine
from tenancy.lifecycle import OperationError, Refused
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import registry
from tenancy.lifecycle.deploy import Say, checked_up
from tenancy.lifecycle.destroy import guarded_destroy, uncovered
from tenancy.stores import postgres as pg

PHASES = ("provision", "freeze", "copy", "verify", "cutover", "unfreeze", "cleanup")
Hook = Callable[[str], None]   # called before each phase runs (tests inject interruptions here)


class Journal:
    """Phases of tier moves, durably in the pooled database (`tenancy.move_journal`)."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def _conn(self):
        return pg.connect(self.dsn)

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


def journal_detail(journal: Journal, tenant: str, move_id: str, phase: str) -> dict:
    with journal._conn() as c:
        row = c.execute("SELECT detail FROM tenancy.move_journal WHERE move_id = %s AND phase = %s", (move_id, phase)).fetchone()
    return row[0] if row else {}


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
    catalog_line: str = ""      # what to change in tenants.yaml now


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


class _Waiting(Exception):
    pass


PHASE_TEXT = {
    "provision": "tenant stack up with the new plan; tenancy SQL on the target database",
    "freeze": "the source refuses the tenant's writes once every in-flight writer has ended",
    "copy": "rows move table by table in foreign-key order",
    "verify": "row counts and ordered checksums compared on both sides",
    "cutover": "platform stack up with this tenant's record changed: the directory points at the new placement",
    "unfreeze": "the target accepts the tenant's writes; the source stays read-only",
    "cleanup": "the source re-verified, then its rows removed (after the --keep-source window)",
}


def source_sums(dsn: str, tenant: str) -> dict[str, list]:
    """{table: [rows, ordered checksum]} of one tenant in one database, in one snapshot."""
    with pg.connect(dsn) as c:
        c.isolation_level = pg.psycopg.IsolationLevel.REPEATABLE_READ
        tables = pg.isolated_tables(c)
        pg._as_tenant(c, tenant)
        out = {t: list(pg.table_checksum(c, t, tenant)) for t in tables}
        c.rollback()
    return out


def upgrade(engine: Engine, catalog: Catalog, env: str, tenant_id: str, to_plan: str, *, pooled_dsn: str,
            tenant_dsn: str, keep_source_days: int = 0, abort: bool = False, allow_destroy: bool = False,
            buckets: Buckets | None = None, discard: frozenset[str] = frozenset(), say: Say | None = None,
            before_phase: Hook | None = None, now: Callable[[], datetime] | None = None) -> MoveOutcome:
    """Move a tenant between pooled and namespace/dedicated, data included; resumable, abortable before cutover.

    `catalog` is tenants.yaml (the tenant's settings for its new plan come from it); where the tenant is now
    comes from the deployed record. `tenant_dsn` is the tenant's own primary database (its postgres-1), the
    source of a downgrade and the target of an upgrade. `discard` names stores of the old stack whose data
    the operator lets go (a downgrade to a plan that has no such store)."""
    say = say or (lambda m: None)
    clock = now or (lambda: datetime.now(timezone.utc))
    deployed = rec.read(engine, env)
    rec.require_active_tenant(deployed, catalog, env, tenant_id)
    if to_plan not in {**deployed.catalog.plans, **catalog.plans}:
        raise Refused(f"unknown plan '{to_plan}'")
    journal = Journal(pooled_dsn)
    open_move = journal.open_move(tenant_id)
    if open_move is not None:
        detail = open_move.get("plan", {})
        if detail.get("operation") == "offboard":
            raise Refused(f"an offboarding of '{tenant_id}' is unfinished ({open_move['move_id']}); run `tenancy offboard "
                          f"{tenant_id}` again to finish it")
        if detail.get("to_plan") != to_plan and not abort:
            raise Refused(f"a move of '{tenant_id}' to plan '{detail.get('to_plan')}' is unfinished (done: "
                          f"{', '.join(open_move['done']) or 'nothing'}); resume it with --to {detail.get('to_plan')} or --abort it")
        from_plan = detail["from_plan"]
        keep_source_days = int(detail.get("keep_source_days", keep_source_days))  # as the move was started
        discard = frozenset(detail.get("discard", [])) | discard
        done = list(open_move["done"])
        say(f"resuming move {open_move['move_id']} after: {', '.join(done) or 'nothing'}")
    else:
        if abort:
            raise Refused(f"tenant '{tenant_id}' has no unfinished move to abort")
        from_plan = deployed.catalog.tenant(tenant_id).plan_name   # where the tenant is deployed now
        done = []
        if from_plan == to_plan:
            raise Refused(f"tenant '{tenant_id}' is already on plan '{to_plan}'")
    move_id = open_move["move_id"] if open_move else f"{tenant_id}:{from_plan}->{to_plan}@{clock():%Y%m%dT%H%M%S%f}"
    note = {"movedFrom": from_plan, "movedTo": to_plan, "moveId": move_id}
    before = rec.for_tenant(deployed, catalog, tenant_id, plan=from_plan)
    after = rec.for_tenant(deployed, catalog, tenant_id, plan=to_plan, from_catalog=True, note=note)
    b, a = before.tenant(tenant_id), after.tenant(tenant_id)
    if (b.model is Model.POOLED) == (a.model is Model.POOLED):
        raise Refused(f"moving '{tenant_id}' from {b.model.value} to {a.model.value} is not supported: tier moves go between "
                      "pooled and namespace/dedicated (the tenant's data must live in two places at once)")
    upgrade_ = b.model is Model.POOLED
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
    covered = {"postgres-1": f"rows moved and verified ({mp.move_id})", **{s: f"discarded by --discard {s}" for s in discard}}
    if obj is not None:
        covered["objects"] = f"objects moved and verified ({mp.move_id})"

    if abort:
        return _abort(engine, before, env, mp, done, journal, say, outcome, obj)

    def phase(name: str, fn: Callable[[], dict | None]) -> None:
        if name in done:
            return
        if before_phase:
            before_phase(name)
        say(f"[{name}] {PHASE_TEXT[name]}")
        journal.record(mp.move_id, tenant_id, name, "started",
                       {"from_plan": from_plan, "to_plan": to_plan, "from_model": mp.from_model, "to_model": mp.to_model,
                        "keep_source_days": mp.keep_source_days, "discard": sorted(discard)} if name == "provision" else {})
        detail = fn() or {}
        journal.record(mp.move_id, tenant_id, name, "done", detail)
        done.append(name)
        outcome.phases_run.append(name)

    def provision() -> dict:
        if not upgrade_:
            # Refuse now, before anything changes, if destroying the old stack at cleanup would lose data.
            missing = uncovered(engine.preview_destroy(stack, before), covered)
            if missing:
                stores = sorted({s for _, s in missing if s})
                raise Refused(f"downgrading '{tenant_id}' would destroy {', '.join(c.urn.rsplit('::', 1)[-1] for c, _ in missing)}"
                              f" ({', '.join(stores)}), whose data the pooled plan cannot hold and this move does not carry; "
                              f"export it first and pass {' '.join('--discard ' + s for s in stores)}; nothing was changed")
        if upgrade_:
            checked_up(engine, stack, after, allow_destroy, set(), say)
        db.apply(mp.target_dsn)   # the same tenancy SQL the stack's Job applies; idempotent
        registry.set_state(mp.target_dsn, tenant_id, "frozen", to_plan, mp.to_model)
        return {}

    def freeze() -> dict:
        previous = registry.freeze(mp.source_dsn, tenant_id, "frozen")
        return {"frozen_at": clock().isoformat(), "previous_state": previous}

    def copy() -> dict:
        report = pg.move(mp.source_dsn, mp.target_dsn, tenant_id, target_plan=to_plan, target_model=mp.to_model,
                         target_state="frozen", progress=say)
        outcome.rows = report.total_rows
        detail: dict[str, Any] = {"rows": report.rows}
        if obj is not None:
            from tenancy.stores import objects
            copied = objects.copy_objects(*obj, progress=say)
            detail["objects"] = {"copied": copied.copied, "bytes": copied.bytes}
        return detail

    def verify() -> dict:
        checks = pg.verify(mp.source_dsn, mp.target_dsn, tenant_id)
        bad = [c for c in checks if not c.ok]
        if bad:
            raise OperationError(f"verification failed for {', '.join(c.table for c in bad)}; the tenant stays frozen "
                                 f"on {mp.from_model}. Run the same command to retry, or --abort")
        detail: dict[str, Any] = {"tables": {c.table: c.source_rows for c in checks},
                                  "source": source_sums(mp.source_dsn, tenant_id)}
        if obj is not None:
            from tenancy.stores import objects
            count, bad_objects = objects.verify_objects(*obj)
            if bad_objects:
                raise OperationError(f"object verification failed ({len(bad_objects)} of {count}: "
                                     f"{', '.join(bad_objects[:5])}); run the same command to retry, or --abort")
            detail["objects"] = count
            detail["source_objects"] = obj[0].list(obj[1])
        return detail

    def cutover() -> dict:
        checked_up(engine, platform, after, allow_destroy, set(), say)
        return {}

    def unfreeze() -> dict:
        registry.set_state(mp.target_dsn, tenant_id, "active")
        registry.set_state(mp.source_dsn, tenant_id, "readonly")
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
        verified = journal_detail(journal, tenant_id, mp.move_id, "verify")
        now_sums = source_sums(mp.source_dsn, tenant_id)
        if any(now_sums.get(t, [0, ""])[0] for t in now_sums) and now_sums != verified.get("source"):
            changed = sorted(t for t in now_sums if now_sums[t] != verified.get("source", {}).get(t))
            raise OperationError(f"the source {describe_dsn(mp.source_dsn)} changed since verification ({', '.join(changed)}); "
                                 "nothing was deleted. Find out what wrote there before removing it")
        deleted = pg.delete(mp.source_dsn, tenant_id)
        registry.unregister(mp.source_dsn, tenant_id)
        if obj is not None:
            from tenancy.stores import objects
            still = obj[0].list(obj[1])
            if still and still != verified.get("source_objects", still):
                raise OperationError("the source objects changed since verification; nothing more was deleted")
            objects.delete_objects(obj[0], obj[1])
        if not upgrade_:
            guarded_destroy(engine, stack, before, covered, say)
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
    if "cutover" in done and any(t.id == tenant_id for t in catalog.tenants) and catalog.tenant(tenant_id).plan_name != to_plan:
        line = rec.plan_line(catalog.path, tenant_id)
        outcome.catalog_line = (f"tenants.yaml still says plan '{catalog.tenant(tenant_id).plan_name}' for '{tenant_id}': "
                                f"change {catalog.path}{':' + str(line) if line else ''} to `plan: {to_plan}`")
        say(outcome.catalog_line)
    return outcome


def _abort(engine: Engine, before: Catalog, env: str, mp: MovePlan, done: list[str], journal: Journal, say: Say,
           outcome: MoveOutcome, obj) -> MoveOutcome:
    if "cutover" in done:
        raise Refused(f"move {mp.move_id} is past cutover; it can no longer be aborted. Move the tenant back with "
                      f"`tenancy upgrade {mp.tenant} --to {mp.from_plan}`")
    say(f"aborting {mp.move_id}: the tenant stays on {mp.from_plan}")
    # The target's copy goes; the source is untouched apart from its freeze, which is lifted.
    if obj is not None and ("copy" in done or "freeze" in done):
        from tenancy.stores import objects
        objects.delete_objects(obj[2], obj[3])  # the copies; the originals stay
    if "provision" in done or "copy" in done:
        try:
            pg.delete(mp.target_dsn, mp.tenant)
            registry.unregister(mp.target_dsn, mp.tenant)
        except pg.DataError as exc:
            say(f"  could not clear the target's partial copy ({exc}); it is not in use and a later move clears it")
    previous = journal_detail(journal, mp.tenant, mp.move_id, "freeze").get("previous_state") or "active"
    try:
        registry.set_state(mp.source_dsn, mp.tenant, previous)
    except OperationError:
        pass
    if mp.from_model == Model.POOLED.value and "provision" in done:
        # The new tenant stack holds no data of record (the copy was just removed): discard its stores.
        from tenancy.lifecycle.destroy import STORES
        guarded_destroy(engine, naming.stack_name(env, mp.tenant), before,
                        {s: f"aborted move {mp.move_id}: the copy, not the original" for s in STORES}, say)
    journal.record(mp.move_id, mp.tenant, "abort", "aborted", {"after": done})
    outcome.status = "aborted"
    return outcome
