"""A tier move's phases (tenancy/operations/tier_move.py), in order:

    provision -> sync -> freeze -> copy -> verify -> switch -> export -> publish -> cleanup

each journalled by the protocol and written so that running it again after a kill at any instant completes it.
What each does is said in tier_move.py; the documents' and objects' passes (live, then the last one inside the
freeze) and their checks after the switch are here with the phases that run them.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from tenancy import client, db
from tenancy.errors import OperationError
from tenancy.lifecycle import online
from tenancy.lifecycle import tenant_data as data
from tenancy.lifecycle.deploy import up_tenant_platform
from tenancy.lifecycle.destroy import guarded_destroy
from tenancy.operations import stores as where
from tenancy.operations.protocol import Operation, Waiting
from tenancy.stores import Mismatch, Summary
from tenancy.stores import firestore as fs
from tenancy.stores import objects as obj
from tenancy.stores import postgres as pg
from tenancy.stores.layout import registry_entry

MOVING = "moving"        # in the registry's stores entry while a move copies them: clients name what they write
LAST_PASS_OBJECTS = 5    # live passes over the objects stop once a pass copied no more than this


class TierMovePhases(Operation):
    """The phases of `TierMove`, which they are part of: they read what `TierMove.prepare` worked out and what the
    preflight recorded, and what earlier phases journalled (`self.done`, `self.progress`)."""

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
                              self.ctx.registry, ours=self.ours())
        problems = checked.problems + [f"{d.describe()}: the tenant stack {self.stack} exports no connection for it"
                                       for d in missing]
        if problems:
            raise OperationError("the databases the tenant stack created cannot be used: " + "; ".join(problems)
                                 + "; nothing was written into them")
        self.identities.update({n: s.identity for n, s in checked.seen.items() if s.identity})
        self.lease.settings(identities=self.identities)
        self.to_create = []

    def movers(self) -> list[tuple[data.Pair, online.OnlinePostgresMove]]:
        """The PostgreSQL pairs whose chosen method is online, each with its mover (sync, switch and abort use them)."""
        chosen = self.settings.get("methods") or {}
        return [(p, online.mover(p, self.tenant, self.replication, self.say, operation=self.op_id, plan=self.to_plan,
                                model=self.a.model.value, checkpoint=lambda s, n=p.name: self.step(f"{n}: {s}")))
                for p in self.pg_pairs if chosen.get(p.name, {}).get("method") == "online"]

    def phase_sync(self) -> dict:
        if not self.settings.get("methods"):
            self.lease.settings(methods=online.choose(self.pg_pairs, self.method, self.replication, self.say))
        going = self.movers()
        for p, m in going:
            self.lease.created("replication", {"pair": p.name}, "always")
        # From here clients name the documents they write (the move's last pass copies exactly those): every
        # client has seen it once its state bound has passed, before the first pass starts.
        row = self.ctx.registry.tenant(self.tenant)
        stores = row.stores if row else registry_entry(self.src_stores)
        self.registry_state(self._current_state(), operation=self.op_id, stores={**stores, MOVING: self.op_id})
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
        self.registry_state("frozen")
        self._frozen_at = time.monotonic()
        for d in self.source_dbs:
            if d.name in previous:
                pg.freeze(d.dsn, self.tenant, "frozen")     # idempotent: a re-run keeps the first run's state
                continue
            previous[d.name] = pg.freeze(d.dsn, self.tenant, "frozen")
            self.note("freeze", previous=previous)
        return {"frozen_at": self.progress("freeze").get("frozen_at") or self.ctx.now().isoformat(), "previous": previous,
                "registry_previous": self.progress("freeze").get("registry_previous")}

    def registry_state(self, state: str, **changes: Any) -> None:
        """The tenant's registry row put at `state` with `changes`, under the lease's fence (kept as it was otherwise)."""
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
        found = dict(self.pairing.sources)
        if "graph" in found and not self.settings.get("graph_export"):
            del found["graph"]
        index = data.export_archive(found, self.settings["export_to"], self.archive, self.tenant, self.op_id,
                                    sorted(self.discard), self.say)
        data.verify_archive_at(found, self.settings["export_to"])
        return {"archive": self.settings["export_to"], "stores": {n: e.get("count") for n, e in index["stores"].items()}}

    def phase_copy(self) -> dict:
        detail: dict[str, Any] = dict(self.progress("copy").get("copied") or {})
        switching = {p.name: m for p, m in self.movers()}
        todo = [p for p in self.pairing.pairs if p.name not in detail]
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
        for p in self.pairing.pairs:
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
        self.registry_state("active", plan=self.to_plan, model=self.a.model.value, stores=registry_entry(self.dst_stores),
                            directory=entry)
        switched_at = prog.get("switched_at") or self.ctx.now().isoformat()
        started = self.done.get("freeze", {}).get("frozen_at")
        seconds = prog.get("freeze_seconds") if "freeze_seconds" in prog else (
            (datetime.fromisoformat(switched_at) - datetime.fromisoformat(started)).total_seconds() if started else None)
        self.note("switch", switched_at=switched_at, freeze_seconds=seconds)
        self.outcome.detail["freeze_seconds"] = seconds
        # The tenant writes at its targets from here: what follows is outside the freeze.
        dropped = [line for _, m in self.movers() for line in m.cleanup()["dropped"]]
        for r in self.lease.pending(("always",)):
            if r.kind == "replication":
                self.lease.cleaned(r.seq)
        sources = {p.name: m.source_summary().to_json() for p, m in self.movers()}
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
        for p in self.pairing.pairs:
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
