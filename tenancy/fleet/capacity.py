"""An environment's capacity: its cells, pool shards and tenant-data projects, and what each can hold.

Declared in the platform stack's config, `stacks/Pulumi.<env>.yaml` (defaults in `Pulumi.yaml`):

    tenancy:cells                   shared GKE clusters hosting namespace tenants: cell-1 .. cell-<n>
    tenancy:cellCapacity            tenant namespaces per cell (a planning figure: 100-500 is common)
    tenancy:poolShards              pooled Cloud SQL instances holding pooled tenants: pool-1 .. pool-<n>
    tenancy:poolShardCapacity       pooled tenants per shard (bounded by the instance's connection budget)
    tenancy:dataProjects            GCP projects for namespace tenants' Cloud SQL instances, after the platform
                                    project (always the first data project)
    tenancy:dataProjectInstances    Cloud SQL instances per project (Google's default quota is about 1,000)

Adding capacity is a config change: another cell, shard or project. Existing tenants never move because
of it (tenancy/fleet/placement.py).

What the stacks of this version build is narrower than what may be declared: one cell (the shared cluster
`<env>-shared`), one pool shard (the pooled instance `<env>-pooled-postgres`) and the platform project.
`CURRENT_LAYOUT` says so, and placement never puts a tenant in a unit that is declared but not built: the
directory would route it to a cluster or database that does not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tenancy import naming
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
}
LIST_KEYS = ("dataProjects",)
KEYS = (*INT_KEYS, *LIST_KEYS)


@dataclass(frozen=True)
class Layout:
    """How many of the declared units the stacks of this version build (None: every declared one)."""

    cells: int | None
    pool_shards: int | None
    data_projects: int | None

    def builds(self, kind: str, index: int) -> bool:
        """Whether unit `index` (1-based) of `kind` ("cells", "pool_shards", "data_projects") exists."""
        limit = getattr(self, kind)
        return limit is None or index <= limit


# The platform stack builds cell 1 (its shared cluster), pool shard 1 (its pooled instance) and uses its own
# project for namespace tenants' databases. The cell and pool-shard stacks will lift these limits.
CURRENT_LAYOUT = Layout(cells=1, pool_shards=1, data_projects=1)
# Every declared unit: what placement will be once every unit has its stack (tests and benchmarks).
EVERY_UNIT = Layout(cells=None, pool_shards=None, data_projects=None)


@dataclass(frozen=True)
class Capacity:
    environment: str
    cells: int
    cell_capacity: int
    pool_shards: int
    pool_shard_capacity: int
    data_projects: tuple[str, ...]          # the platform project first
    data_project_instances: int

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
        from stacks.config import project_defaults

        defaults = project_defaults()
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
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(environment=environment, cells=values["cells"], cell_capacity=values["cellCapacity"],
                   pool_shards=values["poolShards"], pool_shard_capacity=values["poolShardCapacity"],
                   data_projects=(platform_project, *projects), data_project_instances=values["dataProjectInstances"])

    @classmethod
    def from_pulumi(cls, environment: str, platform_project: str) -> "Capacity":
        """Inside the platform program: from the stack's config."""
        import pulumi

        cfg = pulumi.Config(NAMESPACE)
        return cls.validate({key: cfg.get(key) for key in KEYS}, environment, platform_project)


def load(environment: str) -> Capacity:
    """Outside a program (plan, CLI, benchmarks): from stacks/Pulumi.<env>.yaml and Pulumi.yaml's defaults."""
    from stacks.config import load_stack_config, offline_platform_config

    config = load_stack_config(environment)
    project = offline_platform_config(environment).gcp_project
    return Capacity.validate({key: config.get(f"{NAMESPACE}:{key}") for key in KEYS}, environment, project)


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
