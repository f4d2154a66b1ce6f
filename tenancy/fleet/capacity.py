"""An environment's capacity: its cells, pool shards and tenant-data projects, and what each can hold.

Declared in the platform stack's config, `stacks/Pulumi.<env>.yaml` (defaults in `Pulumi.yaml`):

    tenancy:cells                   shared GKE clusters hosting namespace tenants: cell-1 .. cell-<n>
    tenancy:cellCapacity            tenant namespaces per cell (a planning figure: 100-500 is common)
    tenancy:poolShards              pooled Cloud SQL instances holding pooled tenants: pool-1 .. pool-<n>
    tenancy:poolShardCapacity       pooled tenants per shard (bounded by the instance's connection budget)
    tenancy:dataProjects            GCP projects for namespace tenants' Cloud SQL instances, after the platform
                                    project (always the first data project)
    tenancy:dataProjectInstances    Cloud SQL instances per project (Google's default quota is about 1,000)
    tenancy:identityShards          stacks holding the Identity Platform tenants: a tenant's shard is a
                                    stable hash of its id, kept once deployed
    tenancy:cellNetworks            cells 2 and up: each cell's subnet, pod and service ranges
                                    and control-plane range ({cell-2: {networkCidr, podsCidr, servicesCidr,
                                    masterCidr}}); cell 1 uses the environment's own ranges

Adding capacity is a config change: another cell, shard or project. Existing tenants never move because
of it (tenancy/fleet/placement.py).

Every environment has one layout: a global stack `<env>` plus a stack of its own for every declared unit
(stacks/cells.py); a small environment has one of each. An environment deployed as one platform stack (the
layout of earlier versions) moves to it with `tenancy migrate` (tenancy/operations/migrate.py); `tenancy:layout`,
that version's switch, is accepted only as `cells`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from tenancy import envconfig, naming
from tenancy.catalog import GCP_PROJECT_PATTERN
from tenancy.errors import ConfigError

NAMESPACE = "tenancy"

# config key -> (lowest, highest) accepted value. The highest values are sanity bounds: Kubernetes is tested
# to 10,000 namespaces per cluster; a cell name has at most four digits (tenancy.naming.CELL_PATTERN).
INT_KEYS: dict[str, tuple[int, int]] = {
    "cells": (1, 1000),
    "cellCapacity": (1, 10_000),
    "poolShards": (1, 1000),
    "poolShardCapacity": (1, 1_000_000),
    "dataProjectInstances": (1, 100_000),
    "identityShards": (1, 1000),
}
LIST_KEYS = ("dataProjects",)
CELLS = "cells"      # the one value `tenancy:layout` may still have (configs written for earlier versions)
KEYS = (*INT_KEYS, *LIST_KEYS, "layout", "cellNetworks")
CELL_NETWORK_KEYS = ("networkCidr", "podsCidr", "servicesCidr", "masterCidr")
# Identity Platform tenants per identity shard the README and the size rule plan for (2,000 resources a stack).
IDENTITY_SHARD_PLANNING = 1500


@dataclass(frozen=True)
class CellNetwork:
    """A cell's own ranges (cells 2 and up): its subnet in the environment's network, its pods and services
    secondary ranges and its control plane's /28."""

    network_cidr: str
    pods_cidr: str
    services_cidr: str
    master_cidr: str


@dataclass(frozen=True)
class Capacity:
    environment: str
    cells: int
    cell_capacity: int
    pool_shards: int
    pool_shard_capacity: int
    data_projects: tuple[str, ...]          # the platform project first
    data_project_instances: int
    identity_shards: int = 1
    cell_networks: tuple[tuple[str, CellNetwork], ...] = ()

    @property
    def identity_shard_names(self) -> list[str]:
        return [naming.identity_shard(i) for i in range(1, self.identity_shards + 1)]

    def identity_shard_of(self, tenant_id: str) -> str:
        """A new tenant's identity shard: a stable hash of its id (never its position in any list)."""
        digest = int.from_bytes(hashlib.sha256(tenant_id.encode()).digest()[:8], "big")
        return naming.identity_shard(digest % self.identity_shards + 1)

    def cell_network(self, cell: str) -> CellNetwork | None:
        return dict(self.cell_networks).get(cell)

    @property
    def where(self) -> str:
        """The file that declares this capacity."""
        return f"stacks/Pulumi.{self.environment}.yaml"

    @property
    def cell_names(self) -> list[str]:
        return [naming.cell(i) for i in range(1, self.cells + 1)]

    @property
    def pool_shard_names(self) -> list[str]:
        return [naming.pool_shard(i) for i in range(1, self.pool_shards + 1)]

    @property
    def platform_project(self) -> str:
        return self.data_projects[0]

    @classmethod
    def validate(cls, raw: dict[str, Any], environment: str, platform_project: str) -> "Capacity":
        """`raw`: config key (without namespace) -> value as the stack file or the engine gives it (text, or
        typed from YAML); a missing key takes its default from Pulumi.yaml."""
        defaults = envconfig.project_defaults()
        where = f"stacks/Pulumi.{environment}.yaml"
        problems: list[str] = []
        values: dict[str, Any] = {}
        for key, (low, high) in INT_KEYS.items():
            v = raw.get(key)
            v = defaults.get(key) if v is None else v
            number = _whole(v)
            if number is None or not low <= number <= high:
                problems.append(f"{where}: {NAMESPACE}:{key} must be a whole number from {low:,} to {high:,}, not "
                                f"{_echo(v)}; set it with `pulumi config set {NAMESPACE}:{key} <n> -s {environment}`")
            values[key] = number
        v = raw.get("dataProjects")
        v = defaults.get("dataProjects", []) if v is None else v
        projects = _project_list(v, where, environment, platform_project, problems)
        layout = raw.get("layout")
        if layout not in (None, "", CELLS):
            problems.append(f"{where}: {NAMESPACE}:layout is {_echo(layout)}, but every environment is now a global "
                            f"stack plus cells, pool shards and identity shards: remove the key (an environment "
                            f"deployed as one platform stack then moves with `tenancy migrate --env {environment}`)")
        networks = _cell_networks(raw.get("cellNetworks"), where, values["cells"], problems,
                                  {k: raw.get(k) or defaults.get(k) for k in CELL_NETWORK_KEYS if raw.get(k) or defaults.get(k)})
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(environment=environment, cells=values["cells"], cell_capacity=values["cellCapacity"],
                   pool_shards=values["poolShards"], pool_shard_capacity=values["poolShardCapacity"],
                   data_projects=(platform_project, *projects), data_project_instances=values["dataProjectInstances"],
                   identity_shards=values["identityShards"], cell_networks=networks)

    @classmethod
    def from_pulumi(cls, environment: str, platform_project: str) -> "Capacity":
        """Inside the platform program: from the stack's config."""
        import pulumi

        cfg = pulumi.Config(NAMESPACE)
        return cls.validate({key: cfg.get(key) for key in (*KEYS, *CELL_NETWORK_KEYS)}, environment, platform_project)


def load(environment: str) -> Capacity:
    """Outside a program (plan, CLI, benchmarks): from stacks/Pulumi.<env>.yaml and Pulumi.yaml's defaults."""
    config = envconfig.load_stack_config(environment)
    project = envconfig.offline_platform_config(environment).gcp_project
    return Capacity.validate({key: config.get(f"{NAMESPACE}:{key}") for key in (*KEYS, *CELL_NETWORK_KEYS)},
                             environment, project)


def _cell_networks(v: Any, where: str, cells: int | None, problems: list[str],
                   first: dict[str, str] | None = None) -> tuple[tuple[str, CellNetwork], ...]:
    """`cellNetworks`: every cell from 2 to `cells` needs its ranges; none may overlap another
    cell's. Cell 1 uses the environment's own networkCidr/podsCidr/servicesCidr/masterCidr (`first`)."""
    key = f"{NAMESPACE}:cellNetworks"
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else {}
        except ValueError:
            v = None
    v = {} if v is None else v
    if not isinstance(v, dict):
        problems.append(f"{where}: {key} must be a map of cell name to its ranges, e.g. "
                        "{cell-2: {networkCidr: 10.20.16.0/20, podsCidr: 10.104.0.0/14, servicesCidr: 10.100.16.0/20, "
                        "masterCidr: 172.16.0.32/28}}")
        return ()
    out: list[tuple[str, CellNetwork]] = []
    for cell in sorted(v, key=lambda c: (len(str(c)), str(c))):
        ranges = v[cell]
        if not (isinstance(cell, str) and naming.CELL_PATTERN.fullmatch(cell)) or cell == naming.cell(1):
            problems.append(f"{where}: {key}: {_echo(cell)} is not a cell with ranges of its own (cell-2, cell-3, ...; "
                            "cell-1 uses the environment's networkCidr, podsCidr, servicesCidr and masterCidr)")
            continue
        if not isinstance(ranges, dict) or set(ranges) != set(CELL_NETWORK_KEYS):
            problems.append(f"{where}: {key}.{cell} must give exactly {', '.join(CELL_NETWORK_KEYS)}")
            continue
        bad = [k for k in CELL_NETWORK_KEYS if not _cidr(ranges[k])]
        if bad or not str(ranges["masterCidr"]).endswith("/28"):
            problems.append(f"{where}: {key}.{cell}: {', '.join(bad) or 'masterCidr'} must be "
                            f"{'CIDR ranges' if bad else 'a /28'} (e.g. 10.20.16.0/20)")
            continue
        out.append((cell, CellNetwork(*(str(ranges[k]) for k in CELL_NETWORK_KEYS))))
    if cells is not None:
        have = {c for c, _ in out}
        missing = [naming.cell(i) for i in range(2, cells + 1) if naming.cell(i) not in have]
        if missing:
            problems.append(f"{where}: {key} has no ranges for {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}: "
                            "each cell after the first is a cluster with a subnet of its own; add its networkCidr, "
                            "podsCidr, servicesCidr and masterCidr")
    seen: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = [
        (f"cell-1's {NAMESPACE}:{k}", ipaddress.ip_network(str(r), strict=False))
        for k, r in (first or {}).items() if _cidr(r)]
    for cell, net in out:
        for k, text in zip(CELL_NETWORK_KEYS, (net.network_cidr, net.pods_cidr, net.services_cidr, net.master_cidr)):
            r = ipaddress.ip_network(text, strict=False)
            clash = next((w for w, other in seen if other.version == r.version and other.overlaps(r)), None)
            if clash:
                problems.append(f"{where}: {key}.{cell}.{k} {text} overlaps {clash}; every cell's ranges must be distinct")
            seen.append((f"{cell}.{k}", r))
    return tuple(out)


def _cidr(v: Any) -> bool:
    try:
        ipaddress.ip_network(str(v), strict=False)
        return True
    except ValueError:
        return False


def _whole(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit() and len(v.strip()) <= 9:
        return int(v.strip())
    return None


def _echo(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return f"'{text[:40]}{'…' if len(text) > 40 else ''}'"


def _project_list(v: Any, where: str, environment: str, platform_project: str, problems: list[str]) -> list[str]:
    key = f"{NAMESPACE}:dataProjects"
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else []
        except ValueError:
            v = None
    if not isinstance(v, list):
        problems.append(f"{where}: {key} must be a list of GCP project ids, e.g. [acme-data-1, acme-data-2]")
        return []
    seen: set[str] = set()
    out: list[str] = []
    for item in v:
        if not isinstance(item, str) or not GCP_PROJECT_PATTERN.fullmatch(item):
            problems.append(f"{where}: {key}: {_echo(item)} is not a GCP project id (6-30 characters: lowercase "
                            "letters, digits, hyphens; starts with a letter)")
        elif item == platform_project:
            problems.append(f"{where}: {key}: '{item}' is the platform project ({NAMESPACE}:gcpProject), which is always "
                            "the first data project; remove it from the list")
        elif item in seen:
            problems.append(f"{where}: {key}: '{item}' is listed twice; list each project once")
        else:
            seen.add(item)
            out.append(item)
    return out
