"""Benchmark of a one-tenant plan: `tenancy plan --env prod --tenant <id>` of a namespace tenant
and of a pooled tenant, each in fresh processes, at 10,000 and 100,000 tenants.

The plans run in a copy of the repository (`<out>/tree`) whose stacks/Pulumi.prod.yaml declares the capacity the
fleet needs (bench/cells_bench.py's: cells of 300 tenants, pool shards of 1,000 pooled tenants, an identity shard per 1,250 tenants, data projects of 1,000 instances). The fleet is deployed: every
tenant's placement comes from a deployed record (`--deployed-record`), as in a pull request's plan. The catalogue
is 90% pooled, 9% namespace, 1% dedicated tenants, written compactly (one flow mapping a tenant, the fields every
tenant needs, the built-in plans under two-letter names), as the published figures were taken under the
catalogue's earlier 5 MiB input limit (16 MiB now).

For each size and tenant, every run a fresh `tenancy plan` process, its wall time and the CPU time of the process
and its children (on a loaded machine CPU time is the steadier figure):
- without the cache (`TENANCY_PLAN_CACHE=0`, what the plan did before tenancy/plancache.py): `--runs` runs;
- cold: the first plan in a tree without `.cache/` (every cache of the plan is computed and written);
- cached: `--runs` more plans with the caches the first one wrote (nothing changed): median, minimum, maximum;
- whether plan.json is byte-identical in every run, with and without the cache.

Target (2 cores): the cached median <= 3 s at 10,000 tenants, <= 5 s at 100,000.

    .venv/bin/python bench/plan_tenant_bench.py [--sizes 10000,100000] [--runs 5] [--out bench/out/plan-tenant]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from plan_bench import configure, workspace  # noqa: E402 -- its copy of the repository and its capacity
from tenancy.fleet.sample import plan_of  # noqa: E402

ENV = "prod"
# The built-in plans under two-letter names (plans of the file's own `plans:`), and ids of five characters: the
# catalogue of 100,000 tenants is then 5.1 MB (the figures were taken under the earlier 5 MiB input limit).
SHORT = {"enterprise": "en", "standard": "st", "free": "fr"}
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def tenant_id(i: int) -> str:
    """`t` and i in base 36, four digits: in order of i, like tenancy/fleet/sample.py's ids."""
    digits = ""
    for _ in range(4):
        i, d = divmod(i, 36)
        digits = DIGITS[d] + digits
    return "t" + digits


def catalogue(n: int) -> tuple[str, list[tuple[str, str]]]:
    """tenants.yaml of n tenants (one flow mapping each, the fields every tenant needs; a dedicated tenant in a
    project of its own), and (id, plan) of every tenant."""
    from tenancy.catalog import BUILTIN_PLANS

    plans = {SHORT[name]: BUILTIN_PLANS[name].model_dump(mode="json", exclude_defaults=True) for name in SHORT}
    tenants = [(tenant_id(i), plan_of(i)) for i in range(n)]
    lines = ["version: 1", f"plans: {json.dumps(plans)}", "tenants:"]
    for tid, plan in tenants:
        extra = f",dedicated: {{project: {{id: {tid}-data}}}}" if plan == "enterprise" else ""
        lines.append(f"- {{id: {tid},name: T,plan: {SHORT[plan]},admin_email: a@b.io{extra}}}")
    return "\n".join(lines) + "\n", tenants


def deployed_record(tree: Path, catalog_file: Path, record: Path) -> None:
    """The deployed record of the whole fleet placed (what `pulumi stack output deployedRecord` would give)."""
    code = ("import json, sys; from tenancy.catalog import load_catalog; from tenancy.fleet import capacity, placement; "
            f"c = load_catalog(sys.argv[1]); p = placement.place(c, capacity.load('{ENV}')); "
            "open(sys.argv[2], 'w').write(json.dumps({'catalog': {}, 'placements': p.to_json()}))")
    subprocess.run([sys.executable, "-c", code, str(catalog_file), str(record)], cwd=tree, check=True)


def timed(args: list[str], cwd: Path, cache: bool = True) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, output) of one run; `cache`: False runs it with
    TENANCY_PLAN_CACHE=0 (no cache of tenancy/plancache.py is read or written)."""
    env = {**os.environ, "TENANCY_PLAN_CACHE": "1" if cache else "0"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--uncached-runs", type=int, help="runs without the cache (default: --runs; at least 1, its "
                    "plan.json is the reference the cached runs are compared with)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "plan-tenant"))
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tree = workspace(out)
    original = (tree / "stacks" / f"Pulumi.{ENV}.yaml").read_text()
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        text, tenants = catalogue(n)
        path = out / f"tenants-{n}.yaml"
        path.write_text(text)
        configure(tree, original, n, ENV)
        record = out / f"deployed-{n}.json"
        deployed_record(tree, path, record)
        picks = {"namespace": next(t for t, p in tenants if p == "standard"),
                 "pooled": next(t for t, p in tenants if p == "free")}
        for model, tid in picks.items():
            shutil.rmtree(tree / ".cache", ignore_errors=True)
            plan_dir = out / f"plan-{n}-{model}"
            args = [sys.executable, "-m", "tenancy", "plan", "--env", ENV, "--tenants", str(path), "--deployed-record",
                    str(record), "--tenant", tid, "--out", str(plan_dir)]
            runs: dict[str, list[tuple[float, float]]] = {"uncached": [], "cold": [], "cached": []}
            same = True
            for i in range(max(1, a.uncached_runs if a.uncached_runs is not None else a.runs)):
                wall, cpu, _ = timed(args, tree, cache=False)
                runs["uncached"].append((wall, cpu))
                if i == 0:
                    reference = (plan_dir / "plan.json").read_bytes()
            wall, cpu, _ = timed(args, tree)
            runs["cold"].append((wall, cpu))
            same = (plan_dir / "plan.json").read_bytes() == reference
            for _ in range(a.runs):
                wall, cpu, output = timed(args, tree)
                runs["cached"].append((wall, cpu))
                same = same and (plan_dir / "plan.json").read_bytes() == reference
            stacks = re.search(r"^(\d+) stack\(s\), (\d+) resources", output, re.M)
            row = dict(n=n, model=model, tenant=tid, runs=runs, same=same, stacks=int(stacks[1]), resources=int(stacks[2]),
                       load=os.getloadavg()[0])
            rows.append(row)
            print(f"{n:>7,} tenants, {model} tenant {tid}: without the cache {_median(runs['uncached'])}; cold "
                  f"{_median(runs['cold'])}; cached {_median(runs['cached'])} (medians of {len(runs['uncached'])} and "
                  f"{a.runs}); plan.json identical: "
                  f"{same}; load {row['load']:.2f}", flush=True)
    print()
    print(f"{os.cpu_count()} cores; the 1-minute load average as each row finished in the last column")
    print("| tenants | tenant | stacks planned | resources | without the cache: wall (CPU) | cold | cached: median wall "
          "(CPU) | cached: min / max wall | plan.json identical | load |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        walls = [w for w, _ in r["runs"]["cached"]]
        print(f"| {r['n']:,} | {r['model']} | {r['stacks']} | {r['resources']:,} | {_median(r['runs']['uncached'])} | "
              f"{_median(r['runs']['cold'])} | {_median(r['runs']['cached'])} | {min(walls):.2f} / {max(walls):.2f} s | "
              f"{'yes' if r['same'] else 'NO'} | {r['load']:.2f} |")
    if not all(r["same"] for r in rows):
        raise SystemExit("plan.json differs between runs with and without the cache")


def _median(runs: list[tuple[float, float]]) -> str:
    return f"{statistics.median(w for w, _ in runs):.2f} s ({statistics.median(c for _, c in runs):.2f} s)"


if __name__ == "__main__":
    main()
