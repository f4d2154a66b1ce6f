"""`tenancy plan`: every stack program, run offline under the recording runtime, written as plan.json.

The platform stack runs first; its exports feed the tenant stacks' StackReference. Tenant stacks are
independent of each other, so they run in worker processes (one fresh Pulumi runtime per stack). Each
stack's resources are checked by the real policy pack (`policy/`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from tenancy import naming
from tenancy.catalog import Catalog
from tenancy.errors import PlanError, TenancyError
from tenancy.progress import Meter
from tenancy.recorder import ORGANIZATION, SECRET, UNKNOWN, RunResult, run_program

PLAN_VERSION = 1
K8S_NOT_OBJECTS = ("kubernetes:helm.sh/", "pulumi:providers:")


@dataclass
class StackPlan:
    name: str
    kind: str                       # "platform" | "tenant"
    tenant: str | None
    model: str | None
    resources: list[dict[str, Any]]
    outputs: dict[str, Any]
    violations: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    placement: dict[str, Any] | None = None   # tenancy/fleet/report.py: stack_json

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "kind": self.kind, "tenant": self.tenant, "model": self.model,
               "resources": self.resources, "outputs": self.outputs, "violations": self.violations}
        if self.reasons:
            out["reasons"] = self.reasons
        if self.placement is not None:
            out["placement"] = self.placement
        return out

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

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": PLAN_VERSION, "environment": self.environment,
                               "stacks": [s.to_json() for s in self.stacks]}
        if self.changed_since is not None:
            out["changes"] = {"since": self.changed_since, "removed": self.removed, "unchanged": self.unchanged}
        return out

    @property
    def mandatory_violations(self) -> int:
        return sum(len(s.mandatory_violations) for s in self.stacks)


# --------------------------------------------------------------------------------------------- running

def _platform_config(env: str) -> dict[str, Any]:
    from stacks.config import load_stack_config
    return load_stack_config(env)


def run_stack(stack: str, catalog: Catalog, config: dict[str, Any],
              stack_outputs: dict[str, tuple[dict, list[str]]], tenant_facing_only: bool = False) -> tuple[RunResult, float]:
    import stacks
    from stacks.config import project_name

    start = time.perf_counter()
    try:
        result = run_program(stacks.program(stack, catalog, tenant_facing_only), project=project_name(), stack=stack, config=config,
                             stack_outputs=stack_outputs)
    except TenancyError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a stack program's own failure, reported with its stack
        raise PlanError(f"stack '{stack}': the program failed: {type(exc).__name__}: {exc}") from exc
    return result, time.perf_counter() - start


def _to_stack_plan(stack: str, kind: str, tenant: str | None, model: str | None, result: RunResult,
                   seconds: float) -> StackPlan:
    from tenancy.policycheck import evaluate_stack

    resources = sorted((r.to_json() for r in result.records), key=lambda r: r["urn"])
    plan = StackPlan(name=stack, kind=kind, tenant=tenant, model=model, resources=resources,
                     outputs=result.outputs, seconds=seconds)
    plan.violations = evaluate_stack(plan.to_json())
    return plan


# Worker state: set in the parent before the pool forks, so catalogues are not pickled per task.
_WORKER: dict[str, Any] = {}


def _plan_tenant(stack: str) -> StackPlan:
    catalog: Catalog = _WORKER["catalog"]
    _, tenant_id = naming.parse_stack_name(stack)
    tenant = catalog.tenant(tenant_id)
    result, seconds = run_stack(stack, catalog, {}, _WORKER["stack_outputs"])
    return _to_stack_plan(stack, "tenant", tenant.id, tenant.model.value, result, seconds)


def _plan_unit(stack: str) -> tuple[StackPlan, tuple[dict, list[str]]]:
    """A cell, pool-shard or identity-shard stack (cells layout), with the exports its dependents read."""
    catalog: Catalog = _WORKER["catalog"]
    kind, _, _ = naming.stack_kind(stack)
    result, seconds = run_stack(stack, catalog, {}, _WORKER["stack_outputs"],
                                tenant_facing_only=stack in _WORKER.get("facing_only", ()))
    return _to_stack_plan(stack, kind, None, None, result, seconds), _exports(result)


def _exports(result: RunResult) -> tuple[dict, list[str]]:
    """A stack's outputs as its dependents' StackReferences read them (secrets as the marker, never a value)."""
    return ({k: (SECRET if k in result.secret_outputs else v) for k, v in result.raw_outputs.items()},
            list(result.secret_outputs))


def _plan_tenants(stacks_: list[str], workers: int, done: Callable[[], None] = lambda: None,
                  one: Callable[[str], Any] = _plan_tenant) -> list:
    if workers <= 1 or len(stacks_) < 4:
        results = []
        for s in stacks_:
            results.append(one(s))
            done()
        return results
    ctx = multiprocessing.get_context("fork")
    # Chunks bounded so progress (and its rate) moves steadily on large fleets.
    chunk = max(1, min(32, len(stacks_) // (workers * 4)))
    with ctx.Pool(processes=workers) as pool:
        results = []
        for r in pool.imap(one, stacks_, chunksize=chunk):
            results.append(r)
            done()
        return results


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def plan(catalog: Catalog, env: str, tenants: Iterable[str] | None = None, changed_since: str | None = None,
         workers: int | None = None, progress=None, meter: Meter | None = None) -> PlanResult:
    """Plan the environment's stacks: all of them, only `tenants`, or only those changed since a git ref.
    `progress`: messages; `meter`: stacks done/total, rate and time left (tenancy/progress.py)."""
    from stacks.config import project_name

    start = time.perf_counter()
    say = progress or (lambda msg: None)
    naming.check_env(env)
    config = _platform_config(env)
    from stacks.config import offline_platform_config, require_catalog_fits
    require_catalog_fits(catalog, offline_platform_config(env))
    wanted = list(tenants or [])
    for tid in wanted:
        catalog.tenant(tid)  # unknown ids are bad input before anything runs
    from tenancy.fleet import capacity, placement as fleet, report
    placed = fleet.place(catalog, capacity.load(env))   # a full environment is bad input before anything runs
    platform_stack = naming.stack_name(env)
    tenant_stacks = [naming.stack_name(env, t.id) for t in catalog.stack_tenants]
    include_platform = True
    reasons: dict[str, list[str]] = {}
    removed: dict[str, str] = {}
    unchanged: list[str] = []

    if changed_since is not None:
        from tenancy.changes import changes_since
        ch = changes_since(catalog, env, changed_since)
        reasons = ch.reasons
        removed = ch.removed
        include_platform = platform_stack in reasons
        unchanged = [s for s in [platform_stack, *tenant_stacks] if s not in reasons]
        tenant_stacks = [s for s in tenant_stacks if s in reasons]
    if wanted:
        chosen = {naming.stack_name(env, t) for t in wanted if catalog.tenant(t).has_stack}
        pooled_or_gone = [t for t in wanted if not catalog.tenant(t).has_stack]
        tenant_stacks = [s for s in tenant_stacks if s in chosen]
        # A pooled tenant lives in the platform stack; a tenant stack only needs the platform's outputs.
        include_platform = include_platform and bool(pooled_or_gone)
    if placed.capacity.cells_layout:
        return _plan_cells(catalog, env, config, placed, tenant_stacks, wanted, reasons, removed, unchanged,
                           changed_since, workers, say, meter, start)

    # Tenant stacks need the platform's exports. When the platform stack is in the plan they come from its
    # run; otherwise from the cache of its tenant-facing exports, or from a run of only the components
    # whose exports tenant stacks read.
    stacks_out: list[StackPlan] = []
    meter = meter or Meter(live=False, interval=float("inf"))
    meter.start(int(include_platform) + len(tenant_stacks))
    key = exports_cache_key(env)
    exports = None if include_platform or not tenant_stacks else _read_exports_cache(env, key)
    if exports is None:
        if include_platform:
            say(f"planning platform stack {platform_stack} ({len(catalog.tenants)} tenants)")
        else:
            say(f"computing the exports of platform stack {platform_stack} that tenant stacks read")
        presult, pseconds = run_stack(platform_stack, catalog, config, {}, tenant_facing_only=not include_platform)
        if include_platform:
            sp = _to_stack_plan(platform_stack, "platform", None, None, presult, pseconds)
            sp.reasons = reasons.get(platform_stack, [])
            stacks_out.append(sp)
            meter.advance()
        exports = _write_exports_cache(env, key, presult)
    else:
        say(f"using the cached tenant-facing exports of platform stack {platform_stack}")
    ref = f"{ORGANIZATION}/{project_name()}/{platform_stack}"
    _WORKER.update(catalog=catalog, stack_outputs={ref: exports})
    n = workers or default_workers()
    say(f"planning {len(tenant_stacks)} tenant stack(s) with {min(n, max(1, len(tenant_stacks)))} worker(s)")
    try:
        tenant_plans = _plan_tenants(tenant_stacks, n, meter.advance)
    finally:
        _WORKER.clear()
        meter.finish()
    return _finish(env, catalog, placed, stacks_out, tenant_plans, reasons, removed, unchanged, changed_since, start)


def _plan_cells(catalog: Catalog, env: str, config: dict[str, Any], placed, tenant_stacks: list[str], wanted: list[str],
                reasons: dict[str, list[str]], removed: dict[str, str], unchanged: list[str], changed_since: str | None,
                workers: int | None, say: Callable[[str], None], meter: Meter | None, start: float) -> PlanResult:
    """The cells layout: the global stack, then identity shards, cells and pool shards (each stage reads the
    previous stages' outputs), then tenant stacks. Stacks outside the plan that planned ones read are run for
    their outputs only."""
    from stacks.cells import IDENTITY_TENANTS, unit_stacks

    capacity = placed.capacity
    platform_stack = naming.stack_name(env)
    units = unit_stacks(env, capacity)
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
    stacks_out: list[StackPlan] = []
    meter = meter or Meter(live=False, interval=float("inf"))
    meter.start(len(chosen) + len(tenant_stacks))
    say(f"planning global stack {platform_stack} ({len(catalog.tenants)} tenants, cells layout)")
    presult, pseconds = run_stack(platform_stack, catalog, config, {})
    from stacks.config import project_name
    prefix = f"{ORGANIZATION}/{project_name()}/"
    outputs: dict[str, tuple[dict, list[str]]] = {prefix + platform_stack: _exports(presult)}
    unknown: dict[str, dict[str, str]] = {}
    for tid, p in placed.tenants.items():
        unknown.setdefault(naming.unit_stack(env, p.identity_shard), {})[tid] = UNKNOWN
    for stack, names in unknown.items():
        outputs[prefix + stack] = ({IDENTITY_TENANTS: json.dumps(names, sort_keys=True)}, [])
    if platform_stack in chosen:
        sp = _to_stack_plan(platform_stack, "platform", None, None, presult, pseconds)
        sp.reasons = reasons.get(platform_stack, [])
        stacks_out.append(sp)
        meter.advance()
    n = workers or default_workers()
    try:
        for stage in (run_identity, run_cells, run_pools):
            if not stage:
                continue
            say(f"planning {len(stage)} {naming.stack_kind(stage[0])[0]} stack(s)")
            _WORKER.update(catalog=catalog, stack_outputs=dict(outputs), facing_only=facing_only)
            for sp, exports in _plan_tenants(stage, n, lambda: None, _plan_unit):
                outputs[prefix + sp.name] = exports
                if sp.name in chosen:
                    sp.reasons = reasons.get(sp.name, [])
                    stacks_out.append(sp)
                    meter.advance()
            _WORKER.clear()
        say(f"planning {len(tenant_stacks)} tenant stack(s) with {min(n, max(1, len(tenant_stacks)))} worker(s)")
        _WORKER.update(catalog=catalog, stack_outputs=outputs)
        tenant_plans = _plan_tenants(tenant_stacks, n, meter.advance)
    finally:
        _WORKER.clear()
        meter.finish()
    return _finish(env, catalog, placed, stacks_out, tenant_plans, reasons, removed, unchanged, changed_since, start)


def _finish(env: str, catalog: Catalog, placed, stacks_out: list[StackPlan], tenant_plans: list[StackPlan],
            reasons: dict[str, list[str]], removed: dict[str, str], unchanged: list[str], changed_since: str | None,
            start: float) -> PlanResult:
    """Tenant stacks after the platform side, plan-wide rules, and every stack's placement."""
    from tenancy.fleet import report

    for tp in tenant_plans:
        tp.reasons = reasons.get(tp.name, [])
    stacks_out.extend(tenant_plans)
    _plan_wide_violations(stacks_out)
    for sp in stacks_out:
        sp.placement = report.stack_json(placed, catalog, sp.kind, sp.tenant)
    return PlanResult(environment=env, stacks=stacks_out, removed=removed, unchanged=unchanged,
                      changed_since=changed_since, seconds=time.perf_counter() - start,
                      placement_lines=report.summary_lines(placed, catalog, stacks_out))


# ------------------------------------------------------------------------------------- exports cache

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".cache" / "tenancy"
# What the platform's tenant-facing exports are a function of: its config, the code, the pinned packages.
CACHE_INPUTS = ("Pulumi.yaml", "constraints.txt", "components", "stacks", "tenancy", "policy")


def exports_cache_key(env: str) -> str:
    import hashlib

    h = hashlib.sha256(env.encode())
    files: list[Path] = []
    for name in CACHE_INPUTS:
        p = ROOT / name
        files.extend(sorted(p.rglob("*.py")) + sorted(p.rglob("*.yaml")) if p.is_dir() else [p])
    files.append(ROOT / "stacks" / f"Pulumi.{env}.yaml")
    for f in files:
        if f.exists():
            h.update(f.relative_to(ROOT).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:32]


def _tenant_facing(outputs: dict[str, Any]) -> dict[str, Any]:
    from stacks.contract import TENANT_DIRECTORY
    return {k: v for k, v in outputs.items() if k != TENANT_DIRECTORY}


def _write_exports_cache(env: str, key: str, result: RunResult) -> tuple[dict, list[str]]:
    """The exports tenant stacks read (secrets as the marker: no secret value is written); returns them."""
    raw = {k: (SECRET if k in result.secret_outputs else v) for k, v in _tenant_facing(result.raw_outputs).items()}
    exports = (raw, list(result.secret_outputs))
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = CACHE_DIR / f".platform-{env}.tmp"
        tmp.write_text(json.dumps({"key": key, "outputs": raw, "secretOutputs": exports[1]}))
        tmp.replace(CACHE_DIR / f"platform-{env}.json")
    except OSError:
        pass  # a read-only checkout plans all the same, only slower
    return exports


def _read_exports_cache(env: str, key: str) -> tuple[dict, list[str]] | None:
    try:
        data = json.loads((CACHE_DIR / f"platform-{env}.json").read_text())
    except (OSError, ValueError):
        return None
    return (data["outputs"], data["secretOutputs"]) if data.get("key") == key else None


def _plan_wide_violations(stacks_out: list[StackPlan]) -> None:
    from tenancy.policycheck import evaluate_plan, stack_of_urn

    by_name = {s.name: s for s in stacks_out}
    for v in evaluate_plan([s.to_json() for s in stacks_out]):
        target = by_name.get(stack_of_urn(v["urn"])) or stacks_out[0]
        target.violations.append(v)


# --------------------------------------------------------------------------------------------- writing

def manifests(stack: StackPlan) -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of a stack, as file name -> manifest."""
    out: dict[str, dict[str, Any]] = {}
    for r in stack.resources:
        if not r["type"].startswith("kubernetes:") or r["type"].startswith(K8S_NOT_OBJECTS):
            continue
        inputs = r["inputs"]
        if "apiVersion" not in inputs or "kind" not in inputs:
            continue
        meta = inputs.get("metadata") or {}
        ns = meta.get("namespace")
        fname = "-".join(p for p in (inputs["kind"].lower(), ns, meta.get("name") or r["name"]) if p) + ".yaml"
        manifest = {"apiVersion": inputs["apiVersion"], "kind": inputs["kind"], "metadata": meta,
                    **{k: v for k, v in inputs.items() if k not in ("apiVersion", "kind", "metadata")}}
        _redact_secret_maps(manifest)
        if fname in out:
            raise PlanError(f"stack '{stack.name}': two Kubernetes objects would be written as {fname}")
        out[fname] = manifest
    return out


def _redact_secret_maps(manifest: dict[str, Any]) -> None:
    """A Secret's data is one secret value to the engine; the manifest keeps the shape, says what was held back."""
    if manifest.get("kind") != "Secret":
        return
    redacted = [k for k in ("data", "stringData") if manifest.get(k) == SECRET]
    for key in redacted:
        manifest[key] = {}
    if redacted:
        meta = dict(manifest.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), "tenancy.io/redacted": ",".join(redacted)}
        manifest["metadata"] = meta


def write(result: PlanResult, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mdir = out / "manifests"
    if mdir.exists():
        shutil.rmtree(mdir)
    for stack in result.stacks:
        files = manifests(stack)
        if not files:
            continue
        sdir = mdir / stack.name
        sdir.mkdir(parents=True, exist_ok=True)
        for fname, manifest in files.items():
            (sdir / fname).write_text(yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False))
    path = out / "plan.json"
    path.write_text(json.dumps(result.to_json(), indent=1, sort_keys=False) + "\n")
    return path


def summary(result: PlanResult) -> str:
    rows = [("STACK", "KIND", "TENANT", "MODEL", "RESOURCES", "VIOLATIONS")]
    for s in result.stacks:
        mand = len(s.mandatory_violations)
        adv = len(s.violations) - mand
        viol = str(mand) + (f" (+{adv} advisory)" if adv else "")
        rows.append((s.name, s.kind, s.tenant or "-", s.model or "-", str(len(s.resources)), viol))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    total = sum(len(s.resources) for s in result.stacks)
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


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)

