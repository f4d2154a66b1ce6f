"""`tenancy offboard`: every store of the tenant exported and verified, then deleted, its stack destroyed, and
the platform told -- on the operation protocol (tenancy/operations/protocol.py):

    freeze -> export -> verify -> restore-check -> delete -> destroy -> publish

- preflight: every database is the one the registry names and holds the tenant; the archive directory (or
  gs://BUCKET/PREFIX, tenancy/lifecycle/archives.py) is new and usable; every store can be exported (the graph's
  dump Job needs --kubeconfig) or is discarded explicitly; a store this run cannot reach must be discarded.
- freeze: the registry and each source database refuse the tenant's writes once in-flight writers end.
- export: every store not discarded into a new owner-only archive (0700, files 0600), `archive.json` listing
  each with counts, checksums and its manifest's digest, and the environment, plan and model the tenant had (a
  bucket archive is staged locally, uploaded without overwriting anything and listed back).
- verify: each export read back (a bucket archive downloaded again) and compared with its store.
- restore-check (unless --no-restore-check): the archive restored by the code `tenancy restore` runs, into
  scratch stores beside the live ones, and compared with the stores' verified summaries: PostgreSQL rows loaded
  into the tenant's own database inside a transaction that replaces its rows and is rolled back (nothing to
  leave behind, whatever kills it); objects under a scratch prefix `_tenancy/restore-check-<op>/` of the same
  bucket; documents under a scratch root `_tenancy/restore-check-<op>/tenants/<id>` of the same database; each
  scratch copy recorded before it is written and discarded whole afterwards (or by --abort, or by the re-run
  after a kill). The graph's dump is checked against its size and SHA-256: loading it needs a stopped Neo4j, and the
  only one is the tenant's own.
- delete (the point of no return): each store emptied, only while it still matches its verified export (a
  store a killed run already emptied counts as done).
- destroy: the tenant stack, only when every stateful resource is exported or explicitly discarded.
- publish: the platform stack with this tenant marked offboarded (its directory entry goes; others stay).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tenancy import naming, topology
from tenancy.catalog import Catalog, State
from tenancy.errors import OperationError, Refused
from tenancy.lifecycle import archives
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import tenant_data as data
from tenancy.lifecycle.deploy import up_tenant_platform
from tenancy.lifecycle.destroy import guarded_destroy
from tenancy.operations import stores as where
from tenancy.operations.lease import Spec
from tenancy.operations.protocol import Context, Operation
from tenancy.operations.tier_move import project_of
from tenancy.operations.tier_move_preflight import archive_problem
from tenancy.stores import Mismatch, StoreError, Summary
from tenancy.stores import postgres as pg
from tenancy.stores.layout import registry_entry, DataLayout, stores_for

PHASES = ("freeze", "export", "verify", "restore-check", "delete", "destroy", "publish")
PHASE_TEXT = {
    "freeze": "the registry and every database of the tenant refuse its writes once every in-flight writer has ended",
    "export": "every store not discarded into the archive, with counts and checksums",
    "verify": "each export read back and compared with its store",
    "restore-check": "the archive restored into scratch stores and compared with the verified stores, then discarded",
    "delete": "each store emptied, only while it still matches its verified export",
    "destroy": "the tenant stack, only once each stateful store is exported or discarded",
    "publish": "platform stack up with the tenant marked offboarded",
}


class Offboard(Operation):
    kind = "offboard"
    phases = PHASES
    point_of_no_return = "delete"
    phase_text = PHASE_TEXT

    def __init__(self, ctx: Context, catalog: Catalog, tenant: str, *, export_to: str | None, reach: data.Reach,
                 discard: frozenset[str] = frozenset(), yes: bool = False, layout: DataLayout | None = None,
                 command: str | None = None, restore_check: bool = True):
        super().__init__(ctx, tenant)
        self.catalog, self.export_to, self.reach, self.restore_check = catalog, export_to, reach, restore_check
        self.discard, self.yes, self.layout, self.command = frozenset(discard), yes, layout, command
        self.deployed = rec.read(ctx.engine, ctx.env)
        rec.require_active_tenant(self.deployed, catalog, ctx.env, tenant)

    def spec(self) -> Spec:
        cmd = self.command or f"tenancy offboard {self.tenant} --env {self.ctx.env}"
        return Spec(self.kind, self.tenant, {}, cmd, f"{cmd} --abort",
                    settings={"export_to": archives.setting(self.export_to), "discard": sorted(self.discard),
                              "restore_check": self.restore_check})

    def prepare(self) -> None:
        s, ctx = self.settings, self.ctx
        self.archive_at = s.get("export_to")
        self.archive = archives.staging(self.archive_at, self.op_id)    # where this machine writes it
        self.discard = frozenset(s.get("discard", [])) | self.discard
        t = self.deployed.catalog.tenant(self.tenant)
        self.t = t
        self.stores = stores_for(t, ctx.env, project_of(self.deployed), self.layout,
                                 pool_shard=topology.pool_shard_of(ctx.env, self.deployed.catalog, self.tenant))
        resolver = where.Resolver(ctx.registry, self.reach.dsns)
        self.databases = [resolver.database(self.stores, store, "source")
                          for store, tables in self.stores.postgres.items() if tables]
        dsns = {d.store: d.dsn for d in self.databases if d.dsn}
        self.reach = data.Reach(dsns, self.reach.objects_root, self.reach.graph_runner, self.reach.skip)
        self.found = data.handles(self.stores, self.reach)
        self.kept = {n: h for n, h in self.found.items() if n not in self.discard}   # exported, verified, deleted
        self.covered = {s: f"discarded by --discard {s}" for s in self.discard}
        if self.archive is not None:
            self.covered.update({n: f"exported to {archives.describe(self.archive_at, n)} and verified" for n in self.kept})

    def preflight(self, problems: list[str]) -> None:
        tenant, resumed = self.tenant, self.lease.resumed
        if self.archive is None and not self.yes and not resumed:
            problems.append(f"offboarding '{tenant}' destroys its data; give --export-to DIR (or --no-export --yes)")
            return
        reachable = [d for d in self.databases if d.dsn or d.store not in self.discard]
        checked = where.check(reachable, tenant, self.ctx.env, self.ctx.registry,
                              expected=self.settings.get("identities") if resumed else None, holding=not resumed)
        problems.extend(checked.problems)
        missing = [n for n in data.unreachable(self.stores, self.reach) if n not in self.discard]
        if missing and not any("cannot reach" in p for p in problems):
            problems.append(f"this run cannot reach {', '.join(missing)} of '{tenant}', so it cannot export them: give "
                            f"access to them or discard them explicitly ({' '.join('--discard ' + m for m in missing)})")
        if not resumed and self.archive is not None:
            at = self.export_to or self.archive_at
            problem = archives.problem(at) if archives.is_bucket(at) else archive_problem(Path(at))
            if problem:
                problems.append(problem)
        if "graph" in self.kept and self.archive is not None and self.reach.graph_runner is None:
            problems.append(f"'{tenant}' has a Neo4j graph: exporting it runs a neo4j-admin dump Job in namespace "
                            f"{self.stores.namespace}; give --kubeconfig, or --discard graph to let it go")
        if problems:
            return
        for name, h in self.kept.items():
            if h.kind in ("objects", "firestore"):
                try:
                    problems.extend(getattr(h, "problems", lambda: [])())
                    h.summary()
                except Exception as exc:    # noqa: BLE001 -- a store error of any kind is a problem to name
                    problems.append(f"{name}: {exc}")
        if not problems and not resumed:
            identities = {n: s.identity for n, s in checked.seen.items() if s.identity}
            self.lease.settings(identities=identities)
            for d in self.databases:
                if d.name in identities:
                    self.ctx.registry.pin(d.name, d.unit, identities[d.name])

    # ------------------------------------------------------------------------------------------------ phases

    def _dbs(self) -> list[where.Database]:
        return [d for d in self.databases if d.dsn]

    def applies(self, phase: str) -> bool:
        if phase in ("export", "restore-check"):
            return self.archive is not None
        return phase != "destroy" or self.t.has_stack

    def phase_freeze(self) -> dict:
        prog = self.progress("freeze")
        previous = dict(prog.get("previous") or {})
        row = self.ctx.registry.tenant(self.tenant)
        if "registry_previous" not in prog:
            self.note("freeze", registry_previous=row.state if row else self.t.state.value)
        self._registry("frozen", row)
        for d in self._dbs():
            state = pg.freeze(d.dsn, self.tenant, "frozen")
            if d.name not in previous:
                previous[d.name] = state
                self.note("freeze", previous=previous)
        return {"previous": previous, "registry_previous": self.progress("freeze").get("registry_previous")}

    def _registry(self, state: str, row=None, operation: str | None = "", stores: dict | None = None) -> None:
        row = row if row is not None else self.ctx.registry.tenant(self.tenant)
        with self.lease.fenced() as c:
            self.ctx.registry.put_tenant(
                c, self.tenant, plan=row.plan if row else self.t.plan_name, model=row.model if row else self.t.model.value,
                state=state, directory=row.directory if row else self.deployed.directory.get(self.tenant, {}),
                stores=stores if stores is not None else (row.stores if row else registry_entry(self.stores)),
                operation=self.op_id if operation == "" else operation)

    def phase_export(self) -> dict:
        at = self.archive_at
        self.lease.created("archive", {"path": at} if archives.is_bucket(at) else {"path": str(self.archive)}, "on_abort")
        about = {"environment": self.ctx.env, "plan": self.t.plan_name, "model": self.t.model.value}
        index = data.export_archive(self.kept, at, self.archive, self.tenant, self.op_id, sorted(self.discard), self.say,
                                    about)
        return {"stores": {n: e.get("count") for n, e in index["stores"].items()}}

    def phase_verify(self) -> dict:
        if self.archive is None:
            return {"sources": {n: h.summary().to_json() for n, h in self.kept.items() if h.kind != "graph"}}
        try:
            sums = data.verify_archive_at(self.kept, self.archive_at)
        except Mismatch as exc:
            raise OperationError(f"{exc}; the tenant stays frozen and nothing was deleted") from None
        return {"sources": {n: s.to_json() for n, s in sums.items() if self.kept[n].kind != "graph"}}

    def phase_restore_check(self) -> dict:
        if not self.settings.get("restore_check", True):
            self.say("  skipped (--no-restore-check): the archive was read back against the stores, not restored")
            return {"skipped": True}
        verified = self.done.get("verify", {}).get("sources", {})
        label = f"restore-check-{self.op_id}"
        checked: dict[str, Any] = {}
        with archives.fetched(self.archive_at) as local:
            for name, h in self.kept.items():
                folder = local / name
                try:
                    if h.kind == "graph":
                        s = h.archived(folder)
                        checked[name] = {"dump bytes": sum(p.get("bytes", 0) for p in s.parts.values()), "loaded": False}
                        continue
                    self.step(f"restoring {name}")
                    if isinstance(h, data.PgHandle):
                        s = h.rehearse(folder, self.say)
                    else:
                        scratch = h.scratch(label)
                        seq = self.lease.created("scratch", {"store": name, "label": label}, "always")
                        scratch.discard()      # what a killed run left there
                        try:
                            s = scratch.import_export(folder, self.say)
                        except StoreError:
                            scratch.discard()
                            raise
                        scratch.discard()
                        self.lease.cleaned(seq)
                except StoreError as exc:
                    raise OperationError(f"the archive does not restore: {name}: {exc}; the tenant stays frozen and "
                                         "nothing was deleted") from None
                want = Summary.from_json(verified[name])
                if not s.same_data(want):
                    raise OperationError(f"the archive does not restore: {name} restored holds "
                                         f"{'; '.join(want.differences(s))} against the verified store; the tenant "
                                         "stays frozen and nothing was deleted")
                checked[name] = s.count
        self.say(f"  the archive restores: {', '.join(f'{n} {c}' for n, c in checked.items() if isinstance(c, int))}")
        return {"checked": checked}

    def phase_delete(self) -> dict:
        self.lease.set_abort_command(None)
        verified = self.done.get("verify", {}).get("sources", {})
        prog = self.progress("delete")
        deleted = dict(prog.get("deleted") or {})
        for name, h in self.kept.items():
            if name not in verified or name in deleted:
                continue
            began = bool(prog.get(f"deleting {name}"))
            self.note("delete", **{f"deleting {name}": True})
            self.step(f"deleting {name}")
            try:
                n = h.delete(Summary.from_json(verified[name]), self.say)
            except Mismatch as exc:
                if began and isinstance(h, data.PgHandle) and h.summary().count == 0:
                    n = 0     # a killed run's delete committed (one transaction per database)
                else:
                    raise OperationError(f"{exc}: the tenant's data changed since the export was verified") from None
            deleted[name] = n
            self.step(f"deleted {name}")
            self.note("delete", deleted=deleted)
        for d in self._dbs():      # a database of its own goes with the stack too; until then it names no one
            pg.unregister(d.dsn, self.tenant)
        self.outcome.detail["deleted"] = deleted
        return {"deleted": deleted}

    def phase_destroy(self) -> dict:
        stack = naming.stack_name(self.ctx.env, self.tenant)
        guarded_destroy(self.ctx.engine, stack, self.deployed.catalog, self.covered, self.say)
        for d in self.databases:     # destroyed with the stack: a restore's new databases get pinned afresh
            self.ctx.registry.unpin(d.name)
        return {"destroyed": stack}

    def phase_publish(self) -> dict:
        now = rec.read(self.ctx.engine, self.ctx.env)
        gone = rec.for_tenant(now, self.catalog, self.tenant, state=State.OFFBOARDED.value)
        up_tenant_platform(self.ctx.engine, self.ctx.env, now.catalog, gone, self.tenant, False,
                           identity_urns(self.ctx.env, now.catalog, self.tenant), self.say)
        self._registry("offboarded", operation=None, stores={})
        return {}

    def finished(self) -> None:
        o = self.outcome
        exported = self.done.get("export", {}).get("stores")
        if exported is not None and self.archive is not None:
            o.detail["export"] = {"dir": self.archive_at, "stores": exported}
            checked = self.done.get("restore-check", {})
            o.detail["restore_check"] = "skipped" if checked.get("skipped") else checked.get("checked")
        if self.done.get("destroy", {}).get("destroyed"):
            o.detail["destroyed"] = self.done["destroy"]["destroyed"]
        o.detail.setdefault("deleted", self.done.get("delete", {}).get("deleted", {}))
        self.say(f"tenant '{self.tenant}' offboarded; set `state: offboarded` for it in {self.catalog.path}")

    def undo(self) -> None:
        self.say(f"aborting {self.op_id}: '{self.tenant}' stays, its data where it was")
        for r in self.lease.pending(("on_abort", "always")):
            if r.kind == "scratch" and r.ref["store"] in self.kept:
                self.kept[r.ref["store"]].scratch(r.ref["label"]).discard()
                self.say(f"  removed the scratch copy of {r.ref['store']}")
            elif r.kind == "archive" and archives.is_bucket(r.ref["path"]):
                archives.remove_unfinished(r.ref["path"], self.op_id, self.say)
            elif r.kind == "archive":
                path = Path(r.ref["path"])
                index = path / data.ARCHIVE_INDEX
                if path.exists() and (not index.exists() or f'"{self.op_id}"' in index.read_text()):
                    shutil.rmtree(path)
                    self.say(f"  removed this operation's unfinished archive {path}")
            self.lease.cleaned(r.seq)
        frozen = {**self.progress("freeze"), **self.done.get("freeze", {})}
        for d in self._dbs():
            if d.name in (frozen.get("previous") or {}):
                pg.set_state(d.dsn, self.tenant, frozen["previous"][d.name])
        row = self.ctx.registry.tenant(self.tenant)
        if row is not None and row.operation == self.op_id:
            self._registry(frozen.get("registry_previous") or "active", row, operation=None)


def identity_urns(env: str, record: Catalog, tenant_id: str) -> set[str]:
    """The offboarded tenant's Identity Platform tenant: its removal from its stack (the platform stack, or its
    identity shard) is expected."""
    stack = topology.identity_stack(env, record, tenant_id)
    return {f"urn:pulumi:{stack}::tenancy::tenancy:gcp:IdentityPlatform$gcp:identityplatform/tenant:Tenant::identity-{tenant_id}"}


def offboard(ctx: Context, catalog: Catalog, tenant: str, *, abort: bool = False, take_over: bool = False,
             **kw: Any):
    return Offboard(ctx, catalog, tenant, **kw).run(abort=abort, take_over=take_over)


__all__ = ["Offboard", "offboard", "PHASES", "Refused"]
