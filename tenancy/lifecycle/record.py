"""Desired versus deployed: `tenants.yaml` is what the operator wants; the deployed record is where each
tenant's data *is*.

The platform stack exports the catalogue it was last deployed with (`deployedRecord`: the catalogue as
`tenants.yaml` would say it, plus deployment notes). Every command starts from that record:

- a one-tenant command (`suspend`, `resume`, `offboard`, an upgrade's `cutover`) runs the platform stack
  with the record changed for its own tenant only, so every other tenant's directory entry, Helm values and
  identity resources stay byte-for-byte what they were;
- a deploy (`tenancy up`) applies the catalogue, except what only a lifecycle command may change: a
  tenant's placement (a plan that moves it into or out of the pool, or between namespace and dedicated),
  its state (suspended/active/offboarded), and its presence (a tenant deleted from the file stays deployed
  until it is offboarded). Those are held at their deployed values and reported as pending, with the
  command that makes them. An offboarded tenant stays offboarded whatever the file says: only `tenancy
  restore`, which brings its data back from its archive first, records it active again.

The record also holds where the deployment placed each tenant (cell, pool shard, data project; tenancy/fleet),
carried as `Catalog.placements`: placement never recomputes a placed tenant, and only `tenancy place` changes
one. A pin in tenants.yaml that disagrees with a deployed placement is reported as pending.

Notes record a completed tier move ("movedFrom", "movedTo", "moveId") until `tenants.yaml` names the new
plan, so `tenancy moves` does not offer the reverse move in the meantime.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tenancy import naming
from tenancy.catalog import Catalog, Model, State, entry_lines, fit_entry_to_model, parse_catalog, to_document
from tenancy.engine import Engine, EngineError
from tenancy.errors import CatalogError, TenancyError
from tenancy.record_format import CELLS, LAYOUT_OUTPUT, RECORD_OUTPUT
from tenancy.topology import unit_stacks


class RecordError(TenancyError):
    """A command asked about a tenant the deployment does not know, or one it can no longer act on."""

    exit_code = 2


class LayoutError(RecordError):
    """The environment is deployed as one platform stack: it must be migrated before anything else runs."""


@dataclass(frozen=True)
class Pending:
    """A difference between the catalogue and the deployment that only an explicit command resolves."""

    tenant: str
    kind: str            # move | state | removed | offboarded | catalog-behind | placement
    message: str
    command: str | None = None
    to_plan: str | None = None     # a move: the plan (and model) tenants.yaml asks for
    to_model: str | None = None


@dataclass(frozen=True)
class Deployed:
    catalog: Catalog | None          # None: the platform stack has never been deployed
    directory: dict[str, Any]
    project: str = ""                # the platform's GCP project (its stack output gcpProject)

    def knows(self, tenant_id: str) -> bool:
        return self.catalog is not None and any(t.id == tenant_id for t in self.catalog.tenants)


def read(engine: Engine, env: str, path: str = "deployed record", one_platform_stack: bool = False) -> Deployed:
    """The deployed record: the global stack's, with each cell's and pool shard's tenants. An environment still
    deployed as one platform stack (the layout of earlier versions) is refused: every program of this version
    would remove from that stack what now lives in the unit stacks. `one_platform_stack`: read it all the same,
    from that stack alone (`tenancy migrate`, which moves it)."""
    try:
        outputs = engine.outputs(naming.stack_name(env))
    except EngineError:
        return Deployed(None, {})
    if outputs.get(LAYOUT_OUTPUT) == CELLS:
        outputs = _merged_cells_record(engine, env, outputs)
    elif outputs.get(RECORD_OUTPUT) and not one_platform_stack:
        raise LayoutError(f"environment '{env}' is deployed as one platform stack '{naming.stack_name(env)}', the "
                          f"layout of earlier versions: run `tenancy migrate --env {env}` first (it moves the "
                          "state into the cell, pool-shard and identity-shard stacks and recreates nothing); nothing "
                          "was changed")
    directory = json.loads(outputs.get("tenantDirectory") or "{}")
    raw = outputs.get(RECORD_OUTPUT)
    if not raw:
        return Deployed(None, directory, outputs.get("gcpProject") or "")
    data = json.loads(raw)
    try:
        catalog = parse_catalog(yaml.safe_dump(data["catalog"], sort_keys=False), f"{naming.stack_name(env)}:{RECORD_OUTPUT}")
    except CatalogError as exc:
        raise RecordError(f"the deployed record of '{naming.stack_name(env)}' no longer validates: {exc}") from None
    placements = data.get("placements")
    if placements is None:
        # Recorded before placement existed: every tenant is in the one shared cluster, pooled instance and project.
        from tenancy.fleet.placement import legacy
        placements = legacy(catalog, outputs.get("gcpProject") or "")
    return Deployed(dataclasses.replace(catalog, notes=dict(data.get("notes") or {}), placements=placements), directory,
                    outputs.get("gcpProject") or "")


def _merged_cells_record(engine: Engine, env: str, glob: dict[str, Any]) -> dict[str, Any]:
    """The global stack records the plans and offboarded tenants, each cell and pool shard its
    own tenants (stacks/cells.py, in the format of tenancy/record_format.py). One record and one directory made of
    them, as the platform stack's would be. A unit stack not deployed yet holds nobody."""
    from tenancy.fleet import capacity as fleet_capacity

    data = json.loads(glob.get(RECORD_OUTPUT) or "null")
    if data is None:
        return glob
    tenants = list(data["catalog"].get("tenants") or [])
    notes, placements, directory = dict(data.get("notes") or {}), dict(data.get("placements") or {}), {}
    for stack in unit_stacks(env, fleet_capacity.load(env)):
        if naming.stack_kind(stack)[0] == naming.IDENTITY_STACK:
            continue
        try:
            out = engine.outputs(stack)
        except EngineError:
            continue
        unit = json.loads(out.get(RECORD_OUTPUT) or "null")
        if unit is None:
            continue
        tenants.extend(unit["catalog"].get("tenants") or [])
        notes.update(unit.get("notes") or {})
        placements.update(unit.get("placements") or {})
        directory.update(json.loads(out.get("tenantDirectory") or "{}"))
    tenants.sort(key=lambda t: str(t.get("id")))
    record = {"catalog": {**data["catalog"], "tenants": tenants}, "notes": notes, "placements": placements}
    return {**glob, RECORD_OUTPUT: json.dumps(record, sort_keys=True), "tenantDirectory": json.dumps(directory)}


def _crosses(a: Model, b: Model) -> bool:
    """A plan change that moves data: into or out of the pool, or between namespace and dedicated."""
    return a is not b and (a is Model.POOLED or b is Model.POOLED or {a, b} == {Model.NAMESPACE, Model.DEDICATED})


def _doc_tenant(doc: dict, tenant_id: str) -> dict:
    return next(t for t in doc["tenants"] if t["id"] == tenant_id)


def _set_plan(entry: dict, plans: dict, plan: str) -> None:
    """The entry on another plan, without the fields that plan's model does not allow."""
    entry["plan"] = plan
    model = plans[plan]["model"] if isinstance(plans.get(plan), dict) else None
    fit_entry_to_model(entry, Model(model) if model in {m.value for m in Model} else Model.NAMESPACE)


def _plans_doc(catalog: Catalog) -> dict[str, dict]:
    return {name: p.model_dump(mode="json") for name, p in catalog.plans.items()}


def for_deploy(desired: Catalog, deployed: Deployed) -> tuple[Catalog, list[Pending]]:
    """The catalogue a deploy applies, and what it holds back (pending lifecycle commands)."""
    if deployed.catalog is None:
        return desired, []
    base = deployed.catalog
    doc = to_document(desired)
    plans = {**_plans_doc(base), **_plans_doc(desired)}
    doc["plans"] = {**{k: v for k, v in to_document(base)["plans"].items() if k not in desired.plans}, **doc["plans"]}
    base_doc = to_document(base)
    pending: list[Pending] = []
    notes: dict[str, Any] = {}
    wanted = {t.id for t in desired.tenants}
    # The deployed record is merged from the unit stacks in id order; what waits is reported in tenants.yaml's order,
    # as the engineer reads the file (tenants no longer in it last).
    position = {t.id: i for i, t in enumerate(desired.tenants)}
    for was in sorted(base.tenants, key=lambda t: position.get(t.id, len(position))):
        if was.id not in wanted:
            doc["tenants"].append(_doc_tenant(base_doc, was.id))
            if was.state is not State.OFFBOARDED:
                pending.append(Pending(was.id, "removed", f"tenant '{was.id}' is deployed but missing from tenants.yaml; it "
                                       "stays as deployed (nothing is deleted by removing a tenant from the file)",
                                       f"tenancy offboard {was.id} --export-to DIR"))
            continue
        want = desired.tenant(was.id)
        entry = _doc_tenant(doc, was.id)
        if was.state is State.OFFBOARDED:
            doc["tenants"][doc["tenants"].index(entry)] = _doc_tenant(base_doc, was.id)
            if want.state is not State.OFFBOARDED:
                pending.append(Pending(was.id, "offboarded", f"tenant '{was.id}' was offboarded; a deploy does not bring "
                                       "it back. Restore it from its offboarding archive (its data as archived), or "
                                       "onboard it afresh under a new id",
                                       f"tenancy restore {was.id} --from ARCHIVE"))
            continue
        note = base.notes.get(was.id)
        if want.plan_name != was.plan_name and _crosses(was.model, want.model):
            _set_plan(entry, plans, was.plan_name)
            if note and note.get("movedTo") == was.plan_name and note.get("movedFrom") == want.plan_name:
                notes[was.id] = note
                pending.append(Pending(was.id, "catalog-behind", f"tenant '{was.id}' was moved to plan '{was.plan_name}' "
                                       f"({note.get('moveId')}); tenants.yaml still says '{want.plan_name}'"
                                       + _line_hint(desired.path, was.id, was.plan_name)))
            else:
                pending.append(Pending(was.id, "move", f"tier move {was.plan_name} ({was.model.value}) → {want.plan_name} "
                                       f"({want.model.value}) waits for its data to move",
                                       f"tenancy upgrade {was.id} --to {want.plan_name}", want.plan_name,
                                       want.model.value))
        if want.state is not was.state and want.state is not State.OFFBOARDED:
            entry["state"] = was.state.value
            verb = "suspend" if want.state is State.SUSPENDED else "resume"
            pending.append(Pending(was.id, "state", f"tenant '{was.id}' is {was.state.value} in the deployment and "
                                   f"{want.state.value} in tenants.yaml; a deploy does not change a tenant's state",
                                   f"tenancy {verb} {was.id}"))
        elif want.state is State.OFFBOARDED:
            entry["state"] = was.state.value
            pending.append(Pending(was.id, "state", f"tenant '{was.id}' is offboarded in tenants.yaml but still deployed; "
                                   "offboarding exports and deletes its data, which a deploy never does",
                                   f"tenancy offboard {was.id} --export-to DIR"))
    from tenancy.fleet.placement import pin_conflicts
    placements = dict(base.placements)
    for c in pin_conflicts(dataclasses.replace(desired, placements=placements)):
        pending.append(Pending(c.tenant, "placement", c.message, c.command))
    effective = parse_catalog(yaml.safe_dump(doc, sort_keys=False), desired.path)
    return dataclasses.replace(effective, notes=notes, placements=placements), pending


def for_tenant(deployed: Deployed, desired: Catalog, tenant_id: str, *, plan: str | None = None,
               state: str | None = None, from_catalog: bool = False, note: dict | None = None,
               placement: dict[str, str] | None = None) -> Catalog:
    """The deployed catalogue with one tenant changed and nothing else.

    `from_catalog`: take that tenant's entry from tenants.yaml (an upgrade applies the tenant's desired
    settings for its new plan); otherwise its deployed entry is kept and only `plan`/`state` change.
    `placement`: the tenant's new recorded placement (`tenancy place`); every other tenant keeps its own."""
    base = deployed.catalog
    if base is None:
        return desired
    doc = to_document(base)
    plans = {**_plans_doc(base), **_plans_doc(desired)}
    doc["plans"] = {**to_document(base)["plans"], **to_document(desired)["plans"]}
    entry = _doc_tenant(doc, tenant_id)
    if from_catalog and any(t.id == tenant_id for t in desired.tenants):
        fresh = _doc_tenant(to_document(desired), tenant_id)
        fresh["state"] = entry["state"]
        doc["tenants"][doc["tenants"].index(entry)] = entry = fresh
    if plan is not None:
        _set_plan(entry, plans, plan)
    if state is not None:
        entry["state"] = state
    changed = parse_catalog(yaml.safe_dump(doc, sort_keys=False), base.path)
    notes = dict(base.notes)
    if note is not None:
        notes[tenant_id] = note
    placements = dict(base.placements)
    if placement is not None:
        placements[tenant_id] = dict(placement)
    return dataclasses.replace(changed, notes=notes, placements=placements)


def require_active_tenant(deployed: Deployed, desired: Catalog, env: str, tenant_id: str) -> None:
    """Lifecycle commands act on deployed tenants only, never on offboarded or unknown ones."""
    if deployed.catalog is None:
        raise RecordError(f"the platform stack '{naming.stack_name(env)}' has not been deployed (or predates the deployed "
                          "record); run `tenancy up` first")
    if not deployed.knows(tenant_id):
        in_file = any(t.id == tenant_id for t in desired.tenants)
        raise RecordError(f"tenant '{tenant_id}' has not been deployed in '{env}'" +
                          ("; run `tenancy up` first" if in_file else " and is not in tenants.yaml; check the id"))
    if deployed.catalog.tenant(tenant_id).state is State.OFFBOARDED:
        raise RecordError(f"tenant '{tenant_id}' is offboarded in '{env}'; its data is gone and it has no resources left")


def require_offboarded_tenant(deployed: Deployed, env: str, tenant_id: str) -> None:
    """A restore brings back an offboarded tenant only: one the deployment knows, with the plan it was offboarded on."""
    if deployed.catalog is None:
        raise RecordError(f"the platform stack '{naming.stack_name(env)}' has not been deployed (or predates the deployed "
                          "record); run `tenancy up` first")
    if not deployed.knows(tenant_id):
        raise RecordError(f"tenant '{tenant_id}' was never deployed in '{env}', so it was not offboarded there: a restore "
                          "brings back an offboarded tenant of this environment; check the id and --env")


def _line_hint(path: str, tenant_id: str, plan: str) -> str:
    line = plan_line(path, tenant_id)
    where = f"{path}:{line}" if line else path
    return f": change {where} to `plan: {plan}`"


def plan_line(path: str | Path, tenant_id: str) -> int | None:
    """The 1-based line of the tenant's `plan:` key in the catalogue file (None when it cannot be read)."""
    return entry_lines(path, "plan").get(tenant_id)
