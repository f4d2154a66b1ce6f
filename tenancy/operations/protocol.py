"""The one protocol every operation on tenant data follows (tier moves, offboard, restore, place, data move,
suspend, resume):

    lease      the tenant's lease in the registry (tenancy/operations/lease.py): a second operation on the
               tenant is refused; a killed run's operation is resumed by running the same command again
    preflight  everything the whole operation will need is checked before the first change; a refused
               preflight changes nothing anywhere (a new operation leaves no trace) and names every problem
    phases     each journalled in the registry under the operation's id (started, progress, done), each written
               so that running it again after a kill at any instant completes it; what a phase creates is
               recorded before it is created (cleanup records), so abort and success remove exactly that
    abort      undoes only this operation, and only before its point of no return; after it, it says what to
               run instead

An operation is a class with a method per phase (`phase_<name>`), `preflight`, and `undo` for abort.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from tenancy.engine import Engine
from tenancy.errors import OperationError, PreflightRefused, Refused, TenancyError
from tenancy.operations.lease import Lease, LeaseLost, Spec
from tenancy.operations.registry import Registry, phases_done, progress_of

Say = Callable[[str], None]
Hook = Callable[[str], None]


class Waiting(Exception):
    """The operation stops here for now (a window to wait out); the same command later continues it."""


class NothingToDo(Exception):
    """Raised by a preflight: what was asked is already so (a re-run after success). No trace is kept."""

    def __init__(self, message: str, **detail: Any):
        super().__init__(message)
        self.detail = detail


@dataclass
class Context:
    """What every operation is given: where it runs and how it reports."""

    env: str
    registry: Registry
    engine: Engine | None = None
    say: Say = field(default=lambda m: None)
    before_phase: Hook | None = None        # called before each phase runs (tests interrupt here)
    step: Hook | None = None                # called at named points inside phases (tests kill there)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))


@dataclass
class Outcome:
    operation: str
    kind: str
    tenant: str
    status: str = "done"                    # done | aborted | waiting | nothing to do | nothing to abort
    phases_run: list[str] = field(default_factory=list)
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "kind": self.kind, "tenant": self.tenant, "status": self.status,
                "phases_run": self.phases_run, "message": self.message, **self.detail}


class Operation:
    """One operation on one tenant's data. Subclasses set `kind`, `phases`, `point_of_no_return`, and define
    `spec()`, `prepare()`, `preflight(problems)`, `phase_<name>()` and `undo()`."""

    kind: str = ""
    phases: tuple[str, ...] = ()
    point_of_no_return: str | None = None   # once this phase has started, abort is refused
    phase_text: dict[str, str] = {}

    def __init__(self, ctx: Context, tenant: str):
        self.ctx, self.tenant = ctx, tenant
        self.lease: Lease | None = None
        self.journal: list[tuple[str, str, dict[str, Any]]] = []
        self.done: dict[str, dict[str, Any]] = {}
        self.outcome: Outcome | None = None

    # ----------------------------------------------------------------------------------- subclass hooks

    def spec(self) -> Spec:
        raise NotImplementedError

    def prepare(self) -> None:
        """Work out everything from the inputs, the deployed record and (on resume) the operation's settings."""

    def preflight(self, problems: list[str]) -> None:
        """Append every problem found; change nothing."""

    def undo(self) -> None:
        """Abort: remove what this operation created (its cleanup records), put back what it changed."""
        raise Refused(f"a {self.kind} cannot be aborted")

    def finished(self) -> None:
        """After the last phase, before the lease is released."""

    # ------------------------------------------------------------------------------------------ helpers

    @property
    def say(self) -> Say:
        return self.ctx.say

    @property
    def op_id(self) -> str:
        return self.lease.op_id if self.lease else ""

    @property
    def settings(self) -> dict[str, Any]:
        return self.lease.op.settings if self.lease else {}

    def started(self, phase: str) -> bool:
        return any(p == phase and e == "started" for p, e, _ in self.journal)

    def progress(self, phase: str) -> dict[str, Any]:
        return progress_of(self.journal, phase)

    def note(self, phase: str, **detail: Any) -> None:
        """Progress inside a phase, journalled at once (a re-run after a kill reads it back)."""
        self.lease.record(phase, "progress", detail)
        self.journal.append((phase, "progress", detail))

    def applies(self, phase: str) -> bool:
        """Whether `phase` has work in this run (an export without --export-to has none): a phase that does not
        apply is journalled as done without a header, so output and `phases_run` show only the work done."""
        return True

    def step(self, name: str) -> None:
        if self.ctx.step:
            self.ctx.step(name)

    def hint(self) -> str:
        op = self.lease.op if self.lease else None
        if op is None:
            return ""
        text = f"operation {op.id}: resume it with `{op.command}`"
        if self.abortable() and op.abort_command:
            text += f", or abort it with `{op.abort_command}`"
        return text

    def abortable(self) -> bool:
        return self.point_of_no_return is None or not self.started(self.point_of_no_return)

    # ---------------------------------------------------------------------------------------------- run

    def run(self, *, abort: bool = False, take_over: bool = False) -> Outcome:
        spec = self.spec()
        lease = Lease.take(self.ctx.registry, spec, abort=abort, take_over=take_over)
        if lease is None:
            return Outcome("", self.kind, self.tenant, "nothing to abort",
                           message=f"tenant '{self.tenant}' has no unfinished {self.kind}; nothing to abort")
        self.lease = lease
        self.outcome = Outcome(lease.op_id, self.kind, self.tenant)
        try:
            self.journal = lease.journal()
            self.done = phases_done(self.journal)
            if lease.resumed:
                ran = [p for p in self.phases if p in self.done]
                self.say(f"{'aborting' if abort else 'resuming'} {lease.op_id} ({self.kind} of '{self.tenant}') after: "
                         f"{', '.join(ran) or 'nothing'}")
            if abort:
                return self._abort()
            self.prepare()
            problems: list[str] = []
            self.preflight(problems)
            if problems:
                raise _Preflight(problems)
            if not lease.resumed:
                self.note("preflight", checked=True)
            for name in self.phases:
                if name in self.done:
                    continue
                if not self.applies(name):
                    lease.record(name, "done", {"applies": False})
                    self.journal.append((name, "done", {"applies": False}))
                    self.done[name] = {"applies": False}
                    continue
                if self.ctx.before_phase:
                    self.ctx.before_phase(name)
                self.say(f"[{name}] {self.phase_text.get(name, '')}".rstrip())
                lease.record(name, "started")
                self.journal.append((name, "started", {}))
                detail = getattr(self, f"phase_{name.replace('-', '_')}")() or {}
                lease.record(name, "done", detail)
                self.journal.append((name, "done", detail))
                self.done[name] = detail
                self.outcome.phases_run.append(name)
            self.finished()
            lease.finish("done")
            return self.outcome
        except NothingToDo as n:
            lease.forget()
            self.outcome.status, self.outcome.message, self.outcome.operation = "nothing to do", str(n), ""
            self.outcome.detail.update(n.detail)
            return self.outcome
        except _Preflight as p:
            resumed = lease.resumed
            (lease.pause if resumed else lease.forget)()
            what = f"resumed operation {lease.op_id}" if resumed else f"{self.kind} of '{self.tenant}'"
            raise PreflightRefused(f"{what} refused before any change: " + "; ".join(p.problems) + "; nothing was changed"
                          + (f". {self.hint()[0].upper()}{self.hint()[1:]}" if resumed else "")) from None
        except Waiting as w:
            self.outcome.status, self.outcome.message = "waiting", str(w)
            lease.pause("waiting", str(w))
            self.say(str(w))
            return self.outcome
        except LeaseLost:
            lease._close()
            raise
        except TenancyError as exc:
            phase = next((p for p in reversed(self.phases) if self.started(p) and p not in self.done), None)
            try:
                if phase:
                    lease.record(phase, "failed", {"error": str(exc)[:2000]})
            except TenancyError:
                pass
            hint = self.hint()
            lease.pause("running", str(exc)[:2000])
            if hint and "resume it with" not in str(exc):
                exc.args = (f"{exc}. {hint[0].upper()}{hint[1:]}",)
            raise
        except BaseException:
            lease._close()   # the server releases the advisory lock; the operation stays unfinished
            raise

    def _abort(self) -> Outcome:
        lease = self.lease
        if not self.abortable():
            lease.pause()
            raise Refused(self.past_no_return())
        self.prepare()
        self.undo()
        lease.finish("aborted")
        self.outcome.status = "aborted"
        return self.outcome

    def past_no_return(self) -> str:
        return (f"operation {self.op_id} is past {self.point_of_no_return}; it can no longer be aborted. Resume it with "
                f"`{self.lease.op.command}`")


class _Preflight(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems


def same_operation_args(**args: Any) -> dict[str, Any]:
    """The arguments that make two runs the same operation, without the ones left unset."""
    return {k: v for k, v in args.items() if v not in (None, [], ())}


__all__ = ["Context", "NothingToDo", "Operation", "Outcome", "Waiting", "OperationError", "Refused", "Spec"]
