"""Tier moves: a tenant goes between pooled and namespace/dedicated with every store it has.

The tenant's stores on each side come from the data layout (`stores.yaml` -> `tenancy.stores.layout`), the
same list its directory entry publishes; `tenant_data.plan_move` pairs each source store with its target.
A move is a state machine whose phases are journalled in the pooled database (`tenancy.move_journal`), so any
interruption is resumed by running the same command again:

    provision -> sync -> freeze -> export -> copy -> verify -> cutover -> unfreeze -> cleanup

- provision: the tenant stack (upgrade) and the tenancy SQL on each target database, where the tenant is
  registered frozen. A downgrade first refuses, naming tables and row counts, when the tenant has data the
  pooled plan cannot hold (a feature's tables, the graph) that is not exported and explicitly discarded, and
  when destroying the old stack later would remove a store this move does not save.
- sync (the online method, tenancy/lifecycle/online.py): each PostgreSQL pair that can replicates its rows
  to its target while the tenant keeps writing, and every replicated row is verified; the method of each
  pair (online, or copy and why) is journalled before anything starts. Unless --method copy, documents and
  objects get a first copy while the tenant is live; inside the freeze `copy` then writes only what changed
  since (and starts that store's copy over when the source deleted something meanwhile).
- freeze: `tenancy.freeze()` on every source database -- it waits for every transaction that already wrote the
  tenant, so no write can commit after it and be left behind.
- export: with --export-to, every source store into a private archive with counts and checksums.
- copy, verify: each pair copied (rows table by table, objects, documents with their subcollections), then
  counts and checksums compared on both sides; each source's verified summary is journalled. An online pair
  instead switches: the remaining changes applied and the rows changed since its verification compared, its
  summary taken in the verified snapshot.
- cutover: the platform stack runs with the deployed record changed for this tenant only; every other
  tenant's directory entry stays byte-for-byte as it was.
- unfreeze: the targets accept writes; the sources stay read-only for the --keep-source window; what online
  pairs left (their publications) is dropped.
- cleanup: each source store is emptied only while it still holds exactly its journalled summary; a
  downgrade destroys the old stack through the guarded destroy.
Before `cutover`, `--abort` rolls back and leaves the tenant where it was, data intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from tenancy import db, naming
from tenancy.catalog import Catalog, Model
from tenancy.db import describe_dsn
from tenancy.engine import Engine
from tenancy.lifecycle import OperationError, Refused
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import registry
from tenancy.lifecycle import units
from tenancy.lifecycle.deploy import Say, checked_up
from tenancy.lifecycle.destroy import guarded_destroy, uncovered
from tenancy.lifecycle import online
from tenancy.lifecycle import tenant_data as data
from tenancy.stores import Mismatch, StoreError, Summary
from tenancy.stores import postgres as pg
from tenancy.stores.layout import DataLayout, stores_for

PHASES = ("provision", "sync", "freeze", "export", "copy", "verify", "cutover", "unfreeze", "cleanup")
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
    move_id: str
    keep_source_days: int = 0


@dataclass
class MoveOutcome:
    move_id: str
    phases_run: list[str] = field(default_factory=list)
    rows: int = 0
    copied: dict[str, Any] = field(default_factory=dict)   # per pair: rows / objects / documents
    freeze_seconds: float | None = None
    status: str = "done"        # done | aborted | waiting (source kept for the rollback window)
    message: str = ""
    catalog_line: str = ""      # what to change in tenants.yaml now
    archive: str | None = None


class _Waiting(Exception):
    pass


PHASE_TEXT = {
    "provision": "tenant stack up with the new plan; tenancy SQL and the frozen registration on each target database",
    "sync": "PostgreSQL rows that can replicate to their targets do so while the tenant writes, and are verified; "
            "documents and objects get a first copy while the tenant is live",
    "freeze": "every source database refuses the tenant's writes once every in-flight writer has ended",
    "export": "every source store into the archive (--export-to), with counts and checksums",
    "copy": "each store to its target: rows by table to the database the layout names, objects, documents",
    "verify": "counts and checksums compared on both sides of each store; the archive read back",
    "cutover": "platform stack up with this tenant's record changed: the directory points at the new placement",
    "unfreeze": "the target accepts the tenant's writes; the source stays read-only",
    "cleanup": "each source store re-verified, then emptied (after the --keep-source window); old stack destroyed",
}


def project_of(deployed: rec.Deployed) -> str:
    """The platform's GCP project, as the deployed platform stack reports it (where the stores' names live)."""
    return deployed.project


def upgrade(engine: Engine, catalog: Catalog, env: str, tenant_id: str, to_plan: str, *, reach: data.Reach,
            keep_source_days: int = 0, abort: bool = False, allow_destroy: bool = False,
            discard: frozenset[str] = frozenset(), export_to: str | None = None, say: Say | None = None,
            before_phase: Hook | None = None, now: Callable[[], datetime] | None = None,
            layout: DataLayout | None = None, method: str = "auto",
            replication: Mapping[str, str] | None = None) -> MoveOutcome:
    """Move a tenant between pooled and namespace/dedicated with every store it has; resumable, abortable
    before cutover.

    `catalog` is tenants.yaml (the tenant's settings for its new plan come from it); where the tenant is now
    comes from the deployed record. The stores on each side come from the data layout; `reach` says how to
    reach them. `discard` names source stores the target plan cannot hold whose data the operator lets go
    (with `export_to`, every source store is archived first). `method` is how PostgreSQL rows move: "online"
    (logical replication before the freeze), "copy" (inside the freeze), or "auto" (online where the
    databases allow it, saying why not elsewhere); `replication` maps a source store to how its target's
    server reaches it as tenancy_replication (default: its DSN with that user)."""
    say = say or (lambda m: None)
    clock = now or (lambda: datetime.now(timezone.utc))
    if method not in online.METHODS:
        raise Refused(f"unknown method '{method}': use one of {', '.join(online.METHODS)}")
    deployed = rec.read(engine, env)
    rec.require_active_tenant(deployed, catalog, env, tenant_id)
    if to_plan not in {**deployed.catalog.plans, **catalog.plans}:
        raise Refused(f"unknown plan '{to_plan}'")
    if data.POOLED not in reach.dsns:
        raise Refused("the pooled database's DSN is needed: it journals every tier move")
    journal = Journal(reach.dsns[data.POOLED])
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
        export_to = detail.get("export_to") or export_to
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
    mp = MovePlan(tenant_id, from_plan, to_plan, b.model.value, a.model.value, move_id=move_id,
                  keep_source_days=keep_source_days)
    stack = naming.stack_name(env, tenant_id)
    outcome = MoveOutcome(mp.move_id)
    project = project_of(deployed)
    # A pooled side's stores are its pool shard's (the deployed one before, the one placement gives after).
    src_stores = stores_for(b, env, project, layout, pool_shard=units.pool_shard_of(env, before, tenant_id))
    dst_stores = stores_for(a, env, project, layout, pool_shard=units.pool_shard_of(env, after, tenant_id))
    plan = data.plan_move(src_stores, dst_stores, reach)
    archive = Path(export_to).resolve() if export_to else None
    source_dsns = sorted({h.dsn for h in plan.sources.values() if isinstance(h, data.PgHandle)})
    target_dsns = sorted({p.target.dsn for p in plan.pairs if isinstance(p.target, data.PgHandle)})
    pg_pairs = [p for p in plan.pairs if isinstance(p.source, data.PgHandle) and isinstance(p.target, data.PgHandle)]
    other_pairs = [p for p in plan.pairs if p not in pg_pairs]
    replication = dict(replication or {})

    def methods() -> dict[str, dict[str, str]]:
        """Each PostgreSQL pair's method as journalled when `sync` began (copy for a move from before it)."""
        return journal_detail(journal, tenant_id, mp.move_id, "sync").get("methods") or {}

    def movers(chosen: dict[str, dict[str, str]] | None = None) -> list[tuple[data.Pair, online.OnlinePostgresMove]]:
        chosen = methods() if chosen is None else chosen
        return [(p, online.mover(p, tenant_id, replication, say, operation=mp.move_id, plan=to_plan,
                                model=mp.to_model)) for p in pg_pairs
                if chosen.get(p.name, {}).get("method") == "online"]

    if abort:
        for _, m in movers():   # replication objects, tracking and the targets' copies; sources' states back
            m.abort()
        return _abort(engine, before, env, mp, done, journal, say, outcome, plan, source_dsns, target_dsns)

    def phase(name: str, fn: Callable[[], dict | None]) -> None:
        if name in done:
            return
        if before_phase:
            before_phase(name)
        say(f"[{name}] {PHASE_TEXT[name]}")
        journal.record(mp.move_id, tenant_id, name, "started",
                       {"from_plan": from_plan, "to_plan": to_plan, "from_model": mp.from_model, "to_model": mp.to_model,
                        "keep_source_days": mp.keep_source_days, "discard": sorted(discard),
                        "export_to": str(archive) if archive else None} if name == "provision" else {})
        detail = fn() or {}
        journal.record(mp.move_id, tenant_id, name, "done", detail)
        done.append(name)
        outcome.phases_run.append(name)

    def covered() -> dict[str, str]:
        """How each source store is saved once this move is through (for the destroy guard)."""
        out = {}
        for p in plan.pairs:
            for n in p.covers:
                out[n] = f"moved and verified ({mp.move_id})"
        for n in src_stores.names:
            if n in plan.left and n not in discard:
                out.pop(n, None)
            elif n in discard and n not in out:
                out[n] = f"{'exported to ' + str(archive / n) + ' and ' if archive else ''}discarded by --discard {n}"
        return out

    def provision() -> dict:
        missing = data.unreachable(src_stores, reach)
        if missing and not upgrade_:
            not_discarded = [n for n in missing if n not in discard]
            if not_discarded:
                raise Refused(f"downgrading '{tenant_id}' removes its stack, but this run cannot reach "
                              f"{', '.join(not_discarded)}; give their DSNs / access, or --discard them; nothing was changed")
        if plan.unreached:
            raise Refused(f"'{tenant_id}''s rows go to {', '.join(plan.unreached)} on plan '{to_plan}', which this run "
                          f"cannot reach: give {' '.join('--db ' + n + '=DSN' for n in plan.unreached)}; nothing was changed")
        for n in missing:
            say(f"  not carried by this run: {n} of '{tenant_id}' stays where it is")
        if not upgrade_:
            refuse_unsaved(plan, discard, archive, tenant_id, a.plan_name)
            # Refuse now, before anything changes, if destroying the old stack at cleanup would lose data.
            left = uncovered(engine.preview_destroy(stack, before), covered())
            if left:
                stores = sorted({s for _, s in left if s})
                raise Refused(f"downgrading '{tenant_id}' would destroy {', '.join(c.urn.rsplit('::', 1)[-1] for c, _ in left)}"
                              f" ({', '.join(stores)}), whose data the pooled plan cannot hold and this move does not carry; "
                              f"export it (--export-to DIR) and pass {' '.join('--discard ' + s for s in stores)}; "
                              "nothing was changed")
        if upgrade_:
            checked_up(engine, stack, after, allow_destroy, set(), say)
        for dsn in target_dsns:
            db.apply(dsn)   # the same tenancy SQL the stack's Job applies; idempotent
            registry.set_state(dsn, tenant_id, "frozen", to_plan, mp.to_model)
        return {}

    def sync() -> dict:
        chosen = methods() or online.choose(pg_pairs, method, replication, say)   # a re-run keeps the first choice
        going = movers(chosen)
        names = sorted(m.name for _, m in going)
        # Journalled before replication starts: an interrupted move owns what it created (`tenancy moves`).
        journal.record(mp.move_id, tenant_id, "sync", "started", {"methods": chosen, "replication": names})
        synced = {p.name: m.sync() for p, m in going}
        live = {}
        if method != "copy":   # the bulk of documents and objects moves now; the freeze copies what changed since
            for p in other_pairs:
                live[p.name] = copy_store(p, "first pass while the tenant is live")
        return {"methods": chosen, "replication": names, "synced": synced, "live": live}

    def copy_store(p: data.Pair, when: str) -> dict:
        """Documents or objects to the target (only what is missing or different there). The target is this
        move's own copy, not yet in use: if it holds what the source no longer has (deleted since a first
        pass), it is cleared and copied again."""
        try:
            return p.copy(say)
        except Mismatch as exc:
            say(f"  {p.name} ({when}): {exc}; the target is this move's unused copy: clearing it and copying again")
            p.clear_target(say)
            return p.copy(say)

    def freeze() -> dict:
        previous = {}
        for dsn in source_dsns:
            previous[describe_dsn(dsn)] = registry.freeze(dsn, tenant_id, "frozen")
        first = next(iter(previous.values()), None)
        return {"frozen_at": clock().isoformat(), "previous_state": first}

    def export() -> dict:
        if archive is None:
            return {}
        found = dict(plan.sources)
        if "graph" in found and "graph" in discard and reach.graph_runner is None:
            say("  graph: discarded without an export (no --kubeconfig to run its dump Job)")
            del found["graph"]
        index = data.export_all(found, archive, tenant_id, mp.move_id, sorted(discard), say)
        outcome.archive = str(archive)
        return {"archive": str(archive), "stores": {n: e.get("count") for n, e in index["stores"].items()}}

    def copy() -> dict:
        detail: dict[str, Any] = {}
        switching = dict((p.name, m) for p, m in movers())
        for p in plan.pairs:
            if p.name in switching:   # inside the freeze: only what changed since its verification
                switched = switching[p.name].switch()
                detail[p.name] = {"rows": sum(switched["rows"].values()), "online": switched}
            elif p in other_pairs:   # after a live first pass: what changed since, and deletions
                detail[p.name] = copy_store(p, "inside the freeze")
            else:
                detail[p.name] = p.copy(say, target_plan=to_plan, target_model=mp.to_model, target_state="frozen")
            outcome.rows += detail[p.name].get("rows", 0)
        outcome.copied = detail
        return {"copied": detail}

    def verify() -> dict:
        sums = {}
        copied = journal_detail(journal, tenant_id, mp.move_id, "copy").get("copied", {})
        for p in plan.pairs:
            if "online" in copied.get(p.name, {}):   # verified row by row by its switch; its source summary
                sums[p.name] = copied[p.name]["online"]["source"]
                continue
            try:
                sums[p.name] = p.verify().to_json()
            except Mismatch as exc:
                raise OperationError(f"verification failed: {exc}; the tenant stays frozen on {mp.from_model}. "
                                     "Run the same command to retry, or --abort") from None
        if archive is not None:
            data.verify_archive(plan.sources, archive)
        return {"sources": sums, "stores": {n: s["count"] for n, s in sums.items()}}

    def cutover() -> dict:
        units.up_tenant_platform(engine, env, before, after, tenant_id, allow_destroy, set(), say)
        return {}

    def unfreeze() -> dict:
        for dsn in target_dsns:
            registry.set_state(dsn, tenant_id, "active")
        for dsn in source_dsns:
            registry.set_state(dsn, tenant_id, "readonly")
        started = journal_detail(journal, tenant_id, mp.move_id, "freeze").get("frozen_at")
        if started:
            outcome.freeze_seconds = (clock() - datetime.fromisoformat(started)).total_seconds()
        dropped = [line for _, m in movers() for line in m.cleanup()["dropped"]]
        return {"unfrozen_at": clock().isoformat(), "freeze_seconds": outcome.freeze_seconds,
                **({"dropped": dropped} if dropped else {})}

    def cleanup() -> dict | None:
        unfrozen = journal_detail(journal, tenant_id, mp.move_id, "unfreeze").get("unfrozen_at")
        keep_until = datetime.fromisoformat(unfrozen) + timedelta(days=mp.keep_source_days) if unfrozen else clock()
        if clock() < keep_until:
            raise _Waiting(f"source data kept read-only until {keep_until.isoformat()}; run the same command after that "
                           "to remove it")
        verified = journal_detail(journal, tenant_id, mp.move_id, "verify").get("sources", {})
        deleted = {}
        for p in plan.pairs:
            try:
                deleted[p.name] = p.source.delete(Summary.from_json(verified[p.name]), say)
            except Mismatch as exc:
                raise OperationError(f"{exc}. Find out what wrote there before removing it") from None
        if upgrade_:
            for dsn in source_dsns:
                registry.unregister(dsn, tenant_id)
        else:
            guarded_destroy(engine, stack, before, covered(), say)
        return {"deleted": deleted}

    steps = {"provision": provision, "sync": sync, "freeze": freeze, "export": export, "copy": copy, "verify": verify,
             "cutover": cutover, "unfreeze": unfreeze, "cleanup": cleanup}
    try:
        for name in PHASES:
            phase(name, steps[name])
    except _Waiting as w:
        outcome.status = "waiting"
        outcome.message = str(w)
        say(str(w))
    if archive is not None:
        outcome.archive = str(archive)
    if not outcome.copied and "copy" in done:   # copied by an earlier, interrupted run
        outcome.copied = journal_detail(journal, tenant_id, mp.move_id, "copy").get("copied", {})
    if "cutover" in done and any(t.id == tenant_id for t in catalog.tenants) and catalog.tenant(tenant_id).plan_name != to_plan:
        line = rec.plan_line(catalog.path, tenant_id)
        outcome.catalog_line = (f"tenants.yaml still says plan '{catalog.tenant(tenant_id).plan_name}' for '{tenant_id}': "
                                f"change {catalog.path}{':' + str(line) if line else ''} to `plan: {to_plan}`")
        say(outcome.catalog_line)
    return outcome


def refuse_unsaved(plan: data.MovePlan, discard: frozenset[str], archive: Path | None, tenant_id: str,
                   to_plan: str) -> None:
    """Refuse, naming tables and counts, when a source store the target plan cannot hold has data that is not
    both exported (--export-to) and explicitly discarded (--discard STORE); the graph may be discarded alone."""
    problems = []
    for name, h in plan.left.items():
        if h.kind == "graph":
            if name not in discard and archive is None:
                problems.append(f"{name}: the tenant's Neo4j graph (export it with --export-to DIR, or --discard graph)")
            elif name not in discard:
                problems.append(f"{name}: the tenant's Neo4j graph is exported to the archive; pass --discard graph too")
            continue
        s = h.summary()
        if not s.count:
            continue
        what = ", ".join(f"{part} {v['count']} rows" for part, v in sorted(s.parts.items()) if v["count"])
        if name not in discard or archive is None:
            problems.append(f"{name}: {what}")
    if problems:
        raise Refused(f"plan '{to_plan}' cannot hold all of '{tenant_id}''s data: {'; '.join(problems)}. Export it with "
                      f"--export-to DIR and pass {' '.join('--discard ' + p.split(':')[0] for p in problems)}; nothing was changed")


def _abort(engine: Engine, before: Catalog, env: str, mp: MovePlan, done: list[str], journal: Journal, say: Say,
           outcome: MoveOutcome, plan: data.MovePlan, source_dsns: list[str], target_dsns: list[str]) -> MoveOutcome:
    if "cutover" in done:
        raise Refused(f"move {mp.move_id} is past cutover; it can no longer be aborted. Move the tenant back with "
                      f"`tenancy upgrade {mp.tenant} --to {mp.from_plan}`")
    say(f"aborting {mp.move_id}: the tenant stays on {mp.from_plan}")
    # The targets' copies go; the sources are untouched apart from their freeze, which is lifted.
    if "provision" in done or "copy" in done:
        for p in plan.pairs:
            try:
                p.clear_target(say)
            except (pg.DataError, StoreError) as exc:
                say(f"  could not clear {p.target.describe()} ({exc}); it is not in use and a later move clears it")
        for dsn in target_dsns:
            try:
                registry.unregister(dsn, mp.tenant)
            except OperationError:
                pass
    previous = journal_detail(journal, mp.tenant, mp.move_id, "freeze").get("previous_state") or "active"
    for dsn in source_dsns:
        try:
            registry.set_state(dsn, mp.tenant, previous)
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
