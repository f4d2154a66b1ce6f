"""Benchmark of the fleet at 10,000 and 100,000 tenants (90% pooled, 9% namespace, 1% dedicated).

For each size:
- placement (best of three runs): time to place every tenant from scratch, to place again with every tenant deployed (sticky),
  and to place one new tenant into the deployed fleet, with the capacity the fleet needs declared and every
  unit built (as once the cell and pool-shard stacks exist);
- the current layout: resources per stack as the stack programs register them (the platform stack planned
  for samples of 1,000 and 2,000 tenants, fitted to a line -- every tenant adds the same resources -- and one
  namespace and one dedicated tenant stack planned), and the largest Kubernetes object and Helm values
  document, computed exactly from the platform program's own functions for the whole fleet;
- where the `object-and-stack-size` policy rule starts to fail the plan.

    .venv/bin/python bench/fleet_bench.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.directory import document  # noqa: E402
from policy.sizes import MAX_OBJECT_BYTES, MAX_STACK_RESOURCES, serialized_size  # noqa: E402
from stacks.platform import directory_entry, pooled_app_values  # noqa: E402
from tenancy.catalog import Model  # noqa: E402
from tenancy.envconfig import PlatformConfig, load_stack_config  # noqa: E402
from tenancy.fleet import capacity as fleet_capacity  # noqa: E402
from tenancy.fleet import sample  # noqa: E402
from tenancy.fleet.placement import place  # noqa: E402
from tenancy.record_format import record_json  # noqa: E402

SAMPLES = (1_000, 2_000)


def capacity_for(catalog, env: str = "dev") -> fleet_capacity.Capacity:
    """The capacity a fleet needs with the default unit sizes, plus one spare unit of each kind."""
    base = fleet_capacity.load(env)
    namespaces = sum(t.model is Model.NAMESPACE for t in catalog.tenants)
    pooled = sum(t.model is Model.POOLED for t in catalog.tenants)
    cells = math.ceil(namespaces / base.cell_capacity) + 1
    shards = math.ceil(pooled / base.pool_shard_capacity) + 1
    per_project = base.data_project_instances // 3          # standard tenants (3 instances) per project
    projects = math.ceil(namespaces / per_project) + 1
    extra = tuple(f"{env}-tenant-data-{i:03d}" for i in range(1, projects))
    return dataclasses.replace(base, cells=cells, pool_shards=shards, data_projects=(base.platform_project, *extra))


def timed(fn, repeat: int = 3):
    """(result, best of `repeat` wall times): the machine is shared, the best run is the placement's own cost."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def placement_figures(n: int) -> dict:
    catalog = sample.catalog(n)
    cap = capacity_for(catalog)
    placed, fresh_s = timed(lambda: place(catalog, cap, fleet_capacity.EVERY_UNIT))
    deployed = dataclasses.replace(catalog, placements=placed.to_json())
    _, sticky_s = timed(lambda: place(deployed, cap, fleet_capacity.EVERY_UNIT))
    one_more = dataclasses.replace(deployed, tenants=deployed.tenants + (sample.tenant("newcomer", "standard"),))
    again, one_s = timed(lambda: place(one_more, cap, fleet_capacity.EVERY_UNIT))
    assert all(again.tenants[t] == placed.tenants[t] for t in placed.tenants), "a placed tenant moved"
    return {"tenants": n, "cells": cap.cells, "poolShards": cap.pool_shards, "dataProjects": len(cap.data_projects),
            "fresh_s": fresh_s, "sticky_s": sticky_s, "one_more_s": one_s, "placement": placed, "catalog": catalog}


def platform_resources() -> tuple[float, float, list[tuple[int, int]]]:
    """(fixed, per tenant, samples) of the platform stack's resource count, from real runs of its program."""
    from tenancy.offline import run_stack
    from tenancy.plan import _platform_config

    points = []
    for n in SAMPLES:
        result, _ = run_stack("dev", sample.catalog(n), _platform_config("dev"), {})
        points.append((n, len(result.records)))
    (n1, r1), (n2, r2) = points
    per = (r2 - r1) / (n2 - n1)
    return r1 - per * n1, per, points


def tenant_stack_resources() -> dict[str, int]:
    from tenancy import plan as planmod

    catalog = sample.catalog(100)
    ns = next(t.id for t in catalog.tenants if t.model is Model.NAMESPACE)
    ded = next(t.id for t in catalog.tenants if t.model is Model.DEDICATED)
    result = planmod.plan(catalog, "dev", tenants=[ns, ded], workers=1)
    return {s.model: len(s.resources) for s in result.stacks}


def dev_config() -> PlatformConfig:
    raw = {k.split(":", 1)[1]: v for k, v in load_stack_config("dev").items() if k.startswith("tenancy:")}
    return PlatformConfig.validate({"gcp_project": raw["gcpProject"], "base_domain": raw["baseDomain"],
                                    "acme_email": raw["acmeEmail"], "environment": "dev"}, "dev")


def object_sizes(fig: dict) -> dict[str, int]:
    """Bytes of the documents the current platform stack publishes for the whole fleet."""
    catalog, placed, cfg = fig["catalog"], fig["placement"], dev_config()
    entries = {t.id: directory_entry(t, "dev", cfg, placed.tenants.get(t.id)) for t in catalog.tenants}
    directory = document(entries, {t.id: f"t-{t.id}-0a1b2"[:20] for t in catalog.tenants})
    pooled = [t for t in catalog.tenants if t.model is Model.POOLED]
    values = pooled_app_values("dev", cfg, pooled, "dev-pooled-tenancy-app", "-----BEGIN CERTIFICATE-----")
    record = record_json(catalog, placed.to_json())
    return {"directory": len(directory.encode()), "helm_values": serialized_size(values),
            "record": len(record.encode()), "directory_per_tenant": len(directory.encode()) / len(entries),
            "values_per_pooled": serialized_size(values) / max(1, len(pooled))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    a = ap.parse_args()
    fixed, per, points = platform_resources()
    stacks = tenant_stack_resources()
    print(f"platform stack (current layout): {', '.join(f'{r:,} resources at {n:,} tenants' for n, r in points)} "
          f"-> {fixed:.0f} + {per:.2f} per tenant")
    print(f"tenant stacks: namespace {stacks.get('namespace')}, dedicated {stacks.get('dedicated')} resources "
          "(constant: one tenant each)")
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        fig = placement_figures(n)
        sizes = object_sizes(fig)
        largest = fixed + per * n
        rows.append((fig, sizes, largest))
        print(f"{n:>7,} tenants: placement {fig['fresh_s']:.2f} s from scratch, {fig['sticky_s']:.2f} s all deployed, "
              f"{fig['one_more_s']:.2f} s with one new tenant ({fig['cells']} cells, {fig['poolShards']} pool shards, "
              f"{fig['dataProjects']} data projects); platform stack {largest:,.0f} resources; tenant directory "
              f"ConfigMap {sizes['directory'] / 2**20:.1f} MiB; pooled Helm values {sizes['helm_values'] / 2**20:.1f} "
              f"MiB; deployed record output {sizes['record'] / 2**20:.1f} MiB", flush=True)
    sizes = rows[0][1]
    print(f"object-and-stack-size fails the plan from about {(MAX_STACK_RESOURCES - fixed) / per:,.0f} tenants "
          f"(platform stack over {MAX_STACK_RESOURCES:,} resources), "
          f"{MAX_OBJECT_BYTES / sizes['directory_per_tenant']:,.0f} tenants (directory ConfigMap over 1 MiB, "
          f"{sizes['directory_per_tenant']:.0f} bytes per tenant) and {MAX_OBJECT_BYTES / sizes['values_per_pooled']:,.0f} "
          f"pooled tenants (Helm values over 1 MiB, {sizes['values_per_pooled']:.0f} bytes per pooled tenant)")
    print()
    print("| tenants | cells / pool shards / data projects | placement from scratch | all deployed (sticky) | one new "
          "tenant | platform stack resources | largest tenant stack | tenant directory ConfigMap | pooled Helm values |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for fig, sz, largest in rows:
        print(f"| {fig['tenants']:,} | {fig['cells']} / {fig['poolShards']} / {fig['dataProjects']} | {fig['fresh_s']:.2f} s "
              f"| {fig['sticky_s']:.2f} s | {fig['one_more_s']:.2f} s | {largest:,.0f} | {max(stacks.values())} | "
              f"{sz['directory'] / 2**20:.1f} MiB | {sz['helm_values'] / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
