"""Suspend, resume and offboard one tenant, starting from the deployed record and changing nothing else.

Offboarding is journalled like a tier move (`tenancy.move_journal`, operation "offboard"), so a re-run
after an interruption continues where it stopped:

    freeze -> export -> verify -> destroy -> delete -> cleanup

- freeze: the tenant's writes stop once every in-flight writer has ended (`tenancy.freeze`);
- export: every store into a new, owner-only archive directory (0700, files 0600), with a manifest;
- verify: the export is read back and compared with the database (counts and checksums);
- destroy: the tenant stack, only when every stateful resource is exported or explicitly discarded;
- delete: pooled rows, only while the database still matches what was exported;
- cleanup: the platform stack with this tenant marked offboarded (its directory entry goes; others stay).
"""

from __future__ import annotations

import json
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
from tenancy.lifecycle.deploy import Say, checked_up
from tenancy.lifecycle.destroy import guarded_destroy
from tenancy.lifecycle.moves import Journal, journal_detail, source_sums
from tenancy.stores import postgres as pg
from tenancy.stores import private_export_dir

OFFBOARD_PHASES = ("freeze", "export", "verify", "destroy", "delete", "cleanup")
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
    results.append(checked_up(engine, naming.stack_name(env), new, False, set(), say))
    want = catalog.tenant(tenant_id).state if any(t.id == tenant_id for t in catalog.tenants) else None
    if want is not state:
        line = rec.plan_line(catalog.path, tenant_id)
        say(f"tenant '{tenant_id}' is {state.value}; set `state: {state.value}` for it in {catalog.path}"
            f"{f' (its entry is near line {line})' if line else ''} so tenants.yaml says what is deployed")
    return results


def offboard(engine: Engine, catalog: Catalog, env: str, tenant_id: str, *, source_dsn: str, export_to: str | None,
             discard: frozenset[str] = frozenset(), yes: bool = False, say: Say | None = None,
             before_phase: Hook | None = None) -> dict[str, Any]:
    """Freeze, export every store, verify the export, then destroy the stack / delete pooled rows.

    Without --export-to, every store must be discarded explicitly (`--no-export --yes`)."""
    say = say or (lambda m: None)
    deployed = rec.read(engine, env)
    rec.require_active_tenant(deployed, catalog, env, tenant_id)
    t = deployed.catalog.tenant(tenant_id)
    journal = Journal(source_dsn)   # the database that holds the tenant's rows journals its offboarding
    try:
        open_op = journal.open_move(tenant_id)
    except pg.psycopg.errors.UndefinedTable:
        raise Refused(f"database {describe_dsn(source_dsn)} has no tenancy schema, so it holds no tenant's rows: is this "
                      f"the database of '{tenant_id}'? Nothing was changed") from None
    if open_op is not None and open_op.get("plan", {}).get("operation") != "offboard":
        raise Refused(f"a tier move of '{tenant_id}' is unfinished ({open_op['move_id']}); finish or abort it first")
    if open_op is None:
        if export_to is None and not yes:
            raise Refused(f"offboarding '{tenant_id}' destroys its data; give --export-to DIR (or --no-export --yes)")
        registry.require_registered(source_dsn, tenant_id)    # the wrong database is refused before anything changes
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
    result: dict[str, Any] = {"tenant": tenant_id, "operation": op_id}
    covered = {s: f"discarded by --discard {s}" for s in discard}
    if archive is not None:
        covered["postgres-1"] = f"exported to {archive / 'postgres-1'} and verified"

    def phase(name: str, fn: Callable[[], dict | None]) -> None:
        if name in done:
            return
        if before_phase:
            before_phase(name)
        journal.record(op_id, tenant_id, name if name != "freeze" else "provision", "started",
                       settings if name == "freeze" else {})
        detail = fn() or {}
        journal.record(op_id, tenant_id, name if name != "freeze" else "provision", "done", detail)
        done.append(name)

    def freeze() -> dict:
        return {"previous_state": registry.freeze(source_dsn, tenant_id, "frozen")}

    def export() -> dict:
        if archive is None:
            return {}
        private_export_dir(archive)
        manifest = pg.export(source_dsn, tenant_id, private_export_dir(archive / "postgres-1"), progress=say)
        index = {"tenant": tenant_id, "operation": op_id, "stores": {"postgres-1": {
            "kind": "postgres", "directory": "postgres-1",
            "tables": {k: {"rows": v["rows"], "rowChecksum": v["rowChecksum"]} for k, v in manifest["tables"].items()}}},
            "discarded": sorted(discard)}
        from tenancy.stores import write_manifest
        write_manifest(archive, "archive.json", index)
        return {"tables": {k: v["rows"] for k, v in manifest["tables"].items()}}

    def verify() -> dict:
        sums = source_sums(source_dsn, tenant_id)
        if archive is not None:
            manifest = json.loads((archive / "postgres-1" / "manifest.json").read_text())
            exported = {k: [v["rows"], v["rowChecksum"]] for k, v in manifest["tables"].items()}
            if exported != sums:
                bad = sorted(k for k in set(exported) | set(sums) if exported.get(k) != sums.get(k))
                raise OperationError(f"the export in {archive} does not match the database for {', '.join(bad)}; "
                                     "nothing was deleted. Remove the archive directory and run the same command again")
        return {"source": sums}

    def destroy() -> dict:
        if not t.has_stack:
            return {}
        stack = naming.stack_name(env, tenant_id)
        guarded_destroy(engine, stack, deployed.catalog, covered, say)
        result["destroyed"] = stack
        return {"destroyed": stack}

    def delete() -> dict:
        if t.has_stack:
            return {}   # the rows lived in the tenant's own databases, destroyed with its stack
        verified = journal_detail(journal, tenant_id, op_id, "verify").get("source")
        if source_sums(source_dsn, tenant_id) != verified:
            raise OperationError(f"the tenant's rows in {describe_dsn(source_dsn)} changed since the export was verified; "
                                 "nothing was deleted")
        deleted = pg.delete(source_dsn, tenant_id)
        registry.unregister(source_dsn, tenant_id)
        result["deletedRows"] = deleted
        return {"deleted_rows": deleted}

    def cleanup() -> dict:
        gone = rec.for_tenant(rec.read(engine, env), catalog, tenant_id, state=State.OFFBOARDED.value)
        checked_up(engine, naming.stack_name(env), gone, False, _identity_urns(env, tenant_id), say)
        return {}

    steps = {"freeze": freeze, "export": export, "verify": verify, "destroy": destroy, "delete": delete, "cleanup": cleanup}
    for name in OFFBOARD_PHASES:
        phase(name, steps[name])
    exported = journal_detail(journal, tenant_id, op_id, "export").get("tables")
    if exported is not None and archive is not None:
        result["export"] = {"dir": str(archive), "tables": exported}
    say(f"tenant '{tenant_id}' offboarded; set `state: offboarded` for it in {catalog.path}")
    return result


def _identity_urns(env: str, tenant_id: str) -> set[str]:
    """The offboarded tenant's Identity Platform tenant: its removal from the platform stack is expected."""
    return {f"urn:pulumi:{naming.stack_name(env)}::tenancy::tenancy:gcp:IdentityPlatform$gcp:identityplatform/tenant:Tenant::identity-{tenant_id}"}
