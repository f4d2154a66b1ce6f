"""`tenancy data move`: one tenant's rows from one PostgreSQL database to another, verified, on the operation
protocol (the tenant's lease, one journal in the registry):

    freeze -> copy -> switch -> cleanup

- preflight: both databases answer and carry the tenancy SQL; they are two databases (not one spelled twice);
  the source holds the tenant; the tables exist on both sides; a target already holding other rows of the
  tenant is refused unless --replace.
- freeze (with --delete-source): the source refuses the tenant's writes once in-flight writers have ended.
- copy: rows streamed and verified in one target transaction (a kill leaves the target as it was).
- switch: the target takes the tenant's final state (--state, else the source's before the move).
- cleanup (with --delete-source): the source's rows deleted only while they still match what was verified
  (a source a killed run already emptied counts as done), then its registration.

A re-run after success finds nothing unfinished and compares the two sides: the same rows -> "already moved".
"""

from __future__ import annotations

from typing import Any

from tenancy.db import describe_dsn
from tenancy.errors import OperationError
from tenancy.operations import stores as where
from tenancy.operations.lease import Spec
from tenancy.operations.protocol import Context, NothingToDo, Operation, Outcome
from tenancy.stores import Mismatch, Summary
from tenancy.stores import postgres as pg

PHASE_TEXT = {
    "freeze": "the source refuses the tenant's writes once every in-flight writer has ended",
    "copy": "rows streamed to the target and verified there, in one target transaction",
    "switch": "the target takes the tenant's final state",
    "cleanup": "the source's rows deleted while they still match what was verified",
}


class DataMove(Operation):
    kind = "data-move"
    phases = ("freeze", "copy", "switch", "cleanup")
    point_of_no_return = "switch"
    phase_text = PHASE_TEXT

    def __init__(self, ctx: Context, tenant: str, source: str, target: str, *, delete_source: bool = False,
                 replace: bool = False, tables: list[str] | None = None, target_state: str | None = None,
                 command: str | None = None):
        super().__init__(ctx, tenant)
        self.source, self.target, self.delete_source, self.replace = source, target, delete_source, replace
        self.tables, self.target_state, self.command = tables, target_state, command
        self.src_seen, self.dst_seen = where.inspect(source), where.inspect(target)

    def _dbs(self) -> list[where.Database]:
        return [where.Database("source", "source", "any", "source", self.source),
                where.Database("target", "target", "any", "target", self.target)]

    def spec(self) -> Spec:
        cmd = self.command or f"tenancy data move {self.tenant} --source SOURCE --target TARGET"
        ident = {k: list(v.identity) if v.identity else None for k, v in (("source", self.src_seen), ("target", self.dst_seen))}
        return Spec(self.kind, self.tenant, {**ident, "tables": sorted(self.tables or [])}, cmd, f"{cmd} --abort",
                    settings={"delete_source": self.delete_source, "target_state": self.target_state})

    def prepare(self) -> None:
        s = self.settings
        self.delete_source = bool(s.get("delete_source", self.delete_source))
        self.target_state = s.get("target_state", self.target_state)

    def preflight(self, problems: list[str]) -> None:
        resumed = self.lease.resumed
        for role, seen, dsn in (("source", self.src_seen, self.source), ("target", self.dst_seen, self.target)):
            if seen.error:
                problems.append(f"{role} {describe_dsn(dsn)}: {seen.error}")
            elif not seen.schema:
                problems.append(f"{role} {describe_dsn(dsn)}: has no tenancy SQL: run `tenancy db apply DSN` first")
        if problems:
            return
        if self.src_seen.identity == self.dst_seen.identity:
            problems.append(f"source {describe_dsn(self.source)} and target {describe_dsn(self.target)} are the same "
                            f"database (server {self.src_seen.identity[0]}, database {self.src_seen.identity[2]})")
            return
        if self.tenant not in self.src_seen.registered and not resumed:
            spec = self.spec()
            done = [op for op in self.ctx.registry.history(self.tenant) if op.kind == self.kind and op.status == "done"
                    and op.args == spec.args]
            if done:
                raise NothingToDo(f"the move of '{self.tenant}' from {describe_dsn(self.source)} to "
                                          f"{describe_dsn(self.target)} already completed ({done[-1].id}, "
                                          f"{done[-1].finished_at:%Y-%m-%d %H:%M:%S %Z}); nothing to do")
            problems.append(f"tenant '{self.tenant}' is not registered in the source {describe_dsn(self.source)}'s "
                            "tenancy.tenants: is this the database that holds its rows?")
            return
        try:
            self.picked = pg.summary(self.source, self.tenant, self.tables) if not resumed else None
            there = pg.summary(self.target, self.tenant, self.tables)
        except pg.DataError as exc:
            problems.append(str(exc))
            return
        if resumed or not there.count:
            return
        if self.picked.same_data(there):
            raise NothingToDo(f"the target {describe_dsn(self.target)} already holds the same {there.count} rows of "
                              f"'{self.tenant}' as the source; nothing to do", total_rows=there.count,
                              rows={k: v["count"] for k, v in there.parts.items()})
        if not self.picked.count:
            problems.append(f"nothing to move: '{self.tenant}' has no rows at the source but {there.count} at the target "
                            "-- the move may already have happened")
        elif not self.replace:
            problems.append(f"the target {describe_dsn(self.target)} already holds {there.count} different rows of "
                            f"'{self.tenant}' (source vs target: {'; '.join(self.picked.differences(there))}); pass "
                            "--replace to replace them with the source's rows")

    def applies(self, phase: str) -> bool:
        return phase != "cleanup" or self.delete_source

    def phase_freeze(self) -> dict:
        prog = self.progress("freeze")
        if "previous" in prog:
            previous = prog["previous"]
            if self.delete_source:
                pg.freeze(self.source, self.tenant, "frozen")
        else:
            previous = (pg.freeze(self.source, self.tenant, "frozen") if self.delete_source
                        else self.src_seen.registered.get(self.tenant))
            self.note("freeze", previous=previous)
        return {"previous": previous}

    def phase_copy(self) -> dict:
        self.lease.created("copy", {"target": list(self.dst_seen.identity)}, "on_abort")
        report, verified = pg.copy_verified(self.source, self.target, self.tenant, self.tables, target_state="frozen",
                                            progress=self.say)
        return {"rows": report.rows, "tables": report.tables, "replaced_rows": report.replaced_rows,
                "verified": verified.to_json(), "seconds": report.copy_seconds + report.verify_seconds}

    def phase_switch(self) -> dict:
        self.lease.set_abort_command(None)
        final = self.target_state or self.done.get("freeze", {}).get("previous") or "active"
        pg.set_state(self.target, self.tenant, final)
        if not self.delete_source:
            pg.set_state(self.source, self.tenant, self.done.get("freeze", {}).get("previous") or "active")
        return {"state": final}

    def phase_cleanup(self) -> dict:
        expect = Summary.from_json(self.done["copy"]["verified"])
        began = bool(self.progress("cleanup").get("deleting"))
        self.note("cleanup", deleting=True)
        self.step("deleting")
        try:
            n = pg.delete(self.source, self.tenant, expect=expect, tables=self.tables)
        except Mismatch as exc:
            if began and pg.summary(self.source, self.tenant, self.tables).count == 0:
                n = 0    # a killed run's delete committed
            else:
                raise OperationError(f"{exc}; the tenant stays frozen at the source. Find out what wrote there") from None
        pg.unregister(self.source, self.tenant)
        return {"deleted": n}

    def finished(self) -> None:
        copied = self.done.get("copy", {})
        self.outcome.detail.update({"rows": copied.get("rows") or {}, "total_rows": sum((copied.get("rows") or {}).values()),
                                    "tables": copied.get("tables") or [], "replaced_rows": copied.get("replaced_rows", 0),
                                    "seconds": copied.get("seconds", 0.0), "deleted_source": self.delete_source})

    def undo(self) -> None:
        for r in self.lease.pending(("on_abort",)):
            if r.kind == "copy" and where.inspect(self.target).identity == tuple(r.ref["target"]):
                pg.delete(self.target, self.tenant, tables=self.tables)
                pg.unregister(self.target, self.tenant)
            self.lease.cleaned(r.seq)
        previous = {**self.progress("freeze"), **self.done.get("freeze", {})}.get("previous")
        if previous and self.delete_source:
            pg.set_state(self.source, self.tenant, previous)


def move(ctx: Context, tenant: str, source: str, target: str, *, abort: bool = False, take_over: bool = False,
         **kw: Any) -> Outcome:
    return DataMove(ctx, tenant, source, target, **kw).run(abort=abort, take_over=take_over)
