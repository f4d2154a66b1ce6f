"""Benchmark of the environment's stacks at 10,000 and 100,000 tenants (90% pooled, 9% namespace, 1% dedicated).

For each size, with the capacity the fleet needs declared (cells of 300, pool shards of 1,000, an identity
shard per 1,250 tenants, data projects of 1,000 instances):
- placement of the whole fleet (every unit stack places the catalogue; a plan does it once per process);
- the largest stack of each kind, planned for real under the recorder with the policy pack: the global stack,
  the fullest identity shard, cell and pool shard (a cell's and a pool shard's directories read the identity
  shards' outputs, given here as the names they would hold), with its resources and its largest Kubernetes
  object or Helm values document;
- a one-tenant change of the deployed fleet (every placement from the deployed record): `tenancy plan --tenant
  <id>` of one namespace tenant and of one pooled tenant (what the change touches: the tenant's stack, or its
  pool shard; the stacks it reads run for their outputs only), its wall time in this process once the
  catalogue is loaded, and the process's peak resident memory.

    .venv/bin/python bench/cells_bench.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policy.sizes import MAX_OBJECT_BYTES, MAX_STACK_RESOURCES, data_size, serialized_size  # noqa: E402
from tenancy import envconfig, naming  # noqa: E402
from tenancy.fleet import capacity as fleet_capacity  # noqa: E402
from tenancy.fleet import sample  # noqa: E402
from tenancy.fleet.placement import place  # noqa: E402
from tenancy.offline import run_stack  # noqa: E402
from tenancy.plan import _to_stack_plan, plan  # noqa: E402
from tenancy.recorder import ORGANIZATION  # noqa: E402

ENV = "prod"
REAL = envconfig.load_stack_config


def configure(n: int) -> None:
    """Declare the capacity a fleet of n tenants needs (stacks/Pulumi.prod.yaml, patched)."""
    homes = n // 10                                         # namespace and dedicated tenants
    cells = math.ceil(homes / 300) + 1
    pools = math.ceil(n * 0.9 / 1000) + 1
    identity = math.ceil(n / 1250)
    projects = math.ceil(n * 0.09 * 3 / 1000) + 1
    networks = {f"cell-{c}": {"networkCidr": f"172.{17 + c // 16}.{(c % 16) * 16}.0/20", "podsCidr": f"10.{150 + c}.0.0/16",
                              "servicesCidr": f"100.{64 + c // 16}.{(c % 16) * 16}.0/20", "masterCidr": f"192.168.{c}.0/28"}
                for c in range(2, cells + 1)}
    extra = {"tenancy:cells": str(cells), "tenancy:cellCapacity": "300",
             "tenancy:poolShards": str(pools), "tenancy:poolShardCapacity": "1000", "tenancy:identityShards": str(identity),
             "tenancy:dataProjects": json.dumps([f"prod-data-{i}" for i in range(1, projects + 1)]),
             "tenancy:cellNetworks": json.dumps(networks)}
    envconfig.load_stack_config = lambda env: {**REAL(env), **extra}


def run(stack: str, catalog, refs: dict) -> dict:
    config = REAL(ENV) if "." not in stack else {}
    result, seconds = run_stack(stack, catalog, config, refs)
    sp = _to_stack_plan(stack, naming.stack_kind(stack)[0], None, None, result, seconds)
    return {"plan": sp, "raw": result.raw_outputs, "secret": list(result.secret_outputs), "seconds": seconds}


def largest_object(sp) -> int:
    out = 0
    for r in sp.resources:
        i = r["inputs"]
        if r["type"].startswith("kubernetes:helm.sh/"):
            out = max(out, serialized_size(i.get("values") or {}))
        elif r["type"].startswith("kubernetes:") and "kind" in i:
            out = max(out, serialized_size(i), data_size(i) if i["kind"] == "ConfigMap" else 0)
    return out


def fullest(placement, key: str) -> tuple[str, int]:
    counts: dict[str, int] = {}
    for p in placement.tenants.values():
        unit = getattr(p, key)
        if unit:
            counts[unit] = counts.get(unit, 0) + 1
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))


def measure(n: int) -> dict:
    configure(n)
    catalog = sample.catalog(n)
    capacity = fleet_capacity.load(ENV)
    start = time.perf_counter()
    placement = place(catalog, capacity)
    fig: dict = {"tenants": n, "place_s": time.perf_counter() - start,
                 "units": {"cells": capacity.cells, "pool shards": capacity.pool_shards,
                           "identity shards": capacity.identity_shards}}
    glob = run(ENV, catalog, {})
    refs = {f"{ORGANIZATION}/tenancy/{ENV}": (glob["raw"], glob["secret"])}
    for s in capacity.identity_shard_names:
        names = {tid: f"{naming.identity_display_name(tid)}-x1" for tid, p in placement.tenants.items() if p.identity_shard == s}
        refs[f"{ORGANIZATION}/tenancy/{naming.unit_stack(ENV, s)}"] = ({"identityTenants": json.dumps(names)}, [])
    stacks_ = {"global": glob}
    shard, _ = fullest(placement, "identity_shard")
    stacks_["identity"] = run(naming.unit_stack(ENV, shard), catalog, refs)
    cell, _ = fullest(placement, "cell")
    stacks_["cell"] = run(naming.unit_stack(ENV, cell), catalog, refs)
    one = stacks_["cell"] if cell == "cell-1" else run(naming.unit_stack(ENV, "cell-1"), catalog, refs)
    refs[f"{ORGANIZATION}/tenancy/{ENV}.cell-1"] = (one["raw"], one["secret"])
    pool, _ = fullest(placement, "pool_shard")
    stacks_["pool"] = run(naming.unit_stack(ENV, pool), catalog, refs)
    fig["stacks"] = {kind: {"stack": s["plan"].name, "resources": len(s["plan"].resources),
                            "largest_object": largest_object(s["plan"]), "violations": len(s["plan"].violations),
                            "seconds": s["seconds"]} for kind, s in stacks_.items()}
    ns = next(t.id for t in catalog.tenants if t.model.value == "namespace")
    pooled = next(t.id for t in catalog.tenants if t.model.value == "pooled")
    # A change to one tenant of a deployed fleet: every tenant's placement comes from the deployed record.
    deployed = dataclasses.replace(catalog, placements=placement.to_json())
    for label, tid in (("namespace", ns), ("pooled", pooled)):
        start = time.perf_counter()
        result = plan(deployed, ENV, tenants=[tid], workers=1)
        fig[f"one_{label}"] = {"seconds": time.perf_counter() - start, "stacks": [s.name for s in result.stacks],
                               "violations": result.mandatory_violations}
    fig["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    args = ap.parse_args()
    for n in (int(x) for x in args.sizes.split(",")):
        fig = measure(n)
        print(f"## {n:,} tenants: {fig['units']['cells']} cells, {fig['units']['pool shards']} pool shards, "
              f"{fig['units']['identity shards']} identity shards; placement {fig['place_s']:.1f}s")
        print("| stack | resources (bound) | largest object (bytes, limit) | violations | program s |")
        print("|---|---:|---:|---:|---:|")
        for kind, s in fig["stacks"].items():
            print(f"| {kind}: `{s['stack']}` | {s['resources']:,} ({MAX_STACK_RESOURCES:,}) | "
                  f"{s['largest_object']:,} ({MAX_OBJECT_BYTES:,}) | {s['violations']} | {s['seconds']:.1f} |")
        for label in ("namespace", "pooled"):
            o = fig[f"one_{label}"]
            print(f"one {label} tenant: {o['seconds']:.1f}s, stacks {', '.join(o['stacks'])}, "
                  f"{o['violations']} mandatory violation(s)")
        print(f"peak resident memory of this process: {fig['peak_rss_mb']:.0f} MB\n", flush=True)


if __name__ == "__main__":
    main()
