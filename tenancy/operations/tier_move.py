"""Tier moves: a tenant goes between pooled and namespace/dedicated with every store it has (`tenancy upgrade`,
both ways), on the operation protocol (tenancy/operations/protocol.py).

The tenant's stores on each side come from the data layout (`stores.yaml` -> `tenancy.stores.layout`);
`tenant_data.pair_stores` pairs each source store with its target. Phases:

    provision -> sync -> freeze -> copy -> verify -> switch -> export -> publish -> cleanup

- preflight (before the lease's first change): every database of both sides is the one the registry names
  (tenancy/operations/stores.py), the source holds the tenant, no target is a source or holds another tenant;
  the archive directory is new and usable; each store's export method is available (the graph's dump Job needs
  --kubeconfig, or the graph is discarded explicitly); each PostgreSQL pair's method (online or copy) is
  chosen; a downgrade refuses data the pooled plan cannot hold unless it is exported and discarded, and a
  destroy of the old stack that would remove a store this move does not save; the new stack is previewed.
- provision: the tenant stack (upgrade); the tenancy SQL on each target database, claimed for its store, the
  tenant registered there `frozen` (each registration recorded first, so abort removes exactly it).
- sync: the registry marks the tenant as moving (clients following `tenancy.client` then name the documents
  they write, see there); online pairs start replicating; documents and objects are copied in two passes
  while the tenant writes; online pairs wait for their initial copy and compare every row while live.
- freeze: the registry marks the tenant frozen, then each source database refuses its writes once every
  in-flight writer has ended (`stores.postgres.freeze_in`, the one freeze).
- copy, verify (inside the freeze, so only what must be): online pairs catch up and compare the rows changed
  since their last comparison; documents and objects, once every client has seen the freeze
  (`client.STATE_TTL_S`), get the documents written since the second pass (written, read back, compared) and
  the objects that differ (one listing per side compares every object's MD5); copy pairs are copied in one
  target transaction per database (a kill leaves the target as it was) and compared in it. Each verified
  summary is journalled.
- switch: the point of no return. Targets accept the tenant's writes, sources are read-only, and the registry
  points the tenant at its new stores: an application following the registry writes to the target from its
  next transaction. Then, the tenant writing again: replication objects dropped, and the summaries of the
  online pairs' sources taken (read-only since the freeze: the summary is the one verified) and the documents'
  source checked against what was verified (repaired from the read-only source where a write escaped the
  client contract).
- export: with --export-to, every source store (read-only until cleanup) into a private archive with counts
  and checksums, read back.
- publish: the platform stack records the move (the declared directory), after the tenant writes again.
- cleanup: after the --keep-source window each source store is emptied, only while it still holds exactly its
  verified summary (a store a killed run already emptied counts as done); a downgrade destroys the old stack
  through the guarded destroy.

The operation is one class, `TierMove`, assembled from its parts: this module holds what it is given and works out
(the spec, which stores move where, the outcome) and its abort; tier_move_preflight.py the checks before any
change; tier_move_phases.py the phases.
"""

from __future__ import annotations

from typing import Any, Mapping

from tenancy import naming, topology
from tenancy.catalog import Catalog, Model
from tenancy.errors import Refused
from tenancy.lifecycle import archives, online
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import tenant_data as data
from tenancy.lifecycle.destroy import STORES, guarded_destroy
from tenancy.operations import stores as where
from tenancy.operations.lease import Spec
from tenancy.operations.protocol import Context
from tenancy.operations.tier_move_phases import MOVING, TierMovePhases
from tenancy.operations.tier_move_preflight import TierMovePreflight
from tenancy.stores import StoreError
from tenancy.stores import firestore as fs
from tenancy.stores import postgres as pg
from tenancy.stores.layout import DataLayout, stores_for

PHASES = ("provision", "sync", "freeze", "copy", "verify", "switch", "export", "publish", "cleanup")

PHASE_TEXT = {
    "provision": "tenant stack up with the new plan; tenancy SQL and the frozen registration on each target database",
    "sync": "PostgreSQL rows that can replicate to their targets do so while the tenant writes, and are verified; "
            "documents and objects are copied in two passes while the tenant is live",
    "freeze": "the registry and every source database refuse the tenant's writes once every in-flight writer has ended",
    "copy": "what changed since the last pass, to each target: replicated rows caught up and the changed rows "
            "compared, documents and objects written since; rows of copy pairs copied and verified",
    "verify": "each store's verified counts and checksums, journalled",
    "switch": "the targets accept the tenant's writes, the sources are read-only, the registry points at the new "
              "stores; then the read-only sources' summaries",
    "export": "every read-only source store into the archive (--export-to), with counts and checksums, read back",
    "publish": "platform stack up with this tenant's record changed: the declared directory shows the new placement",
    "cleanup": "each source store re-verified, then emptied (after the --keep-source window); old stack destroyed",
}


def project_of(deployed: rec.Deployed) -> str:
    """The platform's GCP project, as the deployed platform stack reports it (where the stores' names live)."""
    return deployed.project


class TierMove(TierMovePreflight, TierMovePhases):
    """`tenancy upgrade TENANT --to PLAN`: into or out of the pool, data included."""

    phases = PHASES
    point_of_no_return = "switch"
    phase_text = PHASE_TEXT

    def __init__(self, ctx: Context, catalog: Catalog, tenant: str, to_plan: str, *, reach: data.Reach,
                 keep_source_days: int = 0, allow_destroy: bool = False, discard: frozenset[str] = frozenset(),
                 export_to: str | None = None, method: str = "auto", replication: Mapping[str, str] | None = None,
                 layout: DataLayout | None = None, command: str | None = None):
        super().__init__(ctx, tenant)
        self.catalog, self.to_plan, self.reach = catalog, to_plan, reach
        self.keep_source_days, self.allow_destroy, self.discard = keep_source_days, allow_destroy, frozenset(discard)
        self.export_to, self.method, self.replication = export_to, method, dict(replication or {})
        self.layout = layout
        self.command = command
        if method not in online.METHODS:
            raise Refused(f"unknown method '{method}': use one of {', '.join(online.METHODS)}")
        self.deployed = rec.read(ctx.engine, ctx.env)
        rec.require_active_tenant(self.deployed, catalog, ctx.env, tenant)
        if to_plan not in {**self.deployed.catalog.plans, **catalog.plans}:
            raise Refused(f"unknown plan '{to_plan}'")
        self.kind = self._kind(self.deployed.catalog.tenant(tenant).plan_name, to_plan)

    def _kind(self, from_plan: str, to_plan: str) -> str:
        plans = {**self.deployed.catalog.plans, **self.catalog.plans}
        return "downgrade" if plans[to_plan].model is Model.POOLED else "upgrade"

    # ------------------------------------------------------------------------------------------------ spec

    def spec(self) -> Spec:
        cmd = self.command or f"tenancy upgrade {self.tenant} --to {self.to_plan} --env {self.ctx.env}"
        return Spec(self.kind, self.tenant, {"to_plan": self.to_plan}, cmd, f"{cmd} --abort",
                    settings={"from_plan": self.deployed.catalog.tenant(self.tenant).plan_name, "to_plan": self.to_plan,
                              "keep_source_days": self.keep_source_days, "discard": sorted(self.discard),
                              "export_to": archives.setting(self.export_to),
                              "method": self.method})

    # --------------------------------------------------------------------------------------------- prepare

    def prepare(self) -> None:
        ctx, tenant, s = self.ctx, self.tenant, self.settings
        self.from_plan = s.get("from_plan") or self.deployed.catalog.tenant(tenant).plan_name
        # As the move was started: a resumed run keeps its window, discards, archive and method.
        self.keep_source_days = int(s.get("keep_source_days", self.keep_source_days))
        self.discard = frozenset(s.get("discard", [])) | self.discard
        self.archive = archives.staging(s.get("export_to"), self.op_id)   # written here (a bucket archive: staged)
        self.method = s.get("method", self.method)
        self.before, self.after = self._catalogs()
        b, a = self.before.tenant(tenant), self.after.tenant(tenant)
        self.b, self.a = b, a
        self.creates_stack = b.model is Model.POOLED and a.model is not Model.POOLED
        self.destroys_stack = b.model is not Model.POOLED and a.model is Model.POOLED
        self.stack = naming.stack_name(ctx.env, tenant)
        project = project_of(self.deployed)
        self.src_stores = stores_for(b, ctx.env, project, self.layout,
                                     pool_shard=topology.pool_shard_of(ctx.env, self.before, tenant))
        self.dst_stores = stores_for(a, ctx.env, project, self.layout,
                                     pool_shard=topology.pool_shard_of(ctx.env, self.after, tenant))
        self.given_overrides = getattr(self, "given_overrides", dict(self.reach.dsns))
        resolver = where.Resolver(ctx.registry, self.given_overrides)
        self.databases: list[where.Database] = []
        dsns: dict[str, dict[str, str]] = {"source": {}, "target": {}}
        for role, stores in (("source", self.src_stores), ("target", self.dst_stores)):
            for store, tables in stores.postgres.items():
                if role == "source" and not tables:
                    continue
                d = resolver.database(stores, store, role)
                self.databases.append(d)
                if d.dsn:
                    dsns[role][store] = d.dsn
        given = self.reach
        self.reach = data.Reach(dsns["source"], given.objects_root, given.graph_runner, given.skip)
        self.target_reach = data.Reach(dsns["target"], given.objects_root, given.graph_runner, given.skip,
                                       _stores=self.reach._stores)
        self.pairing = data.pair_stores(self.src_stores, self.dst_stores, self.reach, self.target_reach)
        self.source_dbs = [d for d in self.databases if d.role == "source" and d.dsn]
        self.target_dbs = [d for d in self.databases if d.role == "target" and d.dsn
                           and any(isinstance(p.target, data.PgHandle) and p.target.name == d.store
                                   for p in self.pairing.pairs)]
        self.pg_pairs = [p for p in self.pairing.pairs if isinstance(p.source, data.PgHandle)]
        self.other_pairs = [p for p in self.pairing.pairs if p not in self.pg_pairs]

    def _catalogs(self) -> tuple[Catalog, Catalog]:
        """The deployed record before and after the move (only this tenant differs)."""
        note = {"movedFrom": self.from_plan, "movedTo": self.to_plan, "moveId": self.op_id}
        return (rec.for_tenant(self.deployed, self.catalog, self.tenant, plan=self.from_plan),
                rec.for_tenant(self.deployed, self.catalog, self.tenant, plan=self.to_plan, from_catalog=True, note=note))

    def ours(self) -> dict[str, str]:
        """Target databases where this operation registered the tenant (its cleanup records)."""
        if not self.lease:
            return {}
        return {r.ref["database"]: "frozen" for r in self.ctx.registry.cleanup_records(self.op_id)
                if r.kind == "registration"}

    # --------------------------------------------------------------------------------------------- outcome

    def finished(self) -> None:
        o = self.outcome
        copied = {k: dict(v) for k, v in self.done.get("copy", {}).get("copied", {}).items()}
        for name, n in self.done.get("switch", {}).get("rows", {}).items():
            copied.setdefault(name, {})["rows"] = n
        o.detail["rows"] = sum(v.get("rows", 0) or 0 for v in copied.values())
        o.detail["copied"] = copied
        if self.archive is not None:
            o.detail["archive"] = self.settings.get("export_to")
        if o.detail.get("freeze_seconds") is None:
            o.detail["freeze_seconds"] = self.done.get("switch", {}).get("freeze_seconds")
        if any(t.id == self.tenant for t in self.catalog.tenants) and self.catalog.tenant(self.tenant).plan_name != self.to_plan:
            line = rec.plan_line(self.catalog.path, self.tenant)
            o.detail["catalog_line"] = (f"tenants.yaml still says plan '{self.catalog.tenant(self.tenant).plan_name}' for "
                                        f"'{self.tenant}': change {self.catalog.path}{':' + str(line) if line else ''} to "
                                        f"`plan: {self.to_plan}`")
            self.say(o.detail["catalog_line"])

    # ------------------------------------------------------------------------------------------------ abort

    def undo(self) -> None:
        say = self.say
        say(f"aborting {self.op_id}: the tenant stays on {self.from_plan}")
        for _, m in self.movers():     # replication objects, tracking and the targets' copies
            m.abort()
        for p in self.other_pairs:
            if isinstance(p.source, data.FirestoreHandle):
                try:
                    fs.clear_changes(p.source.location)
                except StoreError as exc:
                    say(f"  could not remove the documents' change list at {p.source.describe()} ({exc})")
        records = self.lease.pending(("on_abort", "always"))
        stack_record = None
        for r in records:
            if r.kind == "stack":
                stack_record = r
                continue
            if r.kind == "copy":
                self._clear_copy(r.ref)
            elif r.kind == "registration":
                d = next((x for x in self.target_dbs if x.name == r.ref["database"]), None)
                if d is not None and self._same_database(d, r.ref.get("identity")):
                    pg.set_state(d.dsn, self.tenant, "frozen")
                    if not pg.unregister(d.dsn, self.tenant):
                        say(f"  {d.name}: the tenant still has rows there; left registered (frozen)")
            self.lease.cleaned(r.seq)
        frozen = {**self.progress("freeze"), **self.done.get("freeze", {})}
        previous = frozen.get("previous") or {}
        for d in self.source_dbs:
            if d.name in previous:
                pg.set_state(d.dsn, self.tenant, previous[d.name])
        row = self.ctx.registry.tenant(self.tenant)
        if row is not None and row.operation == self.op_id:
            self.registry_state(frozen.get("registry_previous") or "active", operation=None,
                                stores={k: v for k, v in (row.stores or {}).items() if k != MOVING})
        if stack_record is not None:
            # The new tenant stack holds no data of record (the copy was just removed): discard its stores.
            guarded_destroy(self.ctx.engine, self.stack, self.before,
                            {s: f"aborted move {self.op_id}: the copy, not the original" for s in STORES}, say)
            self.lease.cleaned(stack_record.seq)

    def _same_database(self, d: where.Database, identity: list | None) -> bool:
        """Abort touches a target only while it is still the database this operation recorded, and no source."""
        seen = where.inspect(d.dsn)
        sources = {tuple(self.identities_of(x)) for x in self.source_dbs}
        if seen.identity is None or seen.identity in sources:
            self.say(f"  {d.name}: not touched: it is not the target this operation recorded")
            return False
        return not identity or tuple(identity) == seen.identity

    def identities_of(self, d: where.Database) -> tuple:
        recorded = (self.settings.get("identities") or {}).get(d.name)
        if recorded:
            return tuple(recorded)
        return where.inspect(d.dsn).identity or ()

    def _clear_copy(self, ref: dict) -> None:
        p = next((x for x in self.pairing.pairs if x.name == ref["store"]), None)
        if p is None:
            return
        if isinstance(p.target, data.PgHandle):
            d = next((x for x in self.target_dbs if x.store == p.target.name), None)
            if d is None or not self._same_database(d, (self.settings.get("identities") or {}).get(d.name)):
                return
        try:
            p.clear_target(self.say)
        except (pg.DataError, StoreError) as exc:
            self.say(f"  could not clear {p.target.describe()} ({exc}); it is not in use and a later move clears it")


def upgrade(ctx: Context, catalog: Catalog, tenant: str, to_plan: str, *, abort: bool = False, take_over: bool = False,
            **kw: Any):
    """Run (or resume, or abort) the tier move of `tenant` to `to_plan`; the Outcome."""
    return TierMove(ctx, catalog, tenant, to_plan, **kw).run(abort=abort, take_over=take_over)
