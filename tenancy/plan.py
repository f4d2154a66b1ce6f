"""`tenancy plan`: every stack program, run offline under the recording runtime, written as plan.json.

The global stack, then identity shards, cells and pool shards, then tenant stacks (in worker processes), each
stage reading the previous ones' outputs (StackReference). One fresh
Pulumi runtime per stack; each stack's resources are checked by the real policy pack (`policy/`) where it ran,
and with `out` written there too (tenancy/planwrite.py): the parent keeps a light record per stack and what
the plan-wide rules need.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import queue
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from tenancy import naming, topology
from tenancy.catalog import Catalog, State
from tenancy.errors import ConfigError, PlanError
from tenancy.offline import run_stack
from tenancy.progress import Meter
from tenancy.planwrite import HEAD_KEYS, PlanWriter, manifests, stack_tail  # noqa: F401 -- manifests: this module's interface
from tenancy.recorder import ORGANIZATION, SECRET, UNKNOWN, RunResult

PLAN_VERSION = 1
LIGHT_OUTPUT_BYTES = 4096      # output values kept in a streamed stack's light record (the rest: plan.json)


@dataclass
class StackPlan:
    name: str
    kind: str                       # "platform" | "tenant"
    tenant: str | None
    model: str | None
    resources: list[dict[str, Any]] | None    # None in the light record of a streamed stack (plan.json has them)
    outputs: dict[str, Any]
    violations: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    placement: dict[str, Any] | None = None   # tenancy/fleet/report.py: stack_json
    resource_count: int = 0

    def __post_init__(self) -> None:
        if self.resources is not None:
            self.resource_count = len(self.resources)

    def light(self) -> StackPlan:
        """What a streaming plan keeps of a stack once written: no resources, outputs without large values."""
        small = {k: v for k, v in self.outputs.items() if len(json.dumps(v)) <= LIGHT_OUTPUT_BYTES}
        return replace(self, resources=None, outputs=small, resource_count=self.resource_count)

    def to_json(self) -> dict[str, Any]:
        if self.resources is None:
            raise PlanError(f"stack '{self.name}' was streamed to plan.json; its resources are read from there")
        return {**{k: getattr(self, k) for k in HEAD_KEYS}, **stack_tail(self)}

    @property
    def mandatory_violations(self) -> list[dict[str, Any]]:
        return [v for v in self.violations if v.get("enforcement") == "mandatory"]


@dataclass
class PlanResult:
    environment: str
    stacks: list[StackPlan]
    removed: dict[str, str] = field(default_factory=dict)   # stack -> why it would be destroyed
    unchanged: list[str] = field(default_factory=list)
    changed_since: str | None = None
    seconds: float = 0.0
    placement_lines: list[str] = field(default_factory=list)
    plan_file: Path | None = None        # set when the plan was streamed (plan(out=...)): already written

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": PLAN_VERSION, "environment": self.environment,
                               "stacks": [s.to_json() for s in self.stacks]}
        if self.changed_since is not None:
            out["changes"] = self.changes
        return out

    @property
    def changes(self) -> dict[str, Any] | None:
        if self.changed_since is None:
            return None
        return {"since": self.changed_since, "removed": self.removed, "unchanged": self.unchanged}

    @property
    def mandatory_violations(self) -> int:
        return sum(len(s.mandatory_violations) for s in self.stacks)


# --------------------------------------------------------------------------------------------- running

def _platform_config(env: str) -> dict[str, Any]:
    from tenancy.envconfig import load_stack_config
    return load_stack_config(env)


def _to_stack_plan(stack: str, kind: str, tenant: str | None, model: str | None, result: RunResult,
                   seconds: float) -> StackPlan:
    from tenancy.policycheck import evaluate_stack

    resources = sorted((r.to_json() for r in result.records), key=lambda r: r["urn"])
    plan = StackPlan(name=stack, kind=kind, tenant=tenant, model=model, resources=resources,
                     outputs=result.outputs, seconds=seconds)
    plan.violations = evaluate_stack(plan.to_json())
    return plan


@dataclass
class Planned:
    """One planned stack as the parent keeps it until the plan-wide rules have run: the stack (its light
    record once a streaming plan has written it), what those rules read of it, and what its planning
    function returned besides (a unit stack's exports)."""

    stack: StackPlan
    view: dict[str, Any] | Path          # tenancy.policycheck.plan_view, or the file a streaming plan spilled it to
    own_plan_wide: list[dict[str, Any]]  # its violations of the plan-wide forms that look at one stack
    extra: Any = None


# The writer of a streaming plan (plan(out=...)), set before any worker forks.
_WRITER: PlanWriter | None = None


def _planned(result: StackPlan | tuple[StackPlan, Any]) -> Planned:
    """Where the stack was planned (a worker): its plan-wide part, and written out when streaming."""
    from tenancy.policycheck import evaluate_stack_plan_forms, plan_view

    sp, extra = result if isinstance(result, tuple) else (result, None)
    entry = sp.to_json()
    planned = Planned(sp, plan_view(entry), evaluate_stack_plan_forms(entry), extra)
    if _WRITER is not None:
        _WRITER.add(sp)
        planned.stack = sp.light()
        planned.view = _WRITER.spill_view(sp.name, planned.view)
    return planned


# Worker state: set in the parent before the pool forks, so catalogues are not pickled per task.
_WORKER: dict[str, Any] = {}
# A worker process is replaced after this many stacks. Every program run leaves some of its objects alive in
# the Pulumi SDK's runtime (about 1.7 MB for a namespace tenant's stack), so a worker that ran hundreds of
# stacks would hold hundreds of them; a fresh one is forked, with every module imported, in milliseconds.
STACKS_PER_WORKER = 20


def _plan_tenant(stack: str) -> StackPlan:
    catalog: Catalog = _WORKER["catalog"]
    _, tenant_id = naming.parse_stack_name(stack)
    tenant = catalog.tenant(tenant_id)
    result, seconds = run_stack(stack, catalog, {}, _WORKER["stack_outputs"])
    return _to_stack_plan(stack, "tenant", tenant.id, tenant.model.value, result, seconds)


def _plan_unit(stack: str) -> tuple[StackPlan, tuple[dict, list[str]]]:
    """A cell, pool-shard or identity-shard stack, with the exports its dependents read."""
    catalog: Catalog = _WORKER["catalog"]
    kind, _, _ = naming.stack_kind(stack)
    result, seconds = run_stack(stack, catalog, {}, _WORKER["stack_outputs"],
                                tenant_facing_only=stack in _WORKER.get("facing_only", ()))
    return _to_stack_plan(stack, kind, None, None, result, seconds), _exports(result)


def _exports(result: RunResult) -> tuple[dict, list[str]]:
    """A stack's outputs as its dependents' StackReferences read them (secrets as the marker, never a value)."""
    return ({k: (SECRET if k in result.secret_outputs else v) for k, v in result.raw_outputs.items()},
            list(result.secret_outputs))


def _plan_indexed(item: tuple[int, str]) -> tuple[int, Planned]:
    i, stack = item
    return i, _planned(_WORKER["one"](stack))


def _plan_tenants(stacks_: list[str], workers: int, done: Callable[[], None] = lambda: None,
                  one: Callable[[str], Any] = _plan_tenant) -> list[Planned]:
    """Every stack of `stacks_` planned by `one` (and written, when streaming, where it ran); results in the
    order of `stacks_`, `done()` as each finishes.

    With workers: the first stack is planned in this process, so that the workers forked after it start with
    every module a stack program imports; the rest go to `workers` processes, each replaced after
    STACKS_PER_WORKER stacks."""
    _WORKER["one"] = one
    if workers <= 1 or len(stacks_) < 4:
        results = []
        for s in stacks_:
            results.append(_planned(one(s)))
            done()
        return results
    ctx = multiprocessing.get_context("fork")
    out: list[Planned | None] = [None] * len(stacks_)
    results: queue.Queue = queue.Queue()

    gc.collect()  # garbage of earlier runs in this process, collected here rather than in every worker
    gc.freeze()   # what workers inherit is never collected there: their collections stay small, pages shared
    try:
        out[0] = _planned(one(stacks_[0]))
        done()
        rest = list(enumerate(stacks_))[1:]
        gc.freeze()
        with ctx.Pool(processes=min(workers, max(1, len(rest))), maxtasksperchild=STACKS_PER_WORKER) as pool:
            for item in rest:
                pool.apply_async(_plan_indexed, (item,), callback=results.put, error_callback=results.put)
            for _ in range(len(stacks_) - 1):
                got = results.get()
                if isinstance(got, BaseException):
                    raise got
                i, planned = got
                out[i] = planned
                done()
    finally:
        gc.unfreeze()
    return [p for p in out if p is not None]


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def plan(catalog: Catalog, env: str, tenants: Iterable[str] | None = None, changed_since: str | None = None,
         workers: int | None = None, progress=None, meter: Meter | None = None,
         out: str | Path | None = None, placed=None) -> PlanResult:
    """Plan the environment's stacks: all of them, only `tenants`, or only those changed since a git ref.
    `progress`: messages; `meter`: stacks done/total, rate and time left (tenancy/progress.py).
    `out`: write plan.json and the manifests there as stacks finish (tenancy/planwrite.py); the result then
    holds a light record per stack (no resources) and `plan_file`. Without it, every stack stays in memory.
    `placed`: the catalogue's placement when the caller has already checked it (tenancy.fleet.placement.fit)."""
    global _WRITER

    start = time.perf_counter()
    say = progress or (lambda msg: None)
    naming.check_env(env)
    config = _platform_config(env)
    from tenancy.envconfig import offline_platform_config, require_catalog_fits
    require_catalog_fits(catalog, offline_platform_config(env))
    wanted = list(tenants or [])
    for tid in wanted:
        # unknown ids, and tenants with nothing deployed to plan, are bad input before anything runs
        if catalog.tenant(tid).state is State.OFFBOARDED:
            raise ConfigError(f"tenant '{tid}' is offboarded in {catalog.path}: it has no stack and no share of the "
                              "platform stack, so there is nothing to plan for it; plan without --tenant, or name a "
                              "tenant that is active or suspended")
    from tenancy.fleet import capacity, placement as fleet
    if placed is None:
        placed = fleet.place(catalog, capacity.load(env))   # a full environment is bad input before anything runs
    platform_stack = naming.stack_name(env)
    tenant_stacks = [naming.stack_name(env, t.id) for t in catalog.stack_tenants]
    reasons: dict[str, list[str]] = {}
    removed: dict[str, str] = {}
    unchanged: list[str] = []

    if changed_since is not None:
        from tenancy.changes import changes_since
        ch = changes_since(catalog, env, changed_since)
        reasons = ch.reasons
        removed = ch.removed
        unchanged = [s for s in [platform_stack, *tenant_stacks] if s not in reasons]
        tenant_stacks = [s for s in tenant_stacks if s in reasons]
    if wanted:
        chosen = {naming.stack_name(env, t) for t in wanted if catalog.tenant(t).has_stack}
        tenant_stacks = [s for s in tenant_stacks if s in chosen]
    _WRITER = PlanWriter.open(out) if out is not None else None
    try:
        result = _plan_cells(catalog, env, config, placed, tenant_stacks, wanted, reasons, removed, unchanged,
                             changed_since, workers, say, meter, start)
        if _WRITER is not None:
            result.plan_file = _WRITER.close(PLAN_VERSION, env, result.stacks, result.changes)
    except BaseException:
        if _WRITER is not None:
            _WRITER.abort()
        raise
    finally:
        _WRITER = None
    result.seconds = time.perf_counter() - start
    return result


def _plan_cells(catalog: Catalog, env: str, config: dict[str, Any], placed, tenant_stacks: list[str], wanted: list[str],
                reasons: dict[str, list[str]], removed: dict[str, str], unchanged: list[str], changed_since: str | None,
                workers: int | None, say: Callable[[str], None], meter: Meter | None, start: float) -> PlanResult:
    """The global stack, then identity shards, cells and pool shards (each stage reads the previous stages'
    outputs), then tenant stacks. Stacks outside the plan that planned ones read are run for
    their outputs only."""
    from stacks.cells import IDENTITY_TENANTS

    capacity = placed.capacity
    platform_stack = naming.stack_name(env)
    units = topology.unit_stacks(env, capacity)
    if changed_since is not None:
        chosen = {platform_stack, *units} & set(reasons)
        unchanged = [s for s in unchanged if s != platform_stack] + [s for s in [platform_stack, *units] if s not in reasons]
    elif wanted:
        chosen = set()
        for tid in wanted:
            p = placed.tenants.get(tid)
            if catalog.tenant(tid).model.value == "pooled" and p is not None:
                chosen.add(naming.unit_stack(env, p.pool_shard))
    else:
        chosen = {platform_stack, *units}
    # What the chosen stacks read: cells and pools read identity shards, pools read cell 1, tenant stacks their cell.
    namespace_ids = [tid for tid in (naming.parse_stack_name(s)[1] for s in tenant_stacks)
                     if catalog.tenant(tid).model.value == "namespace" and tid in placed.tenants]
    needs_cells = {naming.unit_stack(env, placed.tenants[tid].cell) for tid in namespace_ids}
    if any(naming.stack_kind(s)[0] == naming.POOL_STACK for s in chosen):
        needs_cells.add(naming.unit_stack(env, naming.cell(1)))
    run_cells = [s for s in units if naming.stack_kind(s)[0] == naming.CELL_STACK and (s in chosen or s in needs_cells)]
    run_pools = [s for s in units if naming.stack_kind(s)[0] == naming.POOL_STACK and s in chosen]
    # A cell run only for a tenant stack's sake builds what tenant stacks read (no directory: no identity shards).
    facing_only = {s for s in run_cells if s not in chosen}
    # Identity shards run when planned; otherwise the directories that read them get their tenants' names as
    # known only after an update (an identity shard of 1,500 tenants takes seconds to run, and a one-tenant
    # plan must not run them all).
    run_identity = [s for s in units if naming.stack_kind(s)[0] == naming.IDENTITY_STACK and s in chosen]

    from stacks.cells import remember_placement
    remember_placement(catalog, placed)      # every program of this plan (and its workers) places it the same way
    stacks_out: list[Planned] = []
    meter = meter or Meter(live=False, interval=float("inf"))
    meter.start(len(chosen) + len(tenant_stacks))
    from tenancy.envconfig import project_name
    prefix = f"{ORGANIZATION}/{project_name()}/"
    cached = _cached_units(env, platform_stack, chosen, facing_only, prefix, say)
    run_cells = [s for s in run_cells if prefix + s not in cached]
    presult = None
    if not cached:
        say(f"planning global stack {platform_stack} ({len(catalog.tenants)} tenants)")
        presult, pseconds = run_stack(platform_stack, catalog, config, {})
    outputs: dict[str, tuple[dict, list[str]]] = cached or {prefix + platform_stack: _exports(presult)}
    unknown: dict[str, dict[str, str]] = {}
    for tid, p in placed.tenants.items():
        unknown.setdefault(naming.unit_stack(env, p.identity_shard), {})[tid] = UNKNOWN
    for stack, names in unknown.items():
        outputs[prefix + stack] = ({IDENTITY_TENANTS: json.dumps(names, sort_keys=True)}, [])
    if platform_stack in chosen:
        stacks_out.append(_planned(_to_stack_plan(platform_stack, "platform", None, None, presult, pseconds)))
        meter.advance()
    del presult
    n = workers or default_workers()
    try:
        for stage in (run_identity, run_cells, run_pools):
            if not stage:
                continue
            say(f"planning {len(stage)} {naming.stack_kind(stage[0])[0]} stack(s)")
            _WORKER.update(catalog=catalog, stack_outputs=dict(outputs), facing_only=facing_only)
            for p in _plan_tenants(stage, n, lambda: None, _plan_unit):
                outputs[prefix + p.stack.name] = p.extra
                if p.stack.name in chosen:
                    stacks_out.append(p)
                    meter.advance()
            _WORKER.clear()
        say(f"planning {len(tenant_stacks)} tenant stack(s) with {min(n, max(1, len(tenant_stacks)))} worker(s)")
        _WORKER.update(catalog=catalog, stack_outputs=outputs)
        tenant_plans = _plan_tenants(tenant_stacks, n, meter.advance)
    finally:
        _WORKER.clear()
        meter.finish()
    return _finish(env, catalog, placed, stacks_out, tenant_plans, reasons, removed, unchanged, changed_since, start)


def _cached_units(env: str, platform_stack: str, chosen: set[str], facing_only: set[str], prefix: str,
                  say: Callable[[str], None]) -> dict[str, tuple[dict, list[str]]]:
    """The exports of the units a plan reads but does not plan (the global stack, cells run for a tenant stack's
    sake), from tenancy/plancache.py; none when the global stack is planned or the cache is off."""
    from tenancy import plancache

    if platform_stack in chosen or not plancache.enabled():
        return {}
    say(f"reading the exports of {', '.join([platform_stack, *sorted(facing_only)])} (cached, or computed once)")
    outputs = {prefix + platform_stack: plancache.unit_exports(env, platform_stack, {})}
    for cell in sorted(facing_only):
        outputs[prefix + cell] = plancache.unit_exports(env, cell, {prefix + platform_stack: outputs[prefix + platform_stack]})
    return outputs


def _finish(env: str, catalog: Catalog, placed, stacks_out: list[Planned], tenant_plans: list[Planned],
            reasons: dict[str, list[str]], removed: dict[str, str], unchanged: list[str], changed_since: str | None,
            start: float) -> PlanResult:
    """Tenant stacks after the platform side, plan-wide rules, and every stack's placement."""
    from tenancy.fleet import report

    planned = stacks_out + tenant_plans
    stacks = [p.stack for p in planned]
    for sp in stacks:
        sp.reasons = reasons.get(sp.name, [])
    _plan_wide_violations(planned)
    del planned
    for sp in stacks:
        sp.placement = report.stack_json(placed, catalog, sp.kind, sp.tenant)
    return PlanResult(environment=env, stacks=stacks, removed=removed, unchanged=unchanged,
                      changed_since=changed_since, seconds=time.perf_counter() - start,
                      placement_lines=report.summary_lines(placed, catalog, stacks))


def _plan_wide_violations(planned: list[Planned]) -> None:
    """The plan-wide rules over every stack's view, then each stack's own plan-wide part; each violation goes
    to the stack of its URN (evaluate_plan's order: what `tenancy policy-check` reports for plan.json)."""
    from tenancy.policycheck import evaluate_cross_stack, stack_of_urn

    if not planned:
        return
    stacks_out = [p.stack for p in planned]
    by_name = {s.name: s for s in stacks_out}
    found = evaluate_cross_stack([p.view for p in planned]) + [v for p in planned for v in p.own_plan_wide]
    for v in found:
        target = by_name.get(stack_of_urn(v["urn"])) or stacks_out[0]
        target.violations.append(v)


# --------------------------------------------------------------------------------------------- writing

def write(result: PlanResult, out_dir: str | Path) -> Path:
    """plan.json and manifests/ of a plan held in memory (`plan()` without `out`)."""
    if result.plan_file is not None:
        raise PlanError(f"this plan was written to {result.plan_file} as it ran; its stacks are not held in memory")
    writer = PlanWriter.open(out_dir)
    try:
        for stack in result.stacks:
            writer.add(stack)
        return writer.close(PLAN_VERSION, result.environment, result.stacks, result.changes)
    except BaseException:
        writer.abort()
        raise


def summary(result: PlanResult) -> str:
    rows = [("STACK", "KIND", "TENANT", "MODEL", "RESOURCES", "VIOLATIONS")]
    for s in result.stacks:
        mand = len(s.mandatory_violations)
        adv = len(s.violations) - mand
        viol = str(mand) + (f" (+{adv} advisory)" if adv else "")
        rows.append((s.name, s.kind, s.tenant or "-", s.model or "-", str(s.resource_count), viol))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    total = sum(s.resource_count for s in result.stacks)
    lines.append(f"{len(result.stacks)} stack(s), {total} resources, {result.mandatory_violations} mandatory "
                 f"violation(s), {result.seconds:.1f}s")
    if result.changed_since is not None:
        for s in result.stacks:
            lines.append(f"  {s.name}: {'; '.join(s.reasons)}")
        for name, why in result.removed.items():
            lines.append(f"  {name}: {why}")
        if result.unchanged:
            lines.append(f"  unchanged since {result.changed_since}: {len(result.unchanged)} stack(s)")
    lines.extend(result.placement_lines)
    for s in result.stacks:
        for v in s.violations:
            lines.append(f"[{v['enforcement']}] {s.name}: {v['policy']}: {v['urn']}: {v['message']}")
    return "\n".join(lines)
