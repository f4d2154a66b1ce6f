"""Tier moves: a tenant goes between pooled and namespace/dedicated with every store it has (`tenancy upgrade`,
both ways), on the operation protocol (tenancy/operations/protocol.py).

The tenant's stores on each side come from the data layout (`stores.yaml` -> `tenancy.stores.layout`);
`tenant_data.plan_move` pairs each source store with its target. Phases:

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
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping

from tenancy import client, db, naming, topology
from tenancy.catalog import Catalog, Model
from tenancy.errors import OperationError, Refused
from tenancy.lifecycle import archives, online
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import tenant_data as data
from tenancy.lifecycle.deploy import unexpected_destruction, up_tenant_platform
from tenancy.lifecycle.destroy import STORES, guarded_destroy, uncovered
from tenancy.operations import stores as where
from tenancy.operations.lease import Spec
from tenancy.operations.protocol import Context, NothingToDo, Operation, Waiting
from tenancy.stores import Mismatch, StoreError, Summary
from tenancy.stores import firestore as fs
from tenancy.stores import objects as obj
from tenancy.stores import postgres as pg
from tenancy.stores.layout import registry_entry, POOLED, DataLayout, stores_for

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


MOVING = "moving"        # in the registry's stores entry while a move copies them: clients name what they write
LAST_PASS_OBJECTS = 5    # live passes over the objects stop once a pass copied no more than this


def project_of(deployed: rec.Deployed) -> str:
    """The platform's GCP project, as the deployed platform stack reports it (where the stores' names live)."""
    return deployed.project


class TierMove(Operation):
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
        self.plan = data.plan_move(self.src_stores, self.dst_stores, self.reach, self.target_reach)
        self.source_dbs = [d for d in self.databases if d.role == "source" and d.dsn]
        self.target_dbs = [d for d in self.databases if d.role == "target" and d.dsn
                           and any(isinstance(p.target, data.PgHandle) and p.target.name == d.store for p in self.plan.pairs)]
        self.pg_pairs = [p for p in self.plan.pairs if isinstance(p.source, data.PgHandle)]
        self.other_pairs = [p for p in self.plan.pairs if p not in self.pg_pairs]

    def _catalogs(self) -> tuple[Catalog, Catalog]:
        """The deployed record before and after the move (only this tenant differs)."""
        note = {"movedFrom": self.from_plan, "movedTo": self.to_plan, "moveId": self.op_id}
        return (rec.for_tenant(self.deployed, self.catalog, self.tenant, plan=self.from_plan),
                rec.for_tenant(self.deployed, self.catalog, self.tenant, plan=self.to_plan, from_catalog=True, note=note))

    def _preflight_kind(self, problems: list[str]) -> None:
        if not self.lease.resumed and self.from_plan == self.to_plan:
            raise NothingToDo(f"tenant '{self.tenant}' is already on plan '{self.to_plan}'; nothing to do")
        if (self.b.model is Model.POOLED) == (self.a.model is Model.POOLED):
            problems.append(f"moving '{self.tenant}' from {self.b.model.value} to {self.a.model.value} is not supported: "
                            "tier moves go between pooled and namespace/dedicated (the tenant's data must live in two "
                            "places at once)")

    def _ours(self) -> dict[str, str]:
        """Target databases where this operation registered the tenant (its cleanup records)."""
        if not self.lease:
            return {}
        return {r.ref["database"]: "frozen" for r in self.ctx.registry.cleanup_records(self.op_id)
                if r.kind == "registration"}

    # ------------------------------------------------------------------------------------------- preflight

    def preflight(self, problems: list[str]) -> None:
        tenant, to_plan = self.tenant, self.to_plan
        resumed = self.lease.resumed
        self._preflight_kind(problems)
        if problems:
            return
        expected = self.settings.get("identities") if resumed else None
        # Databases the new tenant stack creates are not there to check yet: provisioning records them in the
        # registry from the stack's outputs and checks them before anything is written into them.
        self.to_create = [d for d in self.databases if d.role == "target" and d.dsn is None and self.creates_stack
                          and "provision" not in self.done]
        checked = where.check([d for d in self.databases if d not in self.to_create], tenant, self.ctx.env,
                              self.ctx.registry, ours=self._ours(), expected=expected, holding=not resumed)
        problems.extend(checked.problems)
        self.identities = {n: s.identity for n, s in checked.seen.items() if s.identity}
        missing = data.unreachable(self.src_stores, self.reach)
        not_discarded: list[str] = []
        if self.destroys_stack:
            not_discarded = [n for n in missing if n not in self.discard and not n.startswith("postgres")]
            if not_discarded:
                problems.append(f"downgrading '{tenant}' removes its stack, but this run cannot reach "
                                f"{', '.join(not_discarded)}: give access to them, or --discard them")
        created = {d.store for d in self.to_create}
        if [u for u in self.plan.unreached if u not in created] and not any("cannot reach" in p for p in problems):
            problems.append(f"'{tenant}''s rows go to {', '.join(self.plan.unreached)} on plan '{to_plan}', which this run "
                            f"cannot reach: give {' '.join('--db ' + n + '=DSN' for n in self.plan.unreached)}")
        if checked.problems or [u for u in self.plan.unreached if u not in created]:
            return      # the rest reads the stores: only once every database is the right one
        for n in missing:
            self.say(f"  not carried by this run: {n} of '{tenant}' stays where it is")
        if not resumed:
            self._check_archive(problems)
        self._check_graph(problems)
        self._check_other_stores(problems, resumed)
        if self.destroys_stack and not resumed:
            self.empty_left = {n for n, h in self.plan.left.items() if h.kind == "postgres" and not h.summary().count}
            named = unsaved(self.plan, self.discard, self.archive, tenant, self.a.plan_name)
            problems.extend(named)
            left = [(c, st) for c, st in uncovered(self.ctx.engine.preview_destroy(self.stack, self.before), self.covered())
                    if not any(f"--discard {st}" in p or f" {st}" in p.split(":")[0] for p in problems)
                    and st not in not_discarded]
            if left:
                stores = sorted({s for _, s in left if s})
                problems.append(f"downgrading '{tenant}' would destroy "
                                f"{', '.join(c.urn.rsplit('::', 1)[-1] for c, _ in left)} ({', '.join(stores)}), whose data "
                                "the pooled plan cannot hold and this move does not carry; export it (--export-to DIR) and "
                                f"pass {' '.join('--discard ' + s for s in stores)}")
        if self.creates_stack and "provision" not in self.done:
            what = unexpected_destruction(self.ctx.engine.preview(self.stack, self.after), set())
            if what and not self.allow_destroy:
                problems.append(f"the tenant stack {self.stack} would {what} (review it, then --allow-destroy)")
        # Each pair's method is chosen once its target carries the tenancy SQL: here when it already does (else at
        # the start of sync, after provisioning applied it).
        ready = not self.to_create and all(checked.seen.get(d.name) and checked.seen[d.name].schema
                                           for d in self.databases if d.role == "target")
        if not problems and "sync" not in self.done and ready and not self.settings.get("methods"):
            try:
                self.methods = online.choose(self.pg_pairs, self.method, self.replication, self.say)
            except Refused as exc:
                problems.append(str(exc).replace(", or --abort", ""))
        if not problems and not resumed:
            self.lease.settings(identities=self.identities, methods=getattr(self, "methods", {}),
                                graph_export=self.graph_export)
            for d in self.databases:
                if d.name in self.identities:
                    self.ctx.registry.pin(d.name, d.unit, self.identities[d.name])

    def _check_archive(self, problems: list[str]) -> None:
        if self.archive is None:
            return
        at = self.export_to or self.settings["export_to"]
        problem = archives.problem(at) if archives.is_bucket(at) else archive_problem(Path(at))
        if problem:
            problems.append(problem)

    def _check_graph(self, problems: list[str]) -> None:
        """Decided here, not when exporting: whether the graph is dumped into the archive."""
        self.graph_export = False
        g = self.plan.left.get("graph")
        if g is None:
            return
        if self.archive is not None and self.reach.graph_runner is not None:
            self.graph_export = True
        elif "graph" in self.discard:
            self.say("  graph: discarded without an export" + (" (no --kubeconfig to run its dump Job)"
                                                              if self.archive is not None else ""))
        elif self.archive is not None:
            problems.append(f"'{self.tenant}' has a Neo4j graph: exporting it runs a neo4j-admin dump Job in namespace "
                            f"{self.src_stores.namespace}; give --kubeconfig, or --discard graph to let it go")

    def _check_other_stores(self, problems: list[str], resumed: bool) -> None:
        """Documents and objects: both sides answer, and a target holds nothing but this move's own copy."""
        for p in self.other_pairs:
            try:
                problems.extend(getattr(p.source, "problems", lambda: [])())
                p.source.summary()
                there = p.target.summary()
            except StoreError as exc:
                problems.append(f"{p.name}: {exc}")
                continue
            if there.count and not resumed:
                problems.append(f"{p.name}: the target {p.target.describe()} already holds {there.count} items of "
                                f"'{self.tenant}': not an empty store of its own")
        for name, h in self.plan.left.items():
            if h.kind in ("objects", "firestore"):
                try:
                    h.summary()
                except StoreError as exc:
                    problems.append(f"{name}: {exc}")

    def covered(self) -> dict[str, str]:
        """How each source store is saved once this move is through (for the destroy guard)."""
        out = {}
        for p in self.plan.pairs:
            for n in p.covers:
                out[n] = f"moved and verified ({self.op_id})"
        for n in self.src_stores.names:
            if n in getattr(self, "empty_left", ()):
                out[n] = "empty: nothing of the tenant's there"
            elif n in self.plan.left and n not in self.discard:
                out.pop(n, None)
            elif n in self.discard and n not in out:
                saved = f"exported to {archives.describe(self.settings.get('export_to'), n)} and " if self.archive else ""
                out[n] = f"{saved}discarded by --discard {n}"
        return out

    # ----------------------------------------------------------------------------------------------- phases

    def applies(self, phase: str) -> bool:
        return phase != "export" or self.archive is not None

    def phase_provision(self) -> dict:
        if self.creates_stack:
            self.lease.created("stack", {"stack": self.stack}, "on_abort")
            self.ctx.engine.up(self.stack, self.after)
            self.say(f"  {self.stack}: up")
        if getattr(self, "to_create", None):
            self._check_created()
        for d in self.target_dbs:
            self.lease.created("registration", {"database": d.name, "identity": list(self.identities.get(d.name) or [])},
                               "on_abort")
            db.apply(d.dsn)      # the same tenancy SQL the stack's Job applies; idempotent
            where.claim(d.dsn, self.ctx.env, d.name)
            pg.set_state(d.dsn, self.tenant, "frozen", plan=self.to_plan, model=self.a.model.value)
            self.step(f"registered {d.name}")
        return {}

    def _check_created(self) -> None:
        """The databases the tenant stack just created: recorded in the registry from its outputs, then checked as
        every other database was in the preflight, before anything is written into them."""
        from tenancy.operations.sync import tenant_databases

        for name, (unit, connection) in tenant_databases(self.ctx.engine, self.ctx.env, self.tenant).items():
            self.ctx.registry.set_database(name, unit, connection, source="deploy")
        given = self.reach
        self.reach = data.Reach({**self.given_overrides}, given.objects_root, given.graph_runner, given.skip)
        self.prepare()
        missing = [d for d in self.databases if d.role == "target" and d.dsn is None]
        checked = where.check([d for d in self.databases if d.role == "target" and d.dsn], self.tenant, self.ctx.env,
                              self.ctx.registry, ours=self._ours())
        problems = checked.problems + [f"{d.describe()}: the tenant stack {self.stack} exports no connection for it"
                                       for d in missing]
        if problems:
            raise OperationError("the databases the tenant stack created cannot be used: " + "; ".join(problems)
                                 + "; nothing was written into them")
        self.identities.update({n: s.identity for n, s in checked.seen.items() if s.identity})
        self.lease.settings(identities=self.identities)
        self.to_create = []

    def _movers(self) -> list[tuple[data.Pair, online.OnlinePostgresMove]]:
        chosen = self.settings.get("methods") or {}
        return [(p, online.mover(p, self.tenant, self.replication, self.say, operation=self.op_id, plan=self.to_plan,
                                model=self.a.model.value, checkpoint=lambda s, n=p.name: self.step(f"{n}: {s}")))
                for p in self.pg_pairs if chosen.get(p.name, {}).get("method") == "online"]

    def phase_sync(self) -> dict:
        if not self.settings.get("methods"):
            self.lease.settings(methods=online.choose(self.pg_pairs, self.method, self.replication, self.say))
        going = self._movers()
        for p, m in going:
            self.lease.created("replication", {"pair": p.name}, "always")
        # From here clients name the documents they write (the move's last pass copies exactly those): every
        # client has seen it once its state bound has passed, before the first pass starts.
        row = self.ctx.registry.tenant(self.tenant)
        stores = row.stores if row else registry_entry(self.src_stores)
        self._registry_state(self._current_state(), operation=self.op_id, stores={**stores, MOVING: self.op_id})
        marked = time.monotonic()
        for _, m in going:      # the initial copies run in the servers while documents and objects copy
            m.start()
        live: dict[str, dict] = {}
        if self.other_pairs:
            time.sleep(max(client.STATE_TTL_S - (time.monotonic() - marked), 0.0))
        for p in self.other_pairs:
            self.lease.created("copy", {"store": p.name}, "on_abort")
        # The first passes, then the rows' initial copies and comparisons; the objects' second pass last, so that
        # what the freeze still has to look at is what changed in the moment before it.
        for p in self.other_pairs:
            live[p.name] = self._live_passes(p, 2 if isinstance(p.source, data.FirestoreHandle) else 1)
        synced = {p.name: m.sync() for p, m in going}
        for p in self.other_pairs:
            if isinstance(p.source, data.ObjectsHandle):
                live[p.name] = self._live_passes(p, 1, converge=True)
        if self.other_pairs and going:     # the rows changed meanwhile compared again, every pair at once
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(len(going)) as pool:
                for (p, _), done in zip(going, pool.map(lambda pm: pm[1].converge(), going)):
                    synced[p.name]["converged"] = done
            for p in self.other_pairs:     # and the objects once more: the freeze looks at the last moment only
                if isinstance(p.source, data.ObjectsHandle):
                    live[p.name] = self._live_passes(p, 0, converge=True)
        return {"methods": self.settings.get("methods") or {}, "synced": synced, "live": live}

    def _current_state(self) -> str:
        row = self.ctx.registry.tenant(self.tenant)
        return row.state if row else self.before.tenant(self.tenant).state.value

    def _live_passes(self, p: data.Pair, passes: int, converge: bool = False) -> dict:
        """Documents or objects copied while the tenant writes: each pass copies what is missing or different at
        the target (what the target holds and the source no longer has goes: it is this move's own copy).
        With `converge`, objects then get short passes (only the source listed) until one copies few. The last
        pass's result is what the pass inside the freeze starts from."""
        s, t = p.source, p.target
        if isinstance(s, data.ObjectsHandle):
            last = getattr(self, "_passes", {}).get(p.name)
            for _ in range(passes):
                last = obj.sync_pass(s.store, s.prefix, t.store, t.prefix, progress=self.say)
            # Then short passes (the source listed, what changed copied) until few objects are left for the freeze.
            for _ in range(4 if converge else 0):
                last = obj.sync_pass(s.store, s.prefix, t.store, t.prefix, before=last, progress=self.say)
                if last.transferred <= LAST_PASS_OBJECTS:
                    break
            self._passes = {**getattr(self, "_passes", {}), p.name: last}
            return {"objects": len(last.source), "copied": len(last.copied), "removed": len(last.removed)}
        for _ in range(passes):
            second = fs.sync_pass(s.location, t.location, s.tenant, s.collections, progress=self.say)
        self._passes = {**getattr(self, "_passes", {}), p.name: second}
        return {"documents": len(second.source), "written": len(second.written), "removed": len(second.removed)}

    def _wait_for_clients(self) -> None:
        """Every client acts on a state at most `client.STATE_TTL_S` old: once that long has passed since the
        registry said frozen, no document or object write the last pass does not see can land."""
        since = getattr(self, "_frozen_at", None)
        wait = client.STATE_TTL_S - (time.monotonic() - since) if since is not None else client.STATE_TTL_S
        if wait > 0:
            time.sleep(wait)

    def _last_pass(self, p: data.Pair) -> dict:
        """Inside the freeze: what changed since the second pass, copied and verified; the verified summary."""
        self._wait_for_clients()
        try:
            return self._verified_pass(p)
        except Mismatch as exc:
            raise OperationError(f"verification failed: {exc}; the tenant stays frozen on {self.b.model.value}") from None

    def _verified_pass(self, p: data.Pair) -> dict:
        s, t = p.source, p.target
        if isinstance(s, data.ObjectsHandle):
            before = getattr(self, "_passes", {}).get(p.name)
            if before is None:   # resumed in another process: both sides listed and compared
                obj.sync_pass(s.store, s.prefix, t.store, t.prefix, progress=self.say)
                summary = obj.verify_all(s.store, s.prefix, t.store, t.prefix)
                return {"objects": summary.count, "verified": summary.to_json()}
            last = obj.sync_pass(s.store, s.prefix, t.store, t.prefix, before=before, verify=True, progress=self.say)
            summary = last.summary()
            return {"objects": summary.count, "verified": summary.to_json()}
        before = getattr(self, "_passes", {}).get(p.name)
        if before is None:    # resumed in another process: no second pass to start from, so every document
            before = fs.sync_pass(s.location, t.location, s.tenant, s.collections, progress=self.say)
            rels = [*before.written, *fs.changes(s.location)]
            done = fs.apply_delta(s.location, t.location, s.tenant, s.collections, rels, before, progress=self.say)
            summary, _ = fs.verify(s.location, t.location, s.tenant, s.collections)
        else:
            rels = [*before.written, *fs.changes(s.location)]
            done = fs.apply_delta(s.location, t.location, s.tenant, s.collections, rels, before, progress=self.say)
            summary = done.summary()
        return {"documents": summary.count, "delta": len(set(rels)), "verified": summary.to_json()}

    def phase_freeze(self) -> dict:
        prog = self.progress("freeze")
        previous = dict(prog.get("previous") or {})
        if "registry_previous" not in prog:
            row = self.ctx.registry.tenant(self.tenant)
            self.note("freeze", registry_previous=row.state if row else self.before.tenant(self.tenant).state.value,
                      frozen_at=self.ctx.now().isoformat())
        self._registry_state("frozen")
        self._frozen_at = time.monotonic()
        for d in self.source_dbs:
            if d.name in previous:
                pg.freeze(d.dsn, self.tenant, "frozen")     # idempotent: a re-run keeps the first run's state
                continue
            previous[d.name] = pg.freeze(d.dsn, self.tenant, "frozen")
            self.note("freeze", previous=previous)
        return {"frozen_at": self.progress("freeze").get("frozen_at") or self.ctx.now().isoformat(), "previous": previous,
                "registry_previous": self.progress("freeze").get("registry_previous")}

    def _registry_state(self, state: str, **changes: Any) -> None:
        row = self.ctx.registry.tenant(self.tenant)
        t = self.before.tenant(self.tenant)
        with self.lease.fenced() as c:
            self.ctx.registry.put_tenant(
                c, self.tenant, plan=changes.get("plan", row.plan if row else t.plan_name),
                model=changes.get("model", row.model if row else t.model.value), state=state,
                directory=changes.get("directory", row.directory if row else self.deployed.directory.get(self.tenant, {})),
                stores=changes.get("stores", row.stores if row else registry_entry(self.src_stores)),
                operation=changes.get("operation", self.op_id))

    def phase_export(self) -> dict:
        found = dict(self.plan.sources)
        if "graph" in found and not self.settings.get("graph_export"):
            del found["graph"]
        index = data.export_archive(found, self.settings["export_to"], self.archive, self.tenant, self.op_id,
                                    sorted(self.discard), self.say)
        data.verify_archive_at(found, self.settings["export_to"])
        return {"archive": self.settings["export_to"], "stores": {n: e.get("count") for n, e in index["stores"].items()}}

    def phase_copy(self) -> dict:
        detail: dict[str, Any] = dict(self.progress("copy").get("copied") or {})
        switching = {p.name: m for p, m in self._movers()}
        todo = [p for p in self.plan.pairs if p.name not in detail]
        for p in todo:
            if p in self.other_pairs:
                self.lease.created("copy", {"store": p.name}, "on_abort")
            elif p.name not in switching:
                self.lease.created("copy", {"store": p.name, "database": p.target.name}, "on_abort")

        def one(p: data.Pair) -> dict:
            if p.name in switching:   # only what changed since its verification; the source's summary after the switch
                return {"online": switching[p.name].switch(summarise=False)}
            if p in self.other_pairs:   # after the live passes: what changed since
                return self._last_pass(p)
            report, verified = pg.copy_verified(p.source.dsn, p.target.dsn, self.tenant, list(p.source.tables),
                                                target_plan=self.to_plan, target_model=self.a.model.value,
                                                progress=self.say)
            return {"rows": report.total_rows, "verified": verified.to_json()}

        # Every pair at once: they wait on different servers and databases, and the freeze lasts the longest.
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max(len(todo), 1)) as pool:
            running = [(p, pool.submit(one, p)) for p in todo]
            failed: BaseException | None = None
            for p, f in running:
                try:
                    detail[p.name] = f.result()
                except BaseException as exc:   # the others finish (each is safe to run again), then it is raised
                    failed = failed or exc
            self.note("copy", copied=detail)
            if failed is not None:
                raise failed
        return {"copied": detail}

    def phase_verify(self) -> dict:
        """Every pair was verified where it was copied (the online pairs row by row by their switch, the copy
        pairs in their target transaction, documents and objects by their last pass): the verified summaries,
        journalled for cleanup. An online pair's comes after the switch (see there)."""
        sums = {}
        copied = self.done.get("copy", {}).get("copied", {})
        for p in self.plan.pairs:
            c = copied.get(p.name, {})
            if "online" in c:
                if c["online"].get("source"):
                    sums[p.name] = c["online"]["source"]
                continue
            if c.get("verified"):
                sums[p.name] = c["verified"]
                continue
            try:
                sums[p.name] = p.verify().to_json()
            except Mismatch as exc:
                raise OperationError(f"verification failed: {exc}; the tenant stays frozen on {self.b.model.value}") from None
        return {"sources": sums, "stores": {n: s["count"] for n, s in sums.items()}}

    def phase_switch(self) -> dict:
        self.lease.set_abort_command(None)
        prog = self.progress("switch")
        for d in self.target_dbs:
            pg.set_state(d.dsn, self.tenant, "active")
        for d in self.source_dbs:
            pg.set_state(d.dsn, self.tenant, "readonly")
        entry = dict(self.deployed.directory.get(self.tenant) or {})
        entry.update({"model": self.a.model.value, "plan": self.to_plan, "stores": registry_entry(self.dst_stores)})
        self._registry_state("active", plan=self.to_plan, model=self.a.model.value, stores=registry_entry(self.dst_stores),
                             directory=entry)
        switched_at = prog.get("switched_at") or self.ctx.now().isoformat()
        started = self.done.get("freeze", {}).get("frozen_at")
        seconds = prog.get("freeze_seconds") if "freeze_seconds" in prog else (
            (datetime.fromisoformat(switched_at) - datetime.fromisoformat(started)).total_seconds() if started else None)
        self.note("switch", switched_at=switched_at, freeze_seconds=seconds)
        self.outcome.detail["freeze_seconds"] = seconds
        # The tenant writes at its targets from here: what follows is outside the freeze.
        dropped = [line for _, m in self._movers() for line in m.cleanup()["dropped"]]
        for r in self.lease.pending(("always",)):
            if r.kind == "replication":
                self.lease.cleaned(r.seq)
        sources = {p.name: m.source_summary().to_json() for p, m in self._movers()}
        for p in self.other_pairs:
            if isinstance(p.source, data.FirestoreHandle):
                self._documents_as_verified(p, datetime.fromisoformat(switched_at))
            else:
                self._objects_as_verified(p, datetime.fromisoformat(switched_at))
        return {"switched_at": switched_at, "freeze_seconds": seconds, "sources": sources,
                "rows": {n: s["count"] for n, s in sources.items()}, **({"dropped": dropped} if dropped else {})}

    def _objects_as_verified(self, p: data.Pair, switched_at: datetime) -> None:
        """Likewise for objects: one that reached the read-only source after the last pass (its writer was told
        to write it again) is copied to the target unless the tenant wrote it there since the switch."""
        s, t = p.source, p.target
        verified = (self.done.get("verify", {}).get("sources") or {}).get(p.name)
        if not verified:
            return
        now, repaired, left = obj.repair(s.store, s.prefix, t.store, t.prefix, Summary.from_json(verified), switched_at,
                                         progress=self.say)
        if repaired or left or not now.same_data(Summary.from_json(verified)):
            self.note("switch", **{f"repaired {p.name}": repaired, f"left {p.name}": left,
                                   f"resummarised {p.name}": now.to_json()})

    def _documents_as_verified(self, p: data.Pair, switched_at: datetime) -> None:
        """The documents' source (read-only since the freeze) must still be what the last pass verified; a
        document that reached it after the second pass without being named to the client library is written
        again at the target from the read-only source, unless the tenant wrote it there since the switch."""
        s, t = p.source, p.target
        verified = (self.done.get("verify", {}).get("sources") or {}).get(p.name)
        now = s.summary()
        if verified and not now.same_data(Summary.from_json(verified)):
            self.say(f"  {p.name}: the source differs from what was verified ({'; '.join(Summary.from_json(verified).differences(now))})"
                     "; writing those documents again from the read-only source")
            repaired, left = fs.repair(s.location, t.location, s.tenant, s.collections, switched_at, progress=self.say)
            self.note("switch", **{f"repaired {p.name}": repaired, f"left {p.name}": left,
                                   f"resummarised {p.name}": now.to_json()})
        fs.clear_changes(s.location)

    def phase_publish(self) -> dict:
        up_tenant_platform(self.ctx.engine, self.ctx.env, self.before, self.after, self.tenant, self.allow_destroy,
                           set(), self.say)
        return {}

    def phase_cleanup(self) -> dict | None:
        switched = self.done.get("switch", {}).get("switched_at")
        keep_until = datetime.fromisoformat(switched) + timedelta(days=self.keep_source_days) if switched else self.ctx.now()
        if self.ctx.now() < keep_until:
            raise Waiting(f"source data kept read-only until {keep_until.isoformat()}; run `{self.lease.op.command}` after "
                          "that to remove it")
        verified = {**self.done.get("verify", {}).get("sources", {}), **self.done.get("switch", {}).get("sources", {})}
        for k, v in self.progress("switch").items():
            if k.startswith("resummarised "):
                verified[k[len("resummarised "):]] = v
        prog = self.progress("cleanup")
        deleted = dict(prog.get("deleted") or {})
        for p in self.plan.pairs:
            if p.name in deleted:
                continue
            expect = Summary.from_json(verified[p.name])
            began = bool(prog.get(f"deleting {p.name}"))
            self.note("cleanup", **{f"deleting {p.name}": True})
            self.step(f"deleting {p.name}")
            try:
                n = p.source.delete(expect, self.say)
            except Mismatch as exc:
                if began and isinstance(p.source, data.PgHandle) and p.source.summary().count == 0:
                    n = 0     # a killed run's delete committed (one transaction per database): nothing left
                else:
                    raise OperationError(f"{exc}. Find out what wrote there before removing it") from None
            deleted[p.name] = n
            self.step(f"deleted {p.name}")
            self.note("cleanup", deleted=deleted)
        if self.destroys_stack:
            guarded_destroy(self.ctx.engine, self.stack, self.before, self.covered(), self.say)
        else:
            for d in self.source_dbs:
                pg.unregister(d.dsn, self.tenant)
        return {"deleted": deleted}

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
        for _, m in self._movers():     # replication objects, tracking and the targets' copies
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
            self._registry_state(frozen.get("registry_previous") or "active", operation=None,
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
        p = next((x for x in self.plan.pairs if x.name == ref["store"]), None)
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


def unsaved(plan: data.MovePlan, discard: frozenset[str], archive: Path | None, tenant_id: str, to_plan: str) -> list[str]:
    """Data the target plan cannot hold that is not both exported (--export-to) and explicitly discarded
    (--discard STORE), naming tables and counts; the graph may be discarded alone."""
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
        return [f"plan '{to_plan}' cannot hold all of '{tenant_id}''s data: {'; '.join(problems)}. Export it with "
                f"--export-to DIR and pass {' '.join('--discard ' + p.split(':')[0] for p in problems)}"]
    return []


def archive_problem(archive: Path) -> str | None:
    """Why `archive` cannot take a new export (None when it can): it must be new, or an empty directory, with a
    writable parent; a symlink is followed to what it names."""
    target = archive.resolve()
    try:
        if target.exists():
            if not target.is_dir():
                return f"--export-to {archive}: exists and is not a directory; give a new (or empty) directory"
            if any(target.iterdir()):
                return (f"--export-to {archive}{' (' + str(target) + ')' if target != archive else ''}: is not empty; give "
                        "a new (or empty) directory so no earlier export is overwritten")
            if not os.access(target, os.W_OK | os.X_OK):
                return f"--export-to {archive}: not writable by this user"
            return None
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            return f"--export-to {archive}: cannot be created ({parent} is not a writable directory)"
    except OSError as exc:
        return f"--export-to {archive}: {exc.strerror or exc}"
    return None
