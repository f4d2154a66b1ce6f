"""`tenancy restore TENANT --from ARCHIVE`: an offboarded tenant brought back from its offboarding archive into fresh
stores, on the operation protocol (tenancy/operations/protocol.py):

    provision -> import -> graph -> verify -> activate -> publish

How the tenant comes back: under the same id, on the plan it was offboarded on (the deployed record keeps an
offboarded tenant's entry; the archive records the plan too, and the two must agree), in the stores that plan
gives it now -- a pooled tenant into its pool shard's database, bucket prefix and Firestore root, a tenant with
stores of its own into a freshly deployed tenant stack. Not under another id: every archived row carries the
tenant's id and every checksum covers it, so a renamed copy could not be verified against the archive; a tenant
that should start afresh is onboarded under a new id instead.

- preflight: the tenant is offboarded in the deployed record (or this is its unfinished restore); the archive is
  this tenant's (and this environment's, and this plan's), and every file in it matches its manifest and every
  manifest the archive's index (tenancy/lifecycle/tenant_data/exports.py `read_archive`); every archived store
  has a place on the plan; every target database is the one the registry names, holds no other tenant of a unit
  of its own and nothing of this one; the bucket prefix and the Firestore root hold nothing; the graph's dump has
  a load Job to run (--kubeconfig) or is left out with --skip graph; a tenant stack to create is previewed.
- provision: the tenant stack up (a tenant with its own stores); on each target database the tenancy SQL, the
  database claimed for its store and the tenant registered `frozen`; the registry row `frozen` with its new
  stores. Each recorded before it is made, so abort removes exactly it.
- import: each store of the archive into its target, journalled store by store: a database's rows in one
  transaction (a kill leaves nothing; a re-run after its commit finds them and writes nothing), objects and
  documents skipping what is already there as archived, never overwriting anything else.
- graph: the dump uploaded to the tenant's bucket (checked against the archived MD5), loaded by the neo4j-admin
  load Job (through --kubeconfig, like the dump), then removed from the bucket.
- verify: each store's summary now compared with the archive's counts and checksums.
- activate (the point of no return: the tenant writes again): the databases accept its writes, the registry
  marks it active.
- publish: the platform stack with the tenant active again (its directory entry, routes and identity tenant) --
  the one command that changes an offboarded tenant's state in the deployed record; the registry's row takes
  the published directory entry.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from tenancy import db, naming, topology
from tenancy.catalog import Catalog, State
from tenancy.engine import EngineError
from tenancy.errors import OperationError, Refused
from tenancy.lifecycle import archives
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import tenant_data as data
from tenancy.lifecycle.deploy import unexpected_destruction, up_tenant_platform
from tenancy.lifecycle.destroy import STORES, guarded_destroy
from tenancy.operations import stores as where
from tenancy.operations.lease import Spec
from tenancy.operations.protocol import Context, Operation
from tenancy.operations.sync import stack_databases
from tenancy.operations.tier_move import project_of
from tenancy.stores import Mismatch, StoreError, file_sha256
from tenancy.stores import postgres as pg
from tenancy.stores.layout import DataLayout, registry_entry, stores_for

PHASES = ("provision", "import", "graph", "verify", "activate", "publish")
PHASE_TEXT = {
    "provision": "the tenant stack (a tenant with stores of its own); the tenant registered frozen in each target "
                 "database and in the registry",
    "import": "each archived store into its target: rows, objects, documents",
    "graph": "the graph's dump loaded by the neo4j-admin load Job",
    "verify": "each restored store compared with the archive's counts and checksums",
    "activate": "the databases accept the tenant's writes; the registry marks it active",
    "publish": "platform stack up with the tenant active again",
}


class Restore(Operation):
    kind = "restore"
    phases = PHASES
    point_of_no_return = "activate"
    phase_text = PHASE_TEXT

    def __init__(self, ctx: Context, catalog: Catalog, tenant: str, *, source: str | None, reach: data.Reach,
                 layout: DataLayout | None = None, command: str | None = None):
        super().__init__(ctx, tenant)
        self.catalog, self.source, self.reach, self.layout, self.command = catalog, source, reach, layout, command
        self.given = reach      # as given: --db overrides, and the graph's Job runner
        self.deployed = rec.read(ctx.engine, ctx.env)
        rec.require_offboarded_tenant(self.deployed, ctx.env, tenant)
        self._fetched: Path | None = None

    def spec(self) -> Spec:
        at = archives.setting(self.source)
        cmd = self.command or f"tenancy restore {self.tenant} --from {at} --env {self.ctx.env}"
        return Spec(self.kind, self.tenant, {"from": at} if at else {}, cmd, f"{cmd} --abort",
                    settings={"from": at, "skip": sorted(self.reach.skip)})

    def run(self, *, abort: bool = False, take_over: bool = False):
        self.aborting = abort
        try:
            return super().run(abort=abort, take_over=take_over)
        finally:
            if self._fetched is not None:
                shutil.rmtree(self._fetched, ignore_errors=True)

    # --------------------------------------------------------------------------------------------- prepare

    def prepare(self) -> None:
        ctx, tenant, s = self.ctx, self.tenant, self.settings
        self.source = s.get("from") or archives.setting(self.source)
        skip = frozenset(s.get("skip") or ()) | self.reach.skip
        self.before = rec.for_tenant(self.deployed, self.catalog, tenant, state=State.OFFBOARDED.value)
        self.after = rec.for_tenant(self.deployed, self.catalog, tenant, state=State.ACTIVE.value)
        self.t = self.after.tenant(tenant)
        self.stack = naming.stack_name(ctx.env, tenant)
        self.own_stack = self.t.has_stack
        self.stores = stores_for(self.t, ctx.env, project_of(self.deployed), self.layout,
                                 pool_shard=topology.pool_shard_of(ctx.env, self.after, tenant))
        self._resolve(skip)
        self.archive: Path | None = None
        if self.source and not self.aborting:
            if archives.is_bucket(self.source):
                self._fetched = Path(tempfile.mkdtemp(prefix="tenancy-restore-"))
                self.archive = archives.download(self.source, self._fetched / "archive")
            else:
                self.archive = Path(self.source)

    def _resolve(self, skip: frozenset[str]) -> None:
        """The target databases' connections (overrides, else the registry's records) and every target store."""
        resolver = where.Resolver(self.ctx.registry, self.given.dsns)
        self.databases = [resolver.database(self.stores, store, "target")
                          for store, tables in self.stores.postgres.items() if tables]
        self.reach = data.Reach({d.store: d.dsn for d in self.databases if d.dsn}, self.given.objects_root,
                                self.given.graph_runner, skip)
        self.targets = data.handles(self.stores, self.reach)

    def _ours(self) -> dict[str, str]:
        return {r.ref["database"]: "frozen" for r in self.ctx.registry.cleanup_records(self.op_id)
                if r.kind == "registration"}

    def _stack_deployed(self) -> bool:
        try:
            return bool(self.ctx.engine.outputs(self.stack))
        except EngineError:
            return False

    # ------------------------------------------------------------------------------------------- preflight

    def preflight(self, problems: list[str]) -> None:
        tenant, env, resumed = self.tenant, self.ctx.env, self.lease.resumed
        if self.source is None:
            problems.append(f"give the archive to restore '{tenant}' from: --from DIR or --from gs://BUCKET/PREFIX")
            return
        state = self.deployed.catalog.tenant(tenant).state
        if not resumed and state is not State.OFFBOARDED:
            problems.append(f"tenant '{tenant}' is {state.value} in '{env}', not offboarded: a restore brings back an "
                            "offboarded tenant only (its stores would be overwritten otherwise)")
            return
        self.index, self.archived, bad = data.read_archive(self.archive, tenant, env)
        if bad:
            problems.append(f"the archive {self.source} is not one this restore can trust: " + "; ".join(bad))
            return
        digest = file_sha256(self.archive / data.ARCHIVE_INDEX)
        if resumed and self.settings.get("archive_sha256") not in (None, digest):
            problems.append(f"the archive {self.source} changed since this restore started (its {data.ARCHIVE_INDEX} "
                            "differs); give the same archive")
        plan = self.index.get("plan")
        if plan is not None and plan != self.t.plan_name:
            problems.append(f"the archive {self.source} is of '{tenant}' on plan '{plan}', but '{tenant}' was offboarded "
                            f"on plan '{self.t.plan_name}': not the archive of its offboarding")
        placeless = sorted(n for n in self.archived if n not in self.stores.names)
        if placeless:
            problems.append(f"the archive holds {', '.join(placeless)}, which plan '{self.t.plan_name}' has no place for")
        for n in self.index.get("discarded") or []:
            self.say(f"  {n} of '{tenant}' was discarded at its offboarding (not in the archive): it comes back empty")
        skipped = sorted(n for n in self.archived if data.kind_of(n) in self.reach.skip)
        for n in skipped:
            self.say(f"  not restored by this run (--skip {data.kind_of(n)}): {n} of '{tenant}' stays in the archive only")
        self.restoring = {n: self.targets[n] for n in self.archived if n in self.targets and n != "graph"}
        self.graph = self.targets.get("graph") if "graph" in self.archived and "graph" not in skipped else None
        if self.graph is not None and self.reach.graph_runner is None:
            problems.append(f"the archive holds '{tenant}''s Neo4j graph: loading it runs a neo4j-admin load Job in "
                            f"namespace {self.stores.namespace}; give --kubeconfig, or --skip graph to leave it in the "
                            "archive")
        fresh_stack = self.own_stack and not resumed and not self._stack_deployed()
        # Databases the new tenant stack creates are not there to check yet: provisioning records them from the
        # stack's outputs and checks them before anything is written into them (as an upgrade does). Those of a
        # stack destroyed at the offboarding are gone: pins of them say nothing of the new ones.
        self.to_create = [d for d in self.databases if d.dsn is None and fresh_stack]
        checked = where.check([d for d in self.databases if d not in self.to_create], tenant, env,
                              None if fresh_stack else self.ctx.registry, ours=self._ours(),
                              expected=self.settings.get("identities") if resumed else None, holding=False)
        problems.extend(checked.problems)
        if problems:
            return
        for name, h in self.restoring.items():
            if isinstance(h, data.PgHandle) or name not in self.targets:
                continue    # checked above: a database holds a tenant's rows only while it registers the tenant
            try:
                problems.extend(getattr(h, "problems", lambda: [])())
                there = h.summary()
            except StoreError as exc:
                problems.append(f"{name}: {exc}")
                continue
            if there.count and not resumed:
                problems.append(f"{name}: {h.describe()} already holds {there.count} items of '{tenant}': not an empty "
                                "store; remove them or find out where they came from")
        if fresh_stack:
            what = unexpected_destruction(self.ctx.engine.preview(self.stack, self.after), set())
            if what:
                problems.append(f"the tenant stack {self.stack} would {what}: review it")
        if not problems and not resumed:
            identities = {n: s.identity for n, s in checked.seen.items() if s.identity}
            self.lease.settings(identities=identities, archive_sha256=digest)

    def _db(self, store: str) -> where.Database:
        return next(d for d in self.databases if d.store == store)

    # ---------------------------------------------------------------------------------------------- phases

    def applies(self, phase: str) -> bool:
        return phase != "graph" or self.graph is not None

    def phase_provision(self) -> dict:
        row = self.ctx.registry.tenant(self.tenant)
        if "registry_previous" not in self.progress("provision"):
            self.note("provision", registry_previous={"state": row.state, "stores": row.stores, "directory": row.directory}
                      if row else None)
        if self.own_stack:
            self.lease.created("stack", {"stack": self.stack}, "on_abort")
            self.ctx.engine.up(self.stack, self.after)
            self.say(f"  {self.stack}: up")
            for name, (unit, connection) in stack_databases(self.ctx.engine.outputs(self.stack)).items():
                self.ctx.registry.set_database(name, unit, connection, source="deploy")
            if getattr(self, "to_create", None):
                self._check_created()
        identities = dict(self.settings.get("identities") or {})
        for d in self.databases:
            if d.dsn is None:
                continue
            self.lease.created("registration", {"database": d.name}, "on_abort")
            db.apply(d.dsn)
            where.claim(d.dsn, self.ctx.env, d.name)
            pg.set_state(d.dsn, self.tenant, "frozen", plan=self.t.plan_name, model=self.t.model.value)
            seen = where.inspect(d.dsn).identity
            if seen and self.own_stack:
                self.ctx.registry.unpin(d.name)
            if seen:
                self.ctx.registry.pin(d.name, d.unit, seen)
                identities[d.name] = seen
            self.step(f"registered {d.name}")
        self.lease.settings(identities=identities)
        self._registry("frozen", stores=registry_entry(self.stores))
        return {}

    def _check_created(self) -> None:
        """The databases the new tenant stack created, reached through the registry's new records and checked as the
        others were in the preflight, before anything is written into them."""
        self._resolve(self.reach.skip)
        self.restoring = {n: self.targets[n] for n in self.archived if n in self.targets and n != "graph"}
        missing = [d for d in self.databases if d.dsn is None]
        for d in self.databases:
            self.ctx.registry.unpin(d.name)
        checked = where.check([d for d in self.databases if d.dsn], self.tenant, self.ctx.env, self.ctx.registry,
                              ours=self._ours(), holding=False)
        problems = checked.problems + [f"{d.describe()}: the tenant stack {self.stack} exports no connection for it"
                                       for d in missing]
        if problems:
            raise OperationError("the databases the tenant stack created cannot be used: " + "; ".join(problems)
                                 + "; nothing was written into them")
        self.to_create = []

    def _registry(self, state: str, *, stores: dict, directory: dict | None = None, operation: str | None = "") -> None:
        row = self.ctx.registry.tenant(self.tenant)
        with self.lease.fenced() as c:
            self.ctx.registry.put_tenant(
                c, self.tenant, plan=self.t.plan_name, model=self.t.model.value, state=state,
                directory=directory if directory is not None else (row.directory if row else {}), stores=stores,
                operation=self.op_id if operation == "" else operation)

    def phase_import(self) -> dict:
        imported = dict(self.progress("import").get("imported") or {})
        for name, h in self.restoring.items():
            if name in imported:
                continue
            self.lease.created("import", {"store": name}, "on_abort")
            self.step(f"importing {name}")
            try:
                s = h.import_export(self.archive / name, self.say)
            except Mismatch as exc:
                raise OperationError(f"{name}: {exc}; the tenant stays frozen") from None
            imported[name] = s.count
            self.step(f"imported {name}")
            self.note("import", imported=imported)
        return {"imported": imported}

    def phase_graph(self) -> dict:
        dump = {"bucket": self.graph.bucket, "object": self.graph._object()}
        seq = self.lease.created("dump", dump, "always")
        self.step("loading graph")
        s = self.graph.import_export(self.archive / "graph", self.say)
        self.lease.cleaned(seq)
        return {"graph": s.count, "md5": next(iter(s.parts.values()), {}).get("checksum")}

    def phase_verify(self) -> dict:
        verified = {}
        for name, h in self.restoring.items():
            now, want = h.summary(), self.archived[name]
            if not now.same_data(want):
                raise OperationError(f"verification failed: {name} ({h.describe()}) holds {'; '.join(want.differences(now))} "
                                     "against the archive; the tenant stays frozen")
            verified[name] = now.to_json()
        return {"verified": verified, "stores": {n: v["count"] for n, v in verified.items()}}

    def phase_activate(self) -> dict:
        self.lease.set_abort_command(None)
        for d in self.databases:
            if d.dsn:
                pg.set_state(d.dsn, self.tenant, "active")
        self._registry("active", stores=registry_entry(self.stores))
        return {}

    def phase_publish(self) -> dict:
        up_tenant_platform(self.ctx.engine, self.ctx.env, self.before, self.after, self.tenant, False, set(),
                           self.say)
        now = rec.read(self.ctx.engine, self.ctx.env)
        self._registry("active", stores=registry_entry(self.stores), directory=now.directory.get(self.tenant, {}))
        return {}

    def finished(self) -> None:
        o = self.outcome
        o.detail["archive"] = self.source
        o.detail["restored"] = {**self.done.get("import", {}).get("imported", {}),
                                **({"graph": self.done["graph"]["graph"]} if self.done.get("graph", {}).get("graph") else {})}
        in_file = next((t for t in self.catalog.tenants if t.id == self.tenant), None)
        if in_file is None or in_file.state is not State.ACTIVE:
            o.detail["catalog_line"] = (f"tenant '{self.tenant}' restored; set `state: active` for it in "
                                        f"{self.catalog.path}" + ("" if in_file else " (add its entry back)"))
            self.say(o.detail["catalog_line"])

    # ----------------------------------------------------------------------------------------------- abort

    def undo(self) -> None:
        say = self.say
        say(f"aborting {self.op_id}: '{self.tenant}' stays offboarded; what this restore wrote is removed, the archive "
            "is untouched")
        for r in self.lease.pending(("on_abort", "always")):
            if r.kind == "import" and r.ref["store"] in self.targets:
                h = self.targets[r.ref["store"]]
                if isinstance(h, data.PgHandle) and not self._same_database(self._db(h.name)):
                    self.lease.cleaned(r.seq)
                    continue
                try:
                    h.clear(say)
                except StoreError as exc:
                    raise OperationError(f"could not remove the restored {h.describe()}: {exc}; run the abort again") from None
            elif r.kind == "dump" and "graph" in self.targets:
                self.targets["graph"].store.delete(r.ref["object"])
            elif r.kind == "registration":
                d = next((x for x in self.databases if x.name == r.ref["database"]), None)
                if d is not None and d.dsn and self._same_database(d):
                    pg.set_state(d.dsn, self.tenant, "frozen")
                    if not pg.unregister(d.dsn, self.tenant):
                        say(f"  {d.name}: the tenant still has rows there; left registered (frozen)")
            elif r.kind == "stack":
                guarded_destroy(self.ctx.engine, self.stack, self.after,
                                {s: f"aborted restore {self.op_id}: the archive holds the data of record" for s in STORES},
                                say)
            self.lease.cleaned(r.seq)
        previous = {**self.progress("provision"), **self.done.get("provision", {})}.get("registry_previous")
        row = self.ctx.registry.tenant(self.tenant)
        if row is not None and row.operation == self.op_id:
            with self.lease.fenced() as c:
                p = previous or {"state": "offboarded", "stores": {}, "directory": {}}
                self.ctx.registry.put_tenant(c, self.tenant, plan=row.plan, model=row.model, state=p["state"],
                                             directory=p["directory"], stores=p["stores"], operation=None)

    def _same_database(self, d: where.Database) -> bool:
        """Abort touches a database only while it is still the one this restore registered the tenant in."""
        recorded = (self.settings.get("identities") or {}).get(d.name)
        seen = where.inspect(d.dsn).identity if d.dsn else None
        if seen is None or (recorded and tuple(recorded) != seen):
            self.say(f"  {d.name}: not touched: it is not the database this restore recorded")
            return False
        return True


def restore(ctx: Context, catalog: Catalog, tenant: str, *, abort: bool = False, take_over: bool = False, **kw: Any):
    """Run (or resume, or abort) the restore of `tenant`; the Outcome."""
    return Restore(ctx, catalog, tenant, **kw).run(abort=abort, take_over=take_over)


__all__ = ["Restore", "restore", "PHASES", "Refused"]
