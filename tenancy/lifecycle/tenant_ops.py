"""Suspend, resume and offboard one tenant, starting from the deployed record and changing nothing else.

Offboarding is journalled like a tier move (`tenancy.move_journal`, operation "offboard"), so a re-run
after an interruption continues where it stopped:

    freeze -> export -> verify -> delete -> destroy -> cleanup

- freeze: the tenant's writes stop once every in-flight writer has ended (`tenancy.freeze`);
- export: every store the tenant has (its databases' rows, objects, documents, graph) into a new, owner-only
  archive directory (0700, files 0600), one directory per store, `archive.json` listing each with counts and
  checksums;
- verify: each store's export is read back and compared with the store (counts and checksums);
- delete: each store emptied, only while it still matches what was exported and verified;
- destroy: the tenant stack, only when every stateful resource is exported or explicitly discarded;
- cleanup: the platform stack with this tenant marked offboarded (its directory entry goes; others stay).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from tenancy import naming
from tenancy.catalog import Catalog, Model, State
from tenancy.db import describe_dsn
from tenancy.engine import Engine, OpResult
from tenancy.lifecycle import OperationError, Refused
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import registry
from tenancy.lifecycle import units
from tenancy.lifecycle.deploy import Say, checked_up
from tenancy.lifecycle.destroy import guarded_destroy
from tenancy.lifecycle import tenant_data as data
from tenancy.lifecycle.moves import Journal, journal_detail, project_of
from tenancy.stores import Mismatch, Summary
from tenancy.stores import postgres as pg
from tenancy.stores.layout import POOLED, DataLayout, stores_for

OFFBOARD_PHASES = ("freeze", "export", "verify", "delete", "destroy", "cleanup")
Hook = Callable[[str], None]


def suspend(engine: Engine, catalog: Catalog, env: str, tenant_id: str, pooled_dsn: str | None, resume: bool = False,
            say: Say | None = None) -> list[OpResult]:
    """Suspend (or resume): registry state, this tenant's directory entry, and for tenant stacks scale-to-zero
    and no routes. Every other tenant stays exactly as deployed."""
    say = say or (lambda m: None)
    deployed = rec.read(engine, env)
    rec.require_active_tenant(deployed, catalog, env, tenant_id)
    state = State.ACTIVE if resume else State.SUSPENDED
    current = deployed.catalog.tenant(tenant_id)
    new = rec.for_tenant(deployed, catalog, tenant_id, state=state.value)
    results = []
    if current.model is Model.POOLED:
        if pooled_dsn:
            if resume:
                registry.set_state(pooled_dsn, tenant_id, state.value)
            else:
                registry.freeze(pooled_dsn, tenant_id, state.value)   # waits out in-flight writes, then refuses new ones
        else:
            say("no --pooled-dsn: the pooled database's registry is updated by the platform's SQL job on this deploy")
    if current.has_stack:
        results.append(checked_up(engine, naming.stack_name(env, tenant_id), new, False, set(), say))
    results.extend(units.up_tenant_platform(engine, env, deployed.catalog, new, tenant_id, False, set(), say))
    want = catalog.tenant(tenant_id).state if any(t.id == tenant_id for t in catalog.tenants) else None
    if want is not state:
        line = rec.plan_line(catalog.path, tenant_id)
        say(f"tenant '{tenant_id}' is {state.value}; set `state: {state.value}` for it in {catalog.path}"
            f"{f' (its entry is near line {line})' if line else ''} so tenants.yaml says what is deployed")
    return results


def offboard(engine: Engine, catalog: Catalog, env: str, tenant_id: str, *, source_dsn: str, export_to: str | None,
             reach: data.Reach | None = None, discard: frozenset[str] = frozenset(), yes: bool = False,
             say: Say | None = None, before_phase: Hook | None = None, layout: DataLayout | None = None) -> dict[str, Any]:
    """Freeze, export every store the tenant has, verify the export, delete, destroy the stack.

    `source_dsn` is the database holding the tenant's rows (the pooled database, or its postgres-1);
    `reach` adds the other databases (postgres-2, postgres-3), the objects root, the graph runner and the store
    kinds this run skips. Every store is exported and verified, or discarded explicitly (`--discard STORE`);
    without --export-to, every store must be discarded (`--no-export --yes`)."""
    say = say or (lambda m: None)
    deployed = rec.read(engine, env)
    rec.require_active_tenant(deployed, catalog, env, tenant_id)
    t = deployed.catalog.tenant(tenant_id)
    reach = reach or data.Reach({})
    primary = POOLED if t.model is Model.POOLED else "postgres-1"
    reach = data.Reach({**reach.dsns, primary: source_dsn}, reach.objects_root, reach.graph_runner, reach.skip)
    journal = Journal(source_dsn)   # the database that holds the tenant's rows journals its offboarding
    try:
        open_op = journal.open_move(tenant_id)
    except pg.psycopg.errors.UndefinedTable:
        raise Refused(f"database {describe_dsn(source_dsn)} has no tenancy schema, so it holds no tenant's rows: is this "
                      f"the database of '{tenant_id}'? Nothing was changed") from None
    if open_op is not None and open_op.get("plan", {}).get("operation") != "offboard":
        raise Refused(f"a tier move of '{tenant_id}' is unfinished ({open_op['move_id']}); finish or abort it first")
    stores = stores_for(t, env, project_of(deployed), layout,
                        pool_shard=units.pool_shard_of(env, deployed.catalog, tenant_id))
    found = data.handles(stores, reach)
    if open_op is None:
        if export_to is None and not yes:
            raise Refused(f"offboarding '{tenant_id}' destroys its data; give --export-to DIR (or --no-export --yes)")
        registry.require_registered(source_dsn, tenant_id)    # the wrong database is refused before anything changes
        missing = [n for n in data.unreachable(stores, reach) if n not in discard]
        if missing:
            raise Refused(f"this run cannot reach {', '.join(missing)} of '{tenant_id}', so it cannot export them: give "
                          f"{' '.join('--db ' + m + '=DSN' if m.startswith('postgres') else '' for m in missing).strip() or 'access to them'}"
                          f" or discard them explicitly ({' '.join('--discard ' + m for m in missing)}); nothing was changed")
        if "graph" in found and "graph" not in discard and export_to and reach.graph_runner is None:
            raise Refused(f"'{tenant_id}' has a Neo4j graph: exporting it runs a neo4j-admin dump Job in namespace "
                          f"{stores.namespace}; give --kubeconfig, or --discard graph to let it go; nothing was changed")
        op_id = f"{tenant_id}:offboard@{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
        done: list[str] = []
        settings = {"operation": "offboard", "export_to": str(Path(export_to).resolve()) if export_to else None,
                    "discard": sorted(discard), "source": describe_dsn(source_dsn)}
    else:
        op_id = open_op["move_id"]
        done = ["freeze" if p == "provision" else p for p in open_op["done"]]
        settings = open_op["plan"]
        export_to = settings.get("export_to")
        discard = frozenset(settings.get("discard", [])) | discard
        say(f"resuming {op_id} after: {', '.join(done) or 'nothing'}")
    archive = Path(export_to) if export_to else None
    kept = {n: h for n, h in found.items() if n not in discard}   # what is exported, verified and then deleted
    result: dict[str, Any] = {"tenant": tenant_id, "operation": op_id}
    covered = {s: f"discarded by --discard {s}" for s in discard}
    if archive is not None:
        covered.update({n: f"exported to {archive / n} and verified" for n in kept})
    source_dsns = sorted({h.dsn for h in found.values() if isinstance(h, data.PgHandle)})

    def phase(name: str, fn: Callable[[], dict | None]) -> None:
        if name in done:
            return
        if before_phase:
            before_phase(name)
        say(f"[{name}]")
        journal.record(op_id, tenant_id, name if name != "freeze" else "provision", "started",
                       settings if name == "freeze" else {})
        detail = fn() or {}
        journal.record(op_id, tenant_id, name if name != "freeze" else "provision", "done", detail)
        done.append(name)

    def freeze() -> dict:
        previous = None
        for dsn in source_dsns:
            state = registry.freeze(dsn, tenant_id, "frozen")
            previous = previous or state
        return {"previous_state": previous}

    def export() -> dict:
        if archive is None:
            return {}
        index = data.export_all(kept, archive, tenant_id, op_id, sorted(discard), say)
        return {"stores": {n: e.get("count") for n, e in index["stores"].items()}}

    def verify() -> dict:
        if archive is None:
            return {"sources": {n: h.summary().to_json() for n, h in kept.items() if h.kind != "graph"}}
        try:
            sums = data.verify_archive(kept, archive)
        except Mismatch as exc:
            raise OperationError(f"{exc}; remove the archive directory and run the same command again") from None
        return {"sources": {n: s.to_json() for n, s in sums.items() if kept[n].kind != "graph"}}

    def delete() -> dict:
        verified = journal_detail(journal, tenant_id, op_id, "verify").get("sources", {})
        deleted = {}
        for name, h in kept.items():
            if name not in verified:
                continue
            try:
                deleted[name] = h.delete(Summary.from_json(verified[name]), say)
            except Mismatch as exc:
                raise OperationError(f"{exc}: the tenant's data changed since the export was verified") from None
        if not t.has_stack:
            registry.unregister(source_dsn, tenant_id)
        result["deleted"] = deleted
        return {"deleted": deleted}

    def destroy() -> dict:
        if not t.has_stack:
            return {}
        stack = naming.stack_name(env, tenant_id)
        guarded_destroy(engine, stack, deployed.catalog, covered, say)
        result["destroyed"] = stack
        return {"destroyed": stack}

    def cleanup() -> dict:
        now = rec.read(engine, env)
        gone = rec.for_tenant(now, catalog, tenant_id, state=State.OFFBOARDED.value)
        units.up_tenant_platform(engine, env, now.catalog, gone, tenant_id, False,
                                 _identity_urns(env, now.catalog, tenant_id), say)
        return {}

    steps = {"freeze": freeze, "export": export, "verify": verify, "delete": delete, "destroy": destroy, "cleanup": cleanup}
    for name in OFFBOARD_PHASES:
        phase(name, steps[name])
    exported = journal_detail(journal, tenant_id, op_id, "export").get("stores")
    if exported is not None and archive is not None:
        result["export"] = {"dir": str(archive), "stores": exported}
    say(f"tenant '{tenant_id}' offboarded; set `state: offboarded` for it in {catalog.path}")
    return result


def _identity_urns(env: str, record: Catalog, tenant_id: str) -> set[str]:
    """The offboarded tenant's Identity Platform tenant: its removal from its stack (the platform stack, or its
    identity shard) is expected."""
    stack = units.identity_stack(env, record, tenant_id)
    return {f"urn:pulumi:{stack}::tenancy::tenancy:gcp:IdentityPlatform$gcp:identityplatform/tenant:Tenant::identity-{tenant_id}"}
