"""Benchmark of placement at 10,000 and 100,000 tenants (90% pooled, 9% namespace, 1% dedicated).

For each size (best of three runs): time to place every tenant from scratch, to place again with every tenant
deployed (sticky), and to place one new tenant into the deployed fleet, with the capacity the fleet needs
declared. What the fleet's stacks hold at these sizes is bench/cells_bench.py's.

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

from tenancy.catalog import Model  # noqa: E402
from tenancy.fleet import capacity as fleet_capacity  # noqa: E402
from tenancy.fleet import sample  # noqa: E402
from tenancy.fleet.placement import place  # noqa: E402

def capacity_for(catalog, env: str = "dev") -> fleet_capacity.Capacity:
    """The capacity a fleet needs with the default unit sizes, plus one spare unit of each kind."""
    base = fleet_capacity.load(env)
    namespaces = sum(t.model is Model.NAMESPACE for t in catalog.tenants)
    homed = namespaces + sum(t.model is Model.DEDICATED for t in catalog.tenants)   # a cell is their home
    pooled = sum(t.model is Model.POOLED for t in catalog.tenants)
    cells = math.ceil(homed / base.cell_capacity) + 1
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
    placed, fresh_s = timed(lambda: place(catalog, cap))
    deployed = dataclasses.replace(catalog, placements=placed.to_json())
    _, sticky_s = timed(lambda: place(deployed, cap))
    one_more = dataclasses.replace(deployed, tenants=deployed.tenants + (sample.tenant("newcomer", "standard"),))
    again, one_s = timed(lambda: place(one_more, cap))
    assert all(again.tenants[t] == placed.tenants[t] for t in placed.tenants), "a placed tenant moved"
    return {"tenants": n, "cells": cap.cells, "poolShards": cap.pool_shards, "dataProjects": len(cap.data_projects),
            "fresh_s": fresh_s, "sticky_s": sticky_s, "one_more_s": one_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    a = ap.parse_args()
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        fig = placement_figures(n)
        rows.append(fig)
        print(f"{n:>7,} tenants: placement {fig['fresh_s']:.2f} s from scratch, {fig['sticky_s']:.2f} s all deployed, "
              f"{fig['one_more_s']:.2f} s with one new tenant ({fig['cells']} cells, {fig['poolShards']} pool shards, "
              f"{fig['dataProjects']} data projects)", flush=True)
    print()
    print("| tenants | cells / pool shards / data projects | placement from scratch | all deployed (sticky) | one new tenant |")
    print("|---:|---|---:|---:|---:|")
    for fig in rows:
        print(f"| {fig['tenants']:,} | {fig['cells']} / {fig['poolShards']} / {fig['dataProjects']} | {fig['fresh_s']:.2f} s "
              f"| {fig['sticky_s']:.2f} s | {fig['one_more_s']:.2f} s |")


if __name__ == "__main__":
    main()
