"""`tenancy place TENANT --pool-shard SHARD`: a pooled tenant moves to another pool shard with its rows, objects and
documents, on the operation protocol -- the same phases as a tier move (tenancy/operations/tier_move.py), with
no tenant stack to create or destroy:

    provision -> sync -> freeze -> export -> copy -> verify -> switch -> publish -> cleanup

The source is the tenant's current shard as the deployed record places it; its database must be that shard's
(the registry's identity checks) and hold the tenant, and the target shard's database must not hold it yet.
After `switch` the registry and the databases route the tenant to the new shard; `publish` records the
placement in the platform-side stacks (only the tenant's own units run); `cleanup` empties the old shard's
copy against its verified summary. A cell or data project of a namespace tenant is refused (tenancy/fleet/
relocate.py).
"""

from __future__ import annotations

from typing import Any

from tenancy.catalog import Catalog
from tenancy.fleet.capacity import Capacity
from tenancy.operations.relocate import resolve
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import tenant_data as data
from tenancy.operations.lease import Spec
from tenancy.operations.protocol import Context, NothingToDo, Operation, Outcome
from tenancy.operations.tier_move import TierMove

PHASE_TEXT = {
    "provision": "the tenancy SQL and the frozen registration in the new shard's database",
    "publish": "the platform-side stacks of both shards record the tenant's new placement",
}


class Place(TierMove):
    """A pooled tenant's data from its pool shard to another."""

    def __init__(self, ctx: Context, catalog: Catalog, tenant: str, *, pool_shard: str | None = None,
                 cell: str | None = None, data_project: str | None = None, reach: data.Reach,
                 capacity: Capacity | None = None, command: str | None = None, method: str = "auto", **kw: Any):
        Operation.__init__(self, ctx, tenant)
        self.catalog, self.reach, self.command = catalog, reach, command
        self.kind = "place"
        self.keep_source_days, self.allow_destroy, self.discard = 0, False, frozenset()
        self.export_to, self.method, self.replication, self.layout = None, method, dict(kw.get("replication") or {}), kw.get("layout")
        self.deployed = rec.read(ctx.engine, ctx.env)
        self.now, self.target = resolve(catalog, self.deployed, ctx.env, tenant, cell=cell, pool_shard=pool_shard,
                                        data_project=data_project, capacity=capacity)
        plan = self.deployed.catalog.tenant(tenant).plan_name
        self.to_plan = plan
        self.phase_text = {**self.phase_text, **PHASE_TEXT}

    def spec(self) -> Spec:
        cmd = self.command or f"tenancy place {self.tenant} --pool-shard {self.target.pool_shard} --env {self.ctx.env}"
        return Spec(self.kind, self.tenant, {"to": self.target.to_json()}, cmd, f"{cmd} --abort",
                    settings={"from_plan": self.to_plan, "to_plan": self.to_plan, "from": self.now.to_json(),
                              "to": self.target.to_json(), "method": self.method, "keep_source_days": 0, "discard": []})

    def _catalogs(self) -> tuple[Catalog, Catalog]:
        s = self.settings
        before = rec.for_tenant(self.deployed, self.catalog, self.tenant, placement=s.get("from") or self.now.to_json())
        after = rec.for_tenant(self.deployed, self.catalog, self.tenant, placement=s.get("to") or self.target.to_json())
        return before, after

    def _preflight_kind(self, problems: list[str]) -> None:
        if not self.lease.resumed and self.now == self.target:
            raise NothingToDo(f"tenant '{self.tenant}' is already in {self.target.describe()}; nothing to do",
                              **{"from": self.now.to_json(), "to": self.target.to_json()})


def place(ctx: Context, catalog: Catalog, tenant: str, *, abort: bool = False, take_over: bool = False, **kw: Any) -> Outcome:
    op = Place(ctx, catalog, tenant, **kw)
    out = op.run(abort=abort, take_over=take_over)
    out.detail.setdefault("from", op.settings.get("from") or op.now.to_json())
    out.detail.setdefault("to", op.settings.get("to") or op.target.to_json())
    return out
