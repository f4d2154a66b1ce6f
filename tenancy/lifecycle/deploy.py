"""Deploying many stacks, in waves (tenancy/lifecycle/waves.py): by default the platform stack first when it
is affected, then tenant stacks in parallel.

Every `up` is preceded by a preview, and an update that would delete or replace a stateful resource the
workflow did not plan to remove is refused unless `allow_destroy` is set. A deploy applies tenants.yaml
through the deployed record (tenancy.lifecycle.record): it never changes a tenant's placement, state or
presence -- those wait, reported as pending, for the lifecycle command that moves the data.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from tenancy import naming
from tenancy.catalog import Catalog
from tenancy.engine import Engine, EngineError, OpResult, StackMissing
from tenancy.lifecycle import Refused
from tenancy.errors import ConfigError
from tenancy.lifecycle import record as rec
from tenancy.lifecycle.waves import DEFAULT, Early, Gate, RolloutSpec, Unready, Wave, assign, bring_forward
from tenancy.topology import every_platform_stack, needs, tenant_platform_stacks

Say = Callable[[str], None]


class Progress:
    """One line per stack, updated in place on a terminal (rich), plain lines otherwise; a summary at the end."""

    def __init__(self, stacks: list[str], title: str, stream=None):
        self.stacks = stacks
        self.status = {s: "waiting" for s in stacks}
        self.title = title
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._live = None
        if getattr(self.stream, "isatty", lambda: False)() and len(stacks) > 1:
            from rich.console import Console
            from rich.live import Live
            self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=8, transient=False)

    def _render(self):
        from rich.table import Table
        table = Table(title=self.title, show_edge=False)
        table.add_column("stack")
        table.add_column("status")
        for s in self.stacks:
            table.add_row(s, self.status[s])
        return table

    def __enter__(self):
        if self._live:
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live:
            self._live.__exit__(*exc)

    def update(self, stack: str, status: str) -> None:
        with self._lock:
            self.status[stack] = status
            if self._live:
                self._live.update(self._render())
            else:
                print(f"{stack}: {status}", file=self.stream, flush=True)


# -------------------------------------------------------------------------------------------------- deploy

@dataclass
class Outcome:
    stack: str
    status: str                 # ok | refused | failed | skipped
    result: OpResult | None = None
    message: str = ""

    def line(self) -> str:
        """One line per stack: its status, what changes (or "no changes"), and why it stopped when it did."""
        changes = summary(self.result) if self.result is not None else ""
        return f"{self.stack}: {self.status}" + (f": {changes}" if changes else "") + (f": {self.message}" if self.message else "")

    def lines(self) -> list[str]:
        """The stack's line, then one line per resource that changes."""
        return [self.line(), *(resource_lines(self.result) if self.result is not None else [])]


# How each kind of change is marked, as the Pulumi CLI marks it.
MARKS = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}
LISTED_CREATES = 20     # a first deploy creates hundreds: beyond this many, counts by type


def summary(result: OpResult) -> str:
    """"2 update, 3 replace" or "no changes"."""
    return ", ".join(f"{n} {op}" for op, n in sorted(result.counts().items())) or "no changes"


def resource_lines(result: OpResult, indent: str = "  ") -> list[str]:
    """One line per changed resource: mark, type, name, and which inputs changed (for a replace, those that force
    it). Creates are counted by type when there are many (a new stack's resources are in `tenancy plan`)."""
    order = {"delete": 0, "replace": 1, "update": 2, "create": 3}
    changes = sorted(result.changes, key=lambda c: (order.get(c.op, 4), c.type, c.urn))
    creates = [c for c in changes if c.op == "create"]
    out = []
    for c in changes:
        if c.op == "create" and len(creates) > LISTED_CREATES:
            continue
        out.append(f"{indent}{MARKS.get(c.op, '?'):<2} {c.op} {c.type} {c.name}{_why(c)}")
    if len(creates) > LISTED_CREATES:
        by_type: dict[str, int] = {}
        for c in creates:
            by_type[c.type] = by_type.get(c.type, 0) + 1
        top = sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{n} {t}" for t, n in top[:5]) + (f", and {len(top) - 5} more type(s)" if len(top) > 5 else "")
        out.append(f"{indent}+  create {len(creates)} resources: {shown}")
    return out


def _why(c) -> str:
    # "metadata" and "metadata.name" both changed: the precise one says it
    every = set(c.diffs) | set(c.replace_keys)
    precise = sorted(k for k in every if not any(o.startswith(k + ".") for o in every))

    def keys(ks: list[str]) -> str:
        return ", ".join(ks[:6]) + (f" and {len(ks) - 6} more" if len(ks) > 6 else "")

    forcing = [k for k in precise if k in c.replace_keys or any(k.startswith(r + ".") for r in c.replace_keys)]
    others = [k for k in precise if k not in forcing]
    if c.op == "replace" and forcing:
        return f" (replaced because {keys(forcing)} changed" + (f"; also changed: {keys(others)})" if others else ")")
    if c.op in ("update", "replace") and precise:
        return f" (changed: {keys(precise)})"
    return ""


def affected_stacks(catalog: Catalog, env: str, tenants: list[str] | None = None, changed_since: str | None = None,
                    stacks: list[str] | None = None) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(platform-side stacks, tenant stacks, reasons). `stacks`: only these (a CI batch). The platform side is
    the global stack and its unit stacks (tenancy/topology.py)."""
    platform = every_platform_stack(env)
    tenant_stacks = [naming.stack_name(env, t.id) for t in catalog.stack_tenants]
    reasons: dict[str, list[str]] = {}
    if changed_since is not None:
        from tenancy.changes import changes_since
        ch = changes_since(catalog, env, changed_since)
        reasons = ch.reasons
        platform = [s for s in platform if s in reasons]
        tenant_stacks = [s for s in tenant_stacks if s in reasons]
    if tenants:
        for t in tenants:
            catalog.tenant(t)
        wanted = {naming.stack_name(env, t) for t in tenants}
        tenant_stacks = [s for s in tenant_stacks if s in wanted]
        if all(catalog.tenant(t).has_stack for t in tenants):
            platform = []
    if stacks is not None:
        chosen = set(stacks)
        tenant_stacks = [s for s in tenant_stacks if s in chosen]
        platform = [s for s in platform if s in chosen]
    return platform, tenant_stacks, reasons


def check_stack_names(stacks: list[str], env: str, *catalogs: Catalog) -> None:
    """Bad input before anything runs: every name must be a stack of `env` in one of the catalogues."""
    known = set(every_platform_stack(env)) | {naming.stack_name(env, t.id) for c in catalogs for t in c.stack_tenants}
    unknown = [s for s in stacks if s not in known]
    if unknown:
        raise ConfigError(f"stack '{unknown[0]}' is not a stack of environment {env} (the platform stack '{env}' or "
                          f"'{env}.<tenant>' of a namespace or dedicated tenant)"
                          + (f"; {len(unknown) - 1} more unknown" if len(unknown) > 1 else ""))


def unexpected_destruction(preview: OpResult, expected: set[str]) -> str | None:
    """What a preview would delete or replace among stateful resources the workflow did not plan to remove."""
    risky = sorted((c for c in preview.destructive() if c.urn not in expected), key=lambda c: c.urn)
    return "; ".join(f"{c.op} {c.type} {c.urn.rsplit('::', 1)[-1]}" for c in risky) or None


def checked_up(engine: Engine, stack: str, catalog: Catalog, allow_destroy: bool, expected: set[str],
                say: Say | None = None) -> OpResult:
    """Preview, refuse unexpected stateful deletes/replaces (nothing changed), then update."""
    preview = engine.preview(stack, catalog)
    what = unexpected_destruction(preview, expected)
    if what and not allow_destroy:
        raise Refused(f"would {what}; nothing was changed (review it, then --allow-destroy)")
    result = engine.up(stack, catalog)
    if say:
        say(f"  {stack}: {summary(result)}")
        for line in resource_lines(result, "    "):
            say(line)
    return result


def up_tenant_platform(engine: Engine, env: str, before: Catalog, after: Catalog, tenant_id: str, allow_destroy: bool,
                       expected: set[str], say) -> list[OpResult]:
    """Preview-checked updates of the tenant's platform-side stacks (tenant_platform_stacks), in deploy order."""
    return [checked_up(engine, stack, after, allow_destroy, expected, say)
            for stack in tenant_platform_stacks(env, before, after, tenant_id)]


def guarded_up(engine: Engine, stack: str, catalog: Catalog, allow_destroy: bool, expected: set[str],
                progress: Progress) -> Outcome:
    progress.update(stack, "updating")
    try:
        result = checked_up(engine, stack, catalog, allow_destroy, expected)
    except Refused as exc:
        progress.update(stack, "refused")
        return Outcome(stack, "refused", None, str(exc))
    except EngineError as exc:
        progress.update(stack, "failed")
        return Outcome(stack, "failed", None, str(exc))
    progress.update(stack, "done")
    return Outcome(stack, "ok", result)


def pending_line(p: rec.Pending, env: str, flags: str = "") -> str:
    """A held tenant as `tenancy up` reports it: what waits, and the command that resolves it, with the options of
    the command that reported it (`flags`: its catalogue, engine and state) so that it runs as printed."""
    who = "" if p.message.startswith(f"tenant '{p.tenant}'") else f"tenant '{p.tenant}': "
    return f"pending: {who}{p.message}" + (f"; run: {p.command} --env {env}{' ' + flags if flags else ''}"
                                          if p.command else "")


def pending(engine: Engine, desired: Catalog, env: str) -> list[rec.Pending]:
    """What tenants.yaml asks for that only a lifecycle command can do (moves, state changes, removals)."""
    return rec.for_deploy(desired, rec.read(engine, env))[1]


@dataclass
class Halt:
    wave: int
    name: str
    reason: str


@dataclass
class Result:
    outcomes: list[Outcome]                 # one per stack of the rollout
    waves: list[Wave] = field(default_factory=list)
    halted: Halt | None = None
    pending: list[rec.Pending] = field(default_factory=list)   # tenants held for a lifecycle command (not stacks)
    early: list[Early] = field(default_factory=list)           # stacks run before their wave: not deployed yet


class NotDeployed(ConfigError):
    """The rollout would run a stack before a stack it reads has ever been deployed, and cannot deploy that one
    first itself (it is not in the rollout, or in a wave --from-wave skips). Refused before anything runs."""

    def __init__(self, unready: list[Unready], plan: list[Wave]):
        self.unready = unready
        names = {w.number: w.name for w in plan}
        parts = []
        for u in unready:
            where = (f"it is in wave {u.wave} '{names[u.wave]}', which this run skips (--from-wave)" if u.wave is not None
                     else "it is not in this rollout")
            parts.append(f"{u.reader} reads {u.stack}, which has never been deployed, and {where}")
        super().__init__("; ".join(parts) + "; nothing was changed")

    @property
    def outside(self) -> list[str]:
        """The stacks to deploy first, in deploy order, when some are outside the rollout."""
        return [u.stack for u in self.unready if u.wave is None]

    @property
    def from_wave(self) -> int | None:
        waves = [u.wave for u in self.unready if u.wave is not None]
        return min(waves) if waves else None


def deployed(engine: Engine, stack: str) -> bool:
    """Whether the stack has been deployed: the engine has its outputs."""
    try:
        engine.outputs(stack)
    except EngineError:
        return False
    return True


def _needs(catalog: Catalog, env: str) -> Callable[[str], list[str]]:
    """`topology.needs` over one catalogue, placed once (tenants are placed to know their cells), with
    what each stack reads kept for the whole rollout."""
    tenants = {t.id: t for t in catalog.tenants}
    memo: dict[str, tuple[str, ...]] = {}
    placed = []

    def of(stack: str) -> list[str]:
        if not placed:
            from tenancy.fleet import capacity as fleet_capacity
            from tenancy.fleet.placement import place
            placed.append(place(catalog, fleet_capacity.load(env)))
        return needs(stack, catalog, placed[0] if placed else None, tenants, memo)

    return of


def deploy(engine: Engine, desired: Catalog, env: str, *, mode: str = "up", tenants: list[str] | None = None,
           changed_since: str | None = None, parallel: int = 4, allow_destroy: bool = False,
           expected_deletes: set[str] | None = None, stream=None, stacks: list[str] | None = None) -> list[Outcome]:
    """Preview or update the affected stacks: platform first (when affected), then tenants in parallel."""
    return rollout(engine, desired, env, mode=mode, tenants=tenants, changed_since=changed_since, parallel=parallel,
                   allow_destroy=allow_destroy, expected_deletes=expected_deletes, stream=stream, stacks=stacks).outcomes


def rollout(engine: Engine, desired: Catalog, env: str, *, mode: str = "up", tenants: list[str] | None = None,
            changed_since: str | None = None, stacks: list[str] | None = None, parallel: int = 4,
            allow_destroy: bool = False, expected_deletes: set[str] | None = None, stream=None,
            waves: RolloutSpec | None = None, from_wave: int = 1, gate: Gate | None = None,
            sleep: Callable[[float], None] = time.sleep) -> Result:
    """Preview or update the affected stacks wave by wave (tenancy/lifecycle/waves.py; previews: the platform
    stack, then the rest). Within a wave the platform stack goes first, then the others in parallel. A failed
    or refused stack halts the rollout after its wave; between waves the rollout pauses, then `gate` checks
    the wave. The result says where it halted: `--from-wave N` resumes there.

    A stack never runs before what it reads (tenancy/topology.py `needs`): on a first rollout a
    platform-side stack declared in a later wave than a stack that reads it runs in the reader's wave
    (`waves.bring_forward`); what the rollout cannot deploy first is refused up front (NotDeployed). A preview
    deploys nothing, so it skips the stacks that read a stack never deployed, saying so.

    The catalogue applied is tenants.yaml held at the deployed record (see tenancy.lifecycle.record); each
    held difference is reported in `pending`, naming the command that resolves it."""
    catalog, held = rec.for_deploy(desired, rec.read(engine, env))
    if stacks is not None:
        check_stack_names(stacks, env, desired, catalog)
    platform, tenant_stacks, _ = affected_stacks(catalog, env, tenants, changed_since, stacks)
    order = platform + tenant_stacks
    plan = assign(waves if waves is not None and mode == "up" else DEFAULT, catalog, env, order)
    if from_wave < 1 or from_wave > len(plan):
        raise ConfigError(f"--from-wave {from_wave}: this rollout has waves 1 to {len(plan)} "
                          f"({', '.join(f'{w.number} {w.name}' for w in plan)})")
    needs = _needs(catalog, env)
    known: dict[str, bool] = {}

    def is_deployed(stack: str) -> bool:
        if stack not in known:
            known[stack] = deployed(engine, stack)
        return known[stack]

    early: list[Early] = []
    blocked: dict[str, str] = {}
    if mode == "up":
        early, unready = bring_forward(plan, needs, is_deployed, from_wave)
        if unready:
            raise NotDeployed(unready, plan)
    else:
        for stack in order:
            missing = [n for n in needs(stack) if not is_deployed(n)]
            if missing:
                blocked[stack] = (f"reads {', '.join(missing)}, which {'has' if len(missing) == 1 else 'have'} never been "
                                  f"deployed: a preview deploys nothing, so this stack is previewed once "
                                  f"{'it is' if len(missing) == 1 else 'they are'} up (`tenancy plan` shows it now)")
    expected = set(expected_deletes or ())
    outcomes: list[Outcome] = []
    halted: Halt | None = None
    out = stream or sys.stderr
    with Progress(order, f"tenancy {mode} ({env})", stream) as progress:
        def run(stack: str) -> Outcome:
            if stack in blocked:
                progress.update(stack, "skipped")
                return Outcome(stack, "skipped", None, blocked[stack])
            if mode == "preview":
                try:
                    progress.update(stack, "previewing")
                    res = engine.preview(stack, catalog)
                    progress.update(stack, "previewed")
                    what = unexpected_destruction(res, expected)
                    return Outcome(stack, "ok", res, f"would {what} (stateful)" if what else "")
                except StackMissing as exc:      # a new stack: previews select, they never create
                    progress.update(stack, "skipped")
                    return Outcome(stack, "skipped", None, str(exc))
                except EngineError as exc:
                    progress.update(stack, "failed")
                    return Outcome(stack, "failed", None, str(exc))
            return guarded_up(engine, stack, catalog, allow_destroy, expected, progress)

        def skip(wave: Wave, why: str) -> None:
            for s in wave.stacks:
                progress.update(s, "skipped")
                outcomes.append(Outcome(s, "skipped", None, why))

        for i, wave in enumerate(plan):
            label = f"wave {wave.number}/{len(plan)} '{wave.name}'"
            if halted is not None:
                skip(wave, f"{label} not started: the rollout halted at wave {halted.wave}")
                continue
            if wave.number < from_wave:
                skip(wave, f"{label} skipped (--from-wave {from_wave})")
                continue
            if not wave.stacks:
                continue
            if len(plan) > 1:
                print(f"{label}: {len(wave.stacks)} stack(s)", file=out, flush=True)
            for e in early:
                if e.wave == wave.number:
                    print(f"{label}: {e.stack} first, moved from wave {e.declared}: it has never been deployed and "
                          f"{e.reader} reads it", file=out, flush=True)
            got = _run_wave(wave, platform, run, progress, parallel)
            outcomes.extend(got)
            bad = [o for o in got if o.status in ("failed", "refused")]
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                halted = Halt(wave.number, wave.name, f"{bad[0].stack} {bad[0].status}: {bad[0].message}{more}")
                continue
            if mode != "up":
                continue
            if wave.pause > 0 and any(w.stacks for w in plan[i + 1:]):
                print(f"{label} done; pausing {wave.pause:g}s before the next wave", file=out, flush=True)
                sleep(wave.pause)
            if gate is not None:
                problems = gate.check(wave, {o.stack: o.result.outputs for o in got if o.result}, catalog, env)
                if problems:
                    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                    halted = Halt(wave.number, wave.name, "health gate: " + "; ".join(problems[:3]) + more)
    wanted = set(tenants or ())
    return Result(outcomes, plan, halted, [p for p in held if not wanted or p.tenant in wanted], early)


def _run_wave(wave: Wave, platform: list[str], run: Callable[[str], Outcome], progress: Progress,
              parallel: int) -> list[Outcome]:
    """The platform-side stacks first, one after another in their order (each reads the earlier ones' outputs),
    then the rest in parallel."""
    got: list[Outcome] = []
    rest = [s for s in wave.stacks if s not in platform]
    for first_stack in [s for s in platform if s in wave.stacks]:
        first = run(first_stack)
        got.append(first)
        if first.status != "ok":
            left = [s for s in wave.stacks if s not in {o.stack for o in got}]
            for s in left:
                progress.update(s, "skipped")
            return got + [Outcome(s, "skipped", None, f"platform stack {first.stack} {first.status}") for s in left]
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        got.extend(pool.map(run, rest))
    return got
