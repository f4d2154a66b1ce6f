"""A tier move's preflight (tenancy/operations/tier_move.py): every input the whole move needs, checked before its
first change, every problem named (what is checked: tier_move.py's docstring). `covered` says how each source
store is saved, for the destroy guard here and in cleanup.
"""

from __future__ import annotations

import os
from pathlib import Path

from tenancy.catalog import Model
from tenancy.errors import Refused
from tenancy.lifecycle import archives, online
from tenancy.lifecycle import tenant_data as data
from tenancy.lifecycle.deploy import unexpected_destruction
from tenancy.lifecycle.destroy import uncovered
from tenancy.operations import stores as where
from tenancy.operations.protocol import NothingToDo, Operation
from tenancy.stores import StoreError


class TierMovePreflight(Operation):
    """The preflight of `TierMove`, which it is part of: it reads what `TierMove.prepare` worked out (both sides'
    stores and databases, the paired stores, the archive) and records what the phases start from (the databases'
    identities, each pair's method, whether the graph is exported)."""

    def _preflight_kind(self, problems: list[str]) -> None:
        if not self.lease.resumed and self.from_plan == self.to_plan:
            raise NothingToDo(f"tenant '{self.tenant}' is already on plan '{self.to_plan}'; nothing to do")
        if (self.b.model is Model.POOLED) == (self.a.model is Model.POOLED):
            problems.append(f"moving '{self.tenant}' from {self.b.model.value} to {self.a.model.value} is not supported: "
                            "tier moves go between pooled and namespace/dedicated (the tenant's data must live in two "
                            "places at once)")

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
                              self.ctx.registry, ours=self.ours(), expected=expected, holding=not resumed)
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
        if [u for u in self.pairing.unreached if u not in created] and not any("cannot reach" in p for p in problems):
            problems.append(f"'{tenant}''s rows go to {', '.join(self.pairing.unreached)} on plan '{to_plan}', which "
                            f"this run cannot reach: give {' '.join('--db ' + n + '=DSN' for n in self.pairing.unreached)}")
        if checked.problems or [u for u in self.pairing.unreached if u not in created]:
            return      # the rest reads the stores: only once every database is the right one
        for n in missing:
            self.say(f"  not carried by this run: {n} of '{tenant}' stays where it is")
        if not resumed:
            self._check_archive(problems)
        self._check_graph(problems)
        self._check_other_stores(problems, resumed)
        if self.destroys_stack and not resumed:
            self.empty_left = {n for n, h in self.pairing.left.items() if h.kind == "postgres" and not h.summary().count}
            named = unsaved(self.pairing, self.discard, self.archive, tenant, self.a.plan_name)
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
        g = self.pairing.left.get("graph")
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
        for name, h in self.pairing.left.items():
            if h.kind in ("objects", "firestore"):
                try:
                    h.summary()
                except StoreError as exc:
                    problems.append(f"{name}: {exc}")

    def covered(self) -> dict[str, str]:
        """How each source store is saved once this move is through (for the destroy guard)."""
        out = {}
        for p in self.pairing.pairs:
            for n in p.covers:
                out[n] = f"moved and verified ({self.op_id})"
        for n in self.src_stores.names:
            if n in getattr(self, "empty_left", ()):
                out[n] = "empty: nothing of the tenant's there"
            elif n in self.pairing.left and n not in self.discard:
                out.pop(n, None)
            elif n in self.discard and n not in out:
                saved = f"exported to {archives.describe(self.settings.get('export_to'), n)} and " if self.archive else ""
                out[n] = f"{saved}discarded by --discard {n}"
        return out


def unsaved(pairing: data.StorePairing, discard: frozenset[str], archive: Path | None, tenant_id: str,
            to_plan: str) -> list[str]:
    """Data the target plan cannot hold that is not both exported (--export-to) and explicitly discarded
    (--discard STORE), naming tables and counts; the graph may be discarded alone."""
    problems = []
    for name, h in pairing.left.items():
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
