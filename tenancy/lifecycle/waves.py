"""Rolling out in waves: which stacks go together, in what order, and what must hold before the next wave.

Waves are declared in `rollout.yaml` (beside tenants.yaml; without it: the platform stack, then every
tenant stack):

    version: 1
    pause_seconds: 300            # between waves: canaries take real traffic before the next wave starts
    health: {outputs: true, endpoints: true, path: /healthz, timeout_seconds: 10, attempts: 3}
    waves:
      - {name: canary, tenants: [stark]}              # these tenants' stacks
      - {name: pool, platform: true}                  # the platform stack (pooled tenants live in it)
      - {name: namespace, models: [namespace]}        # tenant stacks of these models
      - {name: dedicated, models: [dedicated]}
    environments:
      dev: {pause_seconds: 0}                         # any key above, per environment

A stack belongs to the first wave that selects it; stacks no wave selects form a last wave, `remaining`. A
stack never runs before what it reads: on a first rollout, a platform-side stack that has never been deployed
moves into the first wave with a stack that reads it (`bring_forward`; the shipped canary wave reads the
platform stack declared after it).
Waves are numbered from 1 as declared, so `tenancy up --from-wave N` means the same wave in every run.
Between waves the rollout pauses, then a health gate (pluggable: `Gate`) checks the wave: the stacks'
own outputs, and the application's health endpoint on each of the wave's hosts, found through the
tenant directory. The first failed stack or gate halts the rollout.
"""

from __future__ import annotations

import difflib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tenancy import naming
from tenancy.catalog import Catalog, State
from tenancy.engine import Engine, EngineError
from tenancy.errors import ConfigError

REMAINING = "remaining"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthSpec(_Strict):
    outputs: bool = True
    endpoints: bool = True
    path: str = Field("/healthz", pattern=r"^/[\x21-\x7e]*$")
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    attempts: int = Field(3, ge=1, le=20)


class WaveSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")
    platform: bool = False
    tenants: tuple[str, ...] = ()
    models: tuple[Literal["namespace", "dedicated"], ...] = ()
    stacks: tuple[str, ...] = ()            # explicit stack names (for kinds of stack without a selector yet)
    pause_seconds: float | None = Field(None, ge=0, le=86400)


class RolloutSpec(_Strict):
    version: Literal[1] = 1
    pause_seconds: float = Field(0, ge=0, le=86400)
    health: HealthSpec = HealthSpec()
    waves: tuple[WaveSpec, ...] = Field(min_length=1)
    environments: dict[str, dict[str, Any]] = {}


DEFAULT = RolloutSpec(waves=(WaveSpec(name="platform", platform=True), WaveSpec(name="tenants", models=("namespace", "dedicated"))),
                      health=HealthSpec(outputs=True, endpoints=False))


def load(path: str | Path | None, env: str, required: bool = False) -> RolloutSpec:
    """The rollout of `env` from `path` (absent and not `required`: the platform stack, then the tenants)."""
    if path is None or (not Path(path).exists() and not required):
        return DEFAULT
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found; pass --waves FILE (see README, Waves)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping with `waves:`")
    override = (raw.get("environments") or {}).get(env) if isinstance(raw.get("environments"), dict) else None
    if override is not None and not isinstance(override, dict):
        raise ConfigError(f"{p}: environments.{env} must be a mapping of keys to override")
    merged = {**raw, **(override or {})}
    try:
        return RolloutSpec.model_validate(merged)
    except ValidationError as exc:
        lines = [f"{p}: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


@dataclass
class Wave:
    number: int
    name: str
    stacks: list[str]
    pause: float


def assign(spec: RolloutSpec, catalog: Catalog, env: str, order: list[str], where: str = "rollout.yaml") -> list[Wave]:
    """The stacks of `order` (affected, platform first) in their waves; empty waves are kept (numbering)."""
    by_id = {t.id: t for t in catalog.tenants}
    problems = []
    for i, w in enumerate(spec.waves):
        for tid in w.tenants:
            if tid not in by_id:
                close = difflib.get_close_matches(tid, list(by_id), n=1)
                problems.append(f"{where}: waves[{i}] '{w.name}': tenant '{tid}' is not in the catalogue"
                                + (f"; did you mean '{close[0]}'?" if close else ""))
            elif not by_id[tid].has_stack:
                problems.append(f"{where}: waves[{i}] '{w.name}': tenant '{tid}' has no stack of its own "
                                f"({by_id[tid].model.value}, {by_id[tid].state.value}); it rolls out with the platform stack")
    if problems:
        raise ConfigError("\n".join(problems))
    waves = [Wave(i + 1, w.name, [], spec.pause_seconds if w.pause_seconds is None else w.pause_seconds)
             for i, w in enumerate(spec.waves)]
    rest = Wave(len(waves) + 1, REMAINING, [], spec.pause_seconds)
    for stack in order:
        _, tid = naming.parse_stack_name(stack)
        tenant = by_id.get(tid) if tid else None
        for w, ws in zip(spec.waves, waves):
            if (stack in w.stacks or (w.platform and naming.stack_kind(stack)[0] != naming.TENANT_STACK)
                    or (tid in w.tenants)
                    or (tenant is not None and tenant.model.value in w.models)):
                ws.stacks.append(stack)
                break
        else:
            rest.stacks.append(stack)
    return waves + ([rest] if rest.stacks else [])


@dataclass(frozen=True)
class Early:
    """A platform-side stack not deployed yet, moved into the first wave with a stack that reads it."""

    stack: str
    wave: int           # where it runs now
    declared: int       # the wave rollout.yaml put it in
    reader: str


@dataclass(frozen=True)
class Unready:
    """A stack the rollout would run before what it reads has ever been deployed, which this rollout cannot fix."""

    stack: str          # the stack not deployed
    reader: str
    wave: int | None    # its wave, skipped by --from-wave; None: not in this rollout


def bring_forward(plan: list[Wave], needs: Callable[[str], list[str]], deployed: Callable[[str], bool],
                  from_wave: int = 1) -> tuple[list[Early], list[Unready]]:
    """Make every wave find what it reads deployed. A stack reads platform-side stacks (tenancy/topology.py
    `needs`); when one of them is declared in a later wave and has never been deployed -- the first rollout, with a
    canary wave before the platform's -- it moves into the reader's wave, where platform-side stacks go first. Once
    deployed, each stays in its declared wave (a canary takes new code before the platform does). What the rollout
    does not hold, or holds in a wave `from_wave` skips, is returned as unready: nothing can fix it here.
    `plan` is changed in place; `deployed` is asked at most once per stack, and only about stacks out of order."""
    where = {s: w.number for w in plan for s in w.stacks}
    by_number = {w.number: w for w in plan}
    known: dict[str, bool] = {}
    early: list[Early] = []
    unready: dict[str, Unready] = {}
    for wave in plan:
        if wave.number < from_wave:
            continue
        for stack in list(wave.stacks):
            for need in needs(stack):
                at = where.get(need)
                if at is not None and from_wave <= at <= wave.number:
                    continue        # runs in an earlier wave, or first in this one
                if need not in known:
                    known[need] = deployed(need)
                if known[need]:
                    continue
                if at is not None and at > wave.number:
                    by_number[at].stacks.remove(need)
                    wave.stacks.append(need)
                    where[need] = wave.number
                    early.append(Early(need, wave.number, at, stack))
                elif need not in unready:
                    unready[need] = Unready(need, stack, at)
    return early, list(unready.values())


# ------------------------------------------------------------------------------------------- gates

class Gate(Protocol):
    def check(self, wave: Wave, outputs: dict[str, dict[str, Any]], catalog: Catalog, env: str) -> list[str]:
        """Problems found after `wave` (empty: go on). `outputs`: what each updated stack returned."""
        ...


Fetch = Callable[[str, float], int]   # (url, timeout) -> HTTP status; raises OSError when unreachable


def http_status(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class HealthGate:
    """The wave's stacks report their outputs, and each host of the wave's active tenants (from the tenant
    directory) answers its health path with 2xx, within `attempts` tries."""

    engine: Engine
    spec: HealthSpec
    fetch: Fetch = http_status
    sleep: Callable[[float], None] = lambda s: None
    checked: list[str] = field(default_factory=list)     # URLs fetched, in order

    def check(self, wave: Wave, outputs: dict[str, dict[str, Any]], catalog: Catalog, env: str) -> list[str]:
        problems: list[str] = []
        platform = naming.stack_name(env)
        seen: dict[str, dict[str, Any]] = {}
        for stack in wave.stacks:
            try:
                out = outputs.get(stack) or self.engine.outputs(stack)
            except EngineError as exc:
                problems.append(f"{stack}: its outputs cannot be read: {exc}")
                continue
            seen[stack] = out
            if self.spec.outputs:
                problems += self._check_outputs(stack, out, catalog, platform)
        if self.spec.endpoints and not problems:
            problems += self._check_endpoints(wave, seen, catalog, env)
        return problems

    def _check_outputs(self, stack: str, out: dict[str, Any], catalog: Catalog, platform: str) -> list[str]:
        from stacks.contract import REQUIRED_BY_TENANTS, TENANT_DIRECTORY

        kind, env, unit = naming.stack_kind(stack)
        if kind != naming.TENANT_STACK:
            required, holds = _unit_expectations(stack, kind, env, unit, out, catalog, REQUIRED_BY_TENANTS)
            missing = [k for k in required if out.get(k) in (None, "")]
            if missing:
                return [f"{stack}: outputs missing: {', '.join(missing)}"]
            if holds is None:
                return []
            directory = _directory(out.get(TENANT_DIRECTORY))
            absent = [tid for tid in holds if tid not in directory]
            return [f"{stack}: the tenant directory lacks {len(absent)} tenant(s): {', '.join(absent[:5])}"] if absent else []
        _, tid = naming.parse_stack_name(stack)
        if out.get("tenant") != tid or not out.get("hostnames"):
            return [f"{stack}: outputs do not describe tenant '{tid}' (tenant={out.get('tenant')!r}, "
                    f"hostnames={out.get('hostnames')!r})"]
        return []

    def _check_endpoints(self, wave: Wave, seen: dict[str, dict[str, Any]], catalog: Catalog, env: str) -> list[str]:
        from stacks.contract import TENANT_DIRECTORY

        platform = naming.stack_name(env)
        try:
            from tenancy.lifecycle import record as rec
            directory = rec.read(self.engine, env).directory
        except EngineError as exc:
            return [f"{platform}: the tenant directory cannot be read: {exc}"]
        tenants: list[str] = []
        for stack in wave.stacks:
            kind, _, tid = naming.stack_kind(stack)
            if kind == naming.TENANT_STACK:
                tenants.append(tid)
            elif kind == naming.POOL_STACK:
                tenants += sorted(_directory(seen.get(stack, {}).get(TENANT_DIRECTORY)))
        hosts: list[str] = []
        for tid in tenants:
            entry = directory.get(tid) or {}
            if entry.get("state", State.ACTIVE.value) != State.ACTIVE.value:
                continue   # suspended tenants' routes are removed on purpose
            hosts += [h for h in entry.get("hostnames") or [] if h not in hosts]
        problems = []
        for host in hosts:
            url = f"https://{host}{self.spec.path}"
            last = ""
            for attempt in range(self.spec.attempts):
                self.checked.append(url)
                try:
                    status = self.fetch(url, self.spec.timeout_seconds)
                    if 200 <= status < 300:
                        last = ""
                        break
                    last = f"answered {status}"
                except OSError as exc:
                    last = f"unreachable: {exc}"
                if attempt + 1 < self.spec.attempts:
                    self.sleep(min(30.0, 2.0 ** attempt * 5))
            if last:
                problems.append(f"{url} {last} ({self.spec.attempts} attempt(s))")
        return problems


def _unit_expectations(stack: str, kind: str, env: str, unit: str | None, out: dict[str, Any], catalog: Catalog,
                       required_by_tenants: tuple[str, ...]) -> tuple[tuple[str, ...], list[str] | None]:
    """(outputs a platform-side stack must have, tenants its directory must list or None)."""
    from stacks import contract

    if kind == naming.ENV_STACK:
        return tuple(k for k in required_by_tenants if k in _ENV_FACTS), None
    if kind == naming.IDENTITY_STACK:
        return ("identityTenants",), None
    from tenancy.fleet import capacity as fleet_capacity
    from tenancy.fleet.placement import place

    placed = place(catalog, fleet_capacity.load(env)).tenants
    key = "cell" if kind == naming.CELL_STACK else "pool_shard"
    holds = [tid for tid, p in placed.items() if getattr(p, key) == unit]
    cell_facts = tuple(k for k in required_by_tenants if k not in _ENV_FACTS)
    return ((*cell_facts, contract.TENANT_DIRECTORY) if kind == naming.CELL_STACK else (contract.TENANT_DIRECTORY,)), holds


# What the global stack exports of REQUIRED_BY_TENANTS (the rest is each cell's).
_ENV_FACTS = ("environment", "gcpProject", "region", "baseDomain", "networkId", "appChart", "appChartVersion")


def _directory(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
