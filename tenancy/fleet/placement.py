"""Where each tenant lives: its cell (namespace tenants), pool shard (pooled tenants) and data project
(namespace tenants' Cloud SQL instances). Dedicated tenants have their own cluster and need none.

Rules, in the order they apply:

1. **Sticky.** A tenant with a deployed placement (the platform stack's deployed record, carried as
   `Catalog.placements`) stays there. Nothing in tenants.yaml, and no other tenant, moves it; only
   `tenancy place` does (tenancy/operations/relocate.py). A deployed tenant counts against its unit even when the
   unit's capacity was lowered below its load since.
2. **Pinned.** A new tenant's `placement:` in tenants.yaml is honoured when the unit is declared and has
   room; otherwise the tenant is refused (never silently placed elsewhere).
3. **Placed.** Every other new tenant goes to the lowest-numbered unit with room for it: cells and
   shards fill in order, so a new cell or shard is used once the earlier ones are full and a freed slot is
   reused first. Tenants are taken in order of their ids, so the result does not depend on the order of
   tenants.yaml, and a new tenant only ever takes free room: it cannot move a placed one.

Room: a cell holds `tenancy:cellCapacity` namespaces, a pool shard `tenancy:poolShardCapacity` pooled
tenants, a data project `tenancy:dataProjectInstances` Cloud SQL instances (a tenant takes one per database
of its plan: three for `standard`). The platform project also holds each pool shard's instance and the
instances of dedicated tenants without a project of their own (with their read replicas).

When new tenants do not fit, placement fails as a whole, naming the tenants, the units that are full and the
key in stacks/Pulumi.<env>.yaml that adds capacity: nothing is planned or applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple

from tenancy import envconfig, naming
from tenancy.catalog import MAX_PROBLEMS, PLACEMENT_KEYS, Catalog, Model, Tenant, entry_lines
from tenancy.errors import Problem, TenancyError
from tenancy.fleet.capacity import Capacity, load as load_capacity

# TenantPlacement field -> key in the deployed record, plan.json and the tenant directory.
JSON_KEYS = {"cell": "cell", "pool_shard": "poolShard", "data_project": "dataProject", "identity_shard": "identityShard"}
# TenantPlacement field -> `tenancy place` option.
OPTIONS = {"cell": "--cell", "pool_shard": "--pool-shard", "data_project": "--data-project"}


class PlacementError(TenancyError):
    """New tenants that cannot be placed (a full environment, or a pin that cannot be honoured)."""

    exit_code = 2

    def __init__(self, problems: list[str], found: list[Problem] | None = None):
        self.problems = list(problems)
        # The same problems as the catalogue's own (file:line: tenant: field: message), for `tenancy validate`.
        self.found = list(found or [])
        super().__init__("\n".join(self.problems))


class TenantPlacement(NamedTuple):
    """A tenant's units (None where its model has none). A tuple: a large fleet creates one per tenant."""

    cell: str | None = None
    pool_shard: str | None = None
    data_project: str | None = None
    identity_shard: str | None = None     # the stack holding its Identity Platform tenant

    def to_json(self) -> dict[str, str]:
        return {JSON_KEYS[k]: v for k, v in (("cell", self.cell), ("pool_shard", self.pool_shard),
                                             ("data_project", self.data_project),
                                             ("identity_shard", self.identity_shard)) if v}

    @classmethod
    def from_json(cls, data: Mapping[str, str] | None) -> "TenantPlacement":
        data = data or {}
        return cls(**{k: data[j] for k, j in JSON_KEYS.items() if isinstance(data.get(j), str)})

    def describe(self) -> str:
        parts = []
        if self.cell:
            parts.append(self.cell)
        if self.pool_shard:
            parts.append(self.pool_shard)
        if self.data_project:
            parts.append(f"data project {self.data_project}")
        return ", ".join(parts)


@dataclass(frozen=True)
class PinConflict:
    """A deployed tenant whose pin in tenants.yaml names another unit than the one it is in."""

    tenant: str
    key: str            # TenantPlacement field
    pinned: str
    deployed: str

    @property
    def message(self) -> str:
        return (f"tenant '{self.tenant}' is pinned to {self.pinned} (placement.{self.key}) in tenants.yaml but deployed "
                f"in {self.deployed}; a deploy never moves a placed tenant")

    @property
    def command(self) -> str:
        return f"tenancy place {self.tenant} {OPTIONS[self.key]} {self.pinned}"


@dataclass
class Units:
    """The units of one kind (cells, pool shards or data projects) and how much each holds."""

    kind: str                      # cells | pool_shards | data_projects
    key: str                       # TenantPlacement field: cell | pool_shard | data_project
    names: list[str]
    capacity: int
    unit: str                      # "cell", "pool shard", "data project"
    holds: str                     # what the capacity counts
    load: dict[str, int] = field(default_factory=dict)
    _next: dict[int, int] = field(default_factory=dict)   # cost -> first index that may still have room

    def __post_init__(self) -> None:
        self.load = {n: 0 for n in self.names}
        self.index = {n: i for i, n in enumerate(self.names)}

    def room(self, name: str) -> int:
        return self.capacity - self.load[name]

    def take_first(self, cost: int) -> str | None:
        """The lowest-numbered unit with room for `cost`, charged; None when none has room. Loads
        only grow while new tenants are placed, so a unit without room for `cost` never gets it back."""
        i = self._next.get(cost, 0)
        while i < len(self.names) and self.room(self.names[i]) < cost:
            i += 1
        self._next[cost] = i
        if i == len(self.names):
            return None
        self.load[self.names[i]] += cost
        return self.names[i]


@dataclass
class Placement:
    capacity: Capacity
    tenants: dict[str, TenantPlacement]          # every tenant in the directory (dedicated: empty)
    decided: dict[str, str]                      # tenant -> deployed | pinned | placed | own (dedicated)
    units: dict[str, Units]                      # TenantPlacement field -> its units, with their load
    conflicts: list[PinConflict]

    def to_json(self) -> dict[str, dict[str, str]]:
        """What the deployed record keeps: tenant id -> {"cell", "poolShard", "dataProject"}."""
        return {tid: j for tid, p in self.tenants.items() if (j := p.to_json())}

    def usage(self) -> list[dict]:
        """Every unit with its load: [{"kind", "unit", "used", "capacity"}]."""
        return [{"kind": u.kind, "unit": name, "used": u.load[name], "capacity": u.capacity}
                for u in self.units.values() for name in u.names]


def cost(t: Tenant, key: str) -> int:
    """What one tenant takes of a unit: a namespace, a pooled slot, or its Cloud SQL instances."""
    return len(t.plan.databases) if key == "data_project" else 1


def _units(capacity: Capacity) -> dict[str, Units]:
    return {
        # A cell is also the home of dedicated tenants (their directory entries and records).
        "cell": Units("cells", "cell", capacity.cell_names, capacity.cell_capacity, "cell", "tenants"),
        "pool_shard": Units("pool_shards", "pool_shard", capacity.pool_shard_names, capacity.pool_shard_capacity,
                            "pool shard", "pooled tenants"),
        "data_project": Units("data_projects", "data_project", list(capacity.data_projects),
                              capacity.data_project_instances, "data project", "Cloud SQL instances"),
    }


def _fixed_platform_load(catalog: Catalog, capacity: Capacity) -> int:
    """Cloud SQL instances in the platform project that placement does not choose: one per pool shard, and
    dedicated tenants without a project of their own (each database with its read replicas)."""
    load = capacity.pool_shards
    for t in catalog.tenants:
        if t.plan.model is Model.DEDICATED and t.in_directory and not (t.dedicated and t.dedicated.project):
            replicas = t.dedicated.read_replicas if t.dedicated else 0
            load += len(t.plan.databases) * (1 + replicas)
    return load


def place(catalog: Catalog, capacity: Capacity) -> Placement:
    """Every tenant's placement (module docstring); raises PlacementError naming what cannot be placed."""
    units = _units(capacity)
    units["data_project"].load[capacity.platform_project] += _fixed_platform_load(catalog, capacity)
    deployed = catalog.placements
    chosen: dict[str, dict[str, str]] = {}
    decided: dict[str, str] = {}
    # (tenant id or "" for the environment, message, field of a pin or None, the tenant whose entry it is shown at)
    problems: list[tuple[str, str, str | None, str]] = []
    refused: set[tuple[str, str]] = set()         # (tenant, key) already reported: not placed elsewhere
    todo: list[tuple[Tenant, list[str]]] = []     # tenants with a unit still to choose, and which

    # 1. Sticky: deployed tenants stay where they are (counting needs no order).
    stranded: dict[tuple[str, str], list[str]] = {}   # (key, unit) -> deployed tenants in a unit that is gone
    for t in catalog.tenants:
        if not t.in_directory:
            continue
        keys = placement_keys(t.plan.model, capacity)
        mine: dict[str, str] = {}
        chosen[t.id] = mine
        if not keys:
            decided[t.id] = "own"
            continue
        was = deployed.get(t.id)
        missing = []
        for key in keys:
            name = was.get(JSON_KEYS[key]) if was else None
            if not name:
                missing.append(key)
                continue
            u = units[key]
            if name not in u.index:
                stranded.setdefault((key, name), []).append(t.id)
                refused.add((t.id, key))
            else:
                u.load[name] += cost(t, key)
                mine[key] = name
                decided[t.id] = "deployed"
        if missing:
            todo.append((t, missing))
    for (key, name), ids in sorted(stranded.items()):
        ids.sort()
        problems.append((ids[0], _stranded(units[key], name, ids, capacity), None, ids[0]))
    # New tenants (and new dimensions of deployed ones) are taken in order of their ids, never of the file.
    todo.sort(key=lambda item: item[0].id)

    # 2. Pinned new tenants (or a tenant's dimension that is new, e.g. a cell after a tier move).
    for t, missing in todo:
        pins = t.placement.pins() if t.placement else {}
        for key in missing:
            if key not in pins:
                continue
            u, name, c = units[key], pins[key], cost(t, key)
            why = None
            if name not in u.index:
                why = _unknown(u, name, capacity)
            elif u.room(name) < c:
                why = (f"{u.unit} {name} is full ({u.load[name]:,} of {u.capacity:,} {u.holds}"
                       f"{f'; the tenant needs {c}' if c > 1 else ''}); choose another {u.unit} (or leave it to "
                       f"placement), or raise {_capacity_key(key)} in {capacity.where}")
            if why:
                problems.append((t.id, why, f"placement.{key}", t.id))
                refused.add((t.id, key))
                continue
            u.load[name] += c
            chosen[t.id][key] = name
            decided.setdefault(t.id, "pinned")

    # 3. Everyone else: the lowest-numbered unit with room.
    waiting: dict[str, list[Tenant]] = {key: [] for key in units}
    for t, missing in todo:
        for key in missing:
            if key in chosen[t.id] or (t.id, key) in refused:
                continue
            name = units[key].take_first(cost(t, key))
            if name is None:
                waiting[key].append(t)
            else:
                chosen[t.id][key] = name
                decided.setdefault(t.id, "placed")
    for key, ts in waiting.items():
        if ts:
            problems.append(("", _full(units[key], ts, capacity), None, ts[0].id))
    _identity_shards(catalog, capacity, chosen, problems)
    if problems:
        raise _refusal(catalog, problems)

    return Placement(capacity=capacity, tenants={tid: TenantPlacement(**c) for tid, c in sorted(chosen.items())},
                     decided=decided, units=units, conflicts=pin_conflicts(catalog))


def _identity_shards(catalog: Catalog, capacity: Capacity, chosen: dict[str, dict[str, str]],
                     problems: list[tuple[str, str, str | None, str]]) -> None:
    """Every tenant in the directory has an identity shard: the deployed one, else a stable hash of its id. A
    tier change or a move between cells never changes it, so a user pool is never re-homed."""
    known = set(capacity.identity_shard_names)
    stranded: dict[str, list[str]] = {}
    for tid, mine in chosen.items():
        was = (catalog.placements.get(tid) or {}).get(JSON_KEYS["identity_shard"])
        if was and was not in known:
            stranded.setdefault(was, []).append(tid)
            continue
        mine["identity_shard"] = was or capacity.identity_shard_of(tid)
    for shard, ids in sorted(stranded.items()):
        ids.sort()
        problems.append((ids[0], f"{len(ids):,} deployed tenant(s) ({_names(ids[:3])}{' …' if len(ids) > 3 else ''}) have their Identity Platform tenants in "
                                 f"{shard}, which {capacity.where} no longer declares (tenancy:identityShards = "
                                 f"{capacity.identity_shards}); identity shards are never removed: raise "
                                 f"tenancy:identityShards back to at least {naming.unit_index(shard)}", None, ids[0]))


def _refusal(catalog: Catalog, problems: list[tuple[str, str, str | None, str]]) -> PlacementError:
    """The error of a placement that failed: each problem as a line, and as a catalogue problem at its line (a pin at
    the tenant's `placement:`; what concerns the environment at the entry of the first tenant it names, as
    `placement`)."""
    ordered = sorted(problems, key=lambda p: (p[0] == "", p[0]))[:MAX_PROBLEMS]
    pins = entry_lines(catalog.path, "placement") if any(field for _, _, field, _ in ordered) else {}
    ids = entry_lines(catalog.path, "id") if any(field is None for _, _, field, _ in ordered) else {}
    texts, found = [], []
    for tid, message, field, anchor in ordered:
        if field is not None:
            line = pins.get(tid)
            texts.append(f"{f'{catalog.path}:{line}' if line else catalog.path}: tenant '{tid}': {field}: {message}")
            found.append(Problem(str(catalog.path), line, f"tenant '{tid}'", field, message))
        else:
            texts.append(message)
            found.append(Problem(str(catalog.path), ids.get(anchor), None, "placement", message))
    if len(problems) > MAX_PROBLEMS:
        texts.append(f"stopped after {MAX_PROBLEMS} problems (the limit); fix these and run again")
    return PlacementError(texts, found)


def fit(catalog: Catalog, environment: str) -> tuple[Placement | None, list[Problem]]:
    """(the catalogue's placement or None, every problem of its fit to `environment`), each problem at its line like
    the catalogue's own: the rules that need the platform config (`envconfig.check_catalog`), and whether its
    capacity holds every tenant and each pin. `tenancy validate` and `tenancy plan` report them with the file's
    problems; the placement is the one a plan uses."""
    problems = envconfig.check_catalog(catalog, envconfig.offline_platform_config(environment))
    try:
        placed = place(catalog, load_capacity(environment))
    except PlacementError as exc:
        return None, problems + exc.found
    return placed, problems


def placement_keys(model: Model, capacity: Capacity) -> tuple[str, ...]:
    """The units a tenant of `model` is placed in. A dedicated tenant also has a home cell: its directory entry
    and deployed record live in that cell's stack (it takes one of the cell's places)."""
    if model is Model.DEDICATED:
        return ("cell",)
    return PLACEMENT_KEYS[model]


def pin_conflicts(catalog: Catalog) -> list[PinConflict]:
    """Deployed tenants whose pin in the catalogue says another unit: reported, never acted on."""
    out = []
    for t in catalog.tenants:
        if t.placement is None:
            continue
        was = catalog.placements.get(t.id) or {}
        pins = t.placement.pins()
        for key, pinned in sorted(pins.items()):
            deployed = was.get(JSON_KEYS[key])
            if deployed and deployed != pinned and key in PLACEMENT_KEYS[t.model]:
                out.append(PinConflict(t.id, key, pinned, deployed))
    return out


def record_placements(path: str, catalog: Catalog, platform_project: str) -> dict[str, dict[str, str]]:
    """The placements of a deployed record saved to a file (`pulumi stack output deployedRecord -s <env>`,
    with or without --json), for offline plans and PR comments that should show tenants where they are."""
    import json
    from pathlib import Path

    from tenancy.errors import ConfigError

    try:
        data = json.loads(Path(path).read_text())
        if isinstance(data, str):
            data = json.loads(data)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}; save it with `pulumi stack output deployedRecord -s <env> > "
                          f"{path}`") from None
    except ValueError:
        data = None
    if not isinstance(data, dict) or "catalog" not in data:
        raise ConfigError(f"{path}: not a deployed record (the platform stack's deployedRecord output, "
                          "`pulumi stack output deployedRecord -s <env>`)")
    placements = data.get("placements")
    if placements is None:
        return legacy(catalog, platform_project)
    if not isinstance(placements, dict) or not all(isinstance(v, dict) for v in placements.values()):
        raise ConfigError(f"{path}: its placements are not {{tenant: {{cell, poolShard, dataProject}}}}")
    return placements


def legacy(catalog: Catalog, platform_project: str) -> dict[str, dict[str, str]]:
    """The placements of a deployment recorded before placement existed: one shared cluster, one pooled
    instance and the platform project, which are cell 1, pool shard 1 and the first data project."""
    out: dict[str, dict[str, str]] = {}
    for t in catalog.tenants:
        if not t.in_directory:
            continue
        if t.model is Model.POOLED:
            out[t.id] = {"poolShard": naming.pool_shard(1)}
        elif t.model is Model.NAMESPACE:
            out[t.id] = {"cell": naming.cell(1), "dataProject": platform_project}
    return out


# ---------------------------------------------------------------------------------------------- messages

def _names(names: Iterable[str]) -> str:
    names = list(names)
    if len(names) > 3 and all(naming.UNIT_ID.fullmatch(n) for n in names):
        return f"{names[0]} .. {names[-1]}"
    return ", ".join(names) or "none"


def _capacity_key(key: str) -> str:
    return {"cell": "tenancy:cellCapacity", "pool_shard": "tenancy:poolShardCapacity",
            "data_project": "tenancy:dataProjectInstances"}[key]


def _count_key(key: str) -> str:
    return {"cell": "tenancy:cells", "pool_shard": "tenancy:poolShards", "data_project": "tenancy:dataProjects"}[key]


def _unknown(u: Units, name: str, capacity: Capacity) -> str:
    if u.key == "data_project":
        return (f"'{name}' is not a data project of '{capacity.environment}': {capacity.where} has "
                f"{_names(u.names)} (tenancy:gcpProject, then tenancy:dataProjects); use one of those or add it to "
                "tenancy:dataProjects")
    return (f"{name} is not a {u.unit} of '{capacity.environment}': {capacity.where} declares {_names(u.names)} "
            f"({_count_key(u.key)}: {len(u.names)}); use one of those or raise {_count_key(u.key)}")


def _stranded(u: Units, name: str, ids: list[str], capacity: Capacity) -> str:
    """Deployed tenants recorded in a unit the config no longer declares."""
    who = ", ".join(ids[:5]) + (f" and {len(ids) - 5:,} more" if len(ids) > 5 else "")
    held = f"{len(ids):,} deployed tenant(s) ({who})"
    if u.key == "data_project":
        fix = "add it to tenancy:dataProjects again"
    else:
        fix = f"declare it again ({_count_key(u.key)}: {naming.unit_index(name)} or more)"
    return (f"{u.unit} {name} holds {held}, but {capacity.where} no longer declares it (it declares "
            f"{_names(u.names)}): a {u.unit} that holds tenants cannot be removed; {fix}, or move its tenants first "
            "with `tenancy place`")


def _full(u: Units, waiting: list[Tenant], capacity: Capacity) -> str:
    """The environment is full for one kind of unit: who waits, what is full, which key adds capacity."""
    ids = ", ".join(t.id for t in waiting[:5]) + (f" and {len(waiting) - 5:,} more" if len(waiting) > 5 else "")
    need = sum(cost(t, u.key) for t in waiting)
    used = sum(u.load.values())
    message = (f"environment '{capacity.environment}' is full: {len(waiting):,} new tenant(s) need a {u.unit} ({ids}), "
               f"and {_names(u.names)} hold{'s' if len(u.names) == 1 else ''} {used:,} of {u.capacity * len(u.names):,} "
               f"{u.holds}")
    message += f" ({need:,} more needed)" if u.key == "data_project" else ""
    if u.key == "data_project":
        more = max(1, math.ceil(need / u.capacity))
        return (f"{message}. Add capacity in {capacity.where}: add {more} project id(s) to tenancy:dataProjects (each "
                f"holds {_capacity_key(u.key)} = {u.capacity:,} {u.holds}), or raise {_capacity_key(u.key)}")
    more = max(1, math.ceil(need / u.capacity))
    return (f"{message}. Add capacity in {capacity.where}: raise {_count_key(u.key)} from {len(u.names)} to "
            f"{len(u.names) + more} (each {u.unit} holds {_capacity_key(u.key)} = {u.capacity:,} {u.holds}), or raise "
            f"{_capacity_key(u.key)}")
