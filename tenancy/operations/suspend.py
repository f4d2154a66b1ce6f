"""`tenancy suspend` and `tenancy resume` on the operation protocol: the registry and every database of the
tenant say suspended (each database refuses the tenant's writes itself, in-flight writers drained first) or
active again; then its stacks: a tenant stack scales to zero and loses its routes, and the platform-side stacks
record the state. Every other tenant stays exactly as deployed.

    state -> publish

The databases are found through the registry (or `--db` overrides); one this run cannot reach is refused by
the preflight, so a resume never reports "resumed" while a database still refuses the tenant's writes.
"""

from __future__ import annotations

from typing import Any

from tenancy import naming, topology
from tenancy.catalog import Catalog, State
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import tenant_data as data
from tenancy.lifecycle.deploy import checked_up, up_tenant_platform
from tenancy.operations import stores as where
from tenancy.operations.lease import Spec
from tenancy.operations.protocol import Context, Operation
from tenancy.operations.tier_move import project_of
from tenancy.stores import postgres as pg
from tenancy.stores.layout import registry_entry, DataLayout, stores_for

PHASE_TEXT = {
    "state": "the registry and every database of the tenant record its state (a suspend drains in-flight writers)",
    "publish": "its tenant stack (replicas, routes) and the platform-side stacks that hold its share, nothing else",
}


class SetState(Operation):
    phases = ("state", "publish")
    phase_text = PHASE_TEXT

    def __init__(self, ctx: Context, catalog: Catalog, tenant: str, *, resume: bool, reach: data.Reach | None = None,
                 layout: DataLayout | None = None, command: str | None = None):
        super().__init__(ctx, tenant)
        self.catalog, self.resume, self.layout, self.command = catalog, resume, layout, command
        self.reach = reach or data.Reach({})
        self.kind = "resume" if resume else "suspend"
        self.state = State.ACTIVE if resume else State.SUSPENDED
        self.deployed = rec.read(ctx.engine, ctx.env)
        rec.require_active_tenant(self.deployed, catalog, ctx.env, tenant)

    def spec(self) -> Spec:
        cmd = self.command or f"tenancy {self.kind} {self.tenant} --env {self.ctx.env}"
        return Spec(self.kind, self.tenant, {}, cmd, None)

    def prepare(self) -> None:
        ctx = self.ctx
        t = self.deployed.catalog.tenant(self.tenant)
        self.t = t
        self.stores = stores_for(t, ctx.env, project_of(self.deployed), self.layout,
                                 pool_shard=topology.pool_shard_of(ctx.env, self.deployed.catalog, self.tenant))
        resolver = where.Resolver(ctx.registry, self.reach.dsns)
        self.databases = [resolver.database(self.stores, store, "source") for store, tables in self.stores.postgres.items()
                          if tables]

    def preflight(self, problems: list[str]) -> None:
        checked = where.check(self.databases, self.tenant, self.ctx.env, self.ctx.registry)
        problems.extend(checked.problems)
        if not problems:
            for d in self.databases:
                self.ctx.registry.pin(d.name, d.unit, checked.identity(d.name))

    def phase_state(self) -> dict:
        row = self.ctx.registry.tenant(self.tenant)
        with self.lease.fenced() as c:
            self.ctx.registry.put_tenant(
                c, self.tenant, plan=row.plan if row else self.t.plan_name, model=row.model if row else self.t.model.value,
                state=self.state.value, directory=row.directory if row else self.deployed.directory.get(self.tenant, {}),
                stores=row.stores if row else registry_entry(self.stores), operation=self.op_id)
        for d in self.databases:
            if self.resume:
                pg.set_state(d.dsn, self.tenant, "active")
            else:
                pg.freeze(d.dsn, self.tenant, "suspended")    # waits out in-flight writes, then refuses new ones
        return {"databases": [d.name for d in self.databases]}

    def phase_publish(self) -> dict:
        new = rec.for_tenant(self.deployed, self.catalog, self.tenant, state=self.state.value)
        ran = []
        if self.t.has_stack:
            stack = naming.stack_name(self.ctx.env, self.tenant)
            checked_up(self.ctx.engine, stack, new, False, set(), self.say)
            ran.append(stack)
        ran += [r.stack for r in up_tenant_platform(self.ctx.engine, self.ctx.env, self.deployed.catalog, new,
                                                     self.tenant, False, set(), self.say)]
        return {"stacks": ran}

    def finished(self) -> None:
        with self.lease.fenced() as c:
            c.execute("UPDATE registry.tenants SET operation = NULL WHERE id = %s", (self.tenant,))
        want = self.catalog.tenant(self.tenant).state if any(t.id == self.tenant for t in self.catalog.tenants) else None
        if want is not self.state:
            line = rec.plan_line(self.catalog.path, self.tenant)
            self.say(f"tenant '{self.tenant}' is {self.state.value}; set `state: {self.state.value}` for it in "
                     f"{self.catalog.path}{f' (its entry is near line {line})' if line else ''} so tenants.yaml says what is "
                     "deployed")


def set_state(ctx: Context, catalog: Catalog, tenant: str, *, resume: bool, take_over: bool = False, **kw: Any):
    return SetState(ctx, catalog, tenant, resume=resume, **kw).run(take_over=take_over)
