"""Benchmark of the offline plan at 1,000, 5,000 and 10,000 tenants, beside the Pulumi SDK's own floor.

Catalogues are generated with 90% pooled, 9% namespace and 1% dedicated tenants. The plans run in a copy of
the repository (`<out>/tree`) whose `stacks/Pulumi.dev.yaml` declares, for each size, the capacity the fleet
needs (bench/cells_bench.py's: cells of 300 tenants, pool shards of 1,000 pooled tenants, an identity shard per
1,250 tenants), every stack bounded.

For each size, each in a fresh process:
- the full plan (`tenancy plan`, no exports cache): wall time, CPU seconds of every process (the plan and its
  workers), CPU per resource, and the peak of the summed memory of the process and its workers from /proc:
  resident (RSS, every 20 ms; pages a worker shares with the parent it was forked from counted in each) and
  proportional (PSS, every 0.5 s; shared pages divided between the processes sharing them); and the peaks
  of the parent alone and of the largest other process (the platform stack's);
- the SDK floor, in the same run: as many `gcp.storage.Bucket` resources as the plan has resources, registered
  under the same recorder (`tenancy.recorder.run_program`), in stacks of 100 by as many worker processes as
  the plan uses, replaced as often; nothing else (no stack programs, policy, plan.json or manifests). Its CPU
  per resource, and the plan's against it;
- `--tenant` for one namespace tenant, cold (no `.cache/`), then again with what the first run cached.

Targets (2 cores): the full plan's CPU per resource <= 1.2x the floor's; total peak memory <= 2 GB; a
one-tenant plan at 10,000 tenants <= 3 s cold.

    .venv/bin/python bench/plan_bench.py [--sizes 1000,5000,10000] [--out bench/out] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PER_FLOOR_STACK = 100
PSS_EVERY = 25          # memory samples every 20 ms; PSS every 25th (0.5 s)
COPY_SKIP = {".git", ".venv", ".tools", ".cache", "__pycache__", "tests", ".pytest_cache", ".tenancy-state"}


def catalogue(n: int) -> dict:
    tenants = []
    n_ded = max(1, round(n * 0.01))
    n_ns = max(1, round(n * 0.09))
    for i in range(n):
        if i < n_ded:
            plan, extra = "enterprise", {"dedicated": {"project": {"id": f"bench-ded-{i:05d}"}}}
        elif i < n_ded + n_ns:
            plan, extra = "standard", {}
        else:
            plan, extra = "free", {}
        tenants.append({"id": f"tenant-{i:05d}", "name": f"Tenant {i}", "plan": plan,
                        "admin_email": f"admin@t{i}.example", **extra})
    return {"version": 1, "tenants": tenants}


def workspace(out: Path) -> Path:
    """A copy of the repository, its config set for each size by `configure` (the plans write their caches,
    .cache/tenancy, there too)."""
    out = out.resolve()
    tree = out / "tree"
    if tree.exists():
        shutil.rmtree(tree)

    def skip(directory: str, names: list[str]) -> set[str]:
        here = Path(directory).resolve()
        return {n for n in names if n in COPY_SKIP or (here / n).resolve() in (out, ROOT / "bench" / "out", ROOT / "plan")}

    shutil.copytree(ROOT, tree, ignore=skip)
    return tree


def cells_capacity(n: int, env: str = "dev") -> dict[str, object]:
    """The capacity n tenants need (bench/cells_bench.py's): cells of 300 tenants, pool shards of
    1,000 pooled tenants, an identity shard per 1,250 tenants, data projects of 1,000 instances."""
    cells = math.ceil(n // 10 / 300) + 1
    networks = {f"cell-{c}": {"networkCidr": f"172.{17 + c // 16}.{(c % 16) * 16}.0/20", "podsCidr": f"10.{150 + c}.0.0/16",
                              "servicesCidr": f"100.{64 + c // 16}.{(c % 16) * 16}.0/20", "masterCidr": f"192.168.{c}.0/28"}
                for c in range(2, cells + 1)}
    projects = math.ceil(n * 0.09 * 3 / 1000) + 1
    return {"cells": cells, "cellCapacity": 300, "poolShards": math.ceil(n * 0.9 / 1000) + 1,
            "poolShardCapacity": 1000, "identityShards": max(1, math.ceil(n / 1250)), "dataProjectInstances": 1000,
            "dataProjects": json.dumps([f"{env}-data-{i}" for i in range(1, projects + 1)]),
            "cellNetworks": json.dumps(networks)}


def configure(tree: Path, original: str, n: int, env: str = "dev") -> None:
    """stacks/Pulumi.<env>.yaml (`original`: its text) declaring the capacity n tenants need (keys replaced or
    added)."""
    values: dict[str, object] = cells_capacity(n, env)
    text = original
    for key, value in values.items():
        line = f"tenancy:{key}: {json.dumps(value) if isinstance(value, str) and value[:1] in '[{' else value}"
        text, found = re.subn(rf"(?m)^(\s*)tenancy:{key}:\s*\S+$", lambda m: m[1] + line, text)
        if not found:
            text = text.rstrip("\n") + f"\n  {line}\n"
    (tree / "stacks" / f"Pulumi.{env}.yaml").write_text(text)


# ---------------------------------------------------------------------------------------------- memory

def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            out.setdefault(ppid, []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _tree_memory(pid: int, pss: bool) -> tuple[int, int, int, int]:
    """(RSS, PSS or 0, RSS of pid itself, largest RSS of one descendant) in bytes of pid and its descendants.
    RSS from statm is cheap; PSS (smaps_rollup) walks every page table, so it is sampled less often."""
    children = _children()
    page = os.sysconf("SC_PAGE_SIZE")
    rss = prop = own = largest = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                mine = int(f.read().split()[1]) * page
            rss += mine
            if p == pid:
                own = mine
            else:
                largest = max(largest, mine)
            if pss:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    prop += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
        stack.extend(children.get(p, []))
    return rss, prop, own, largest


class Run:
    def __init__(self, wall: float, cpu: float, peak: list[int], returncode: int, output: str):
        self.wall, self.cpu, self.returncode, self.output = wall, cpu, returncode, output
        self.rss, self.pss, self.parent_rss, self.child_rss = peak


def measure(args: list[str], cwd: Path, ok=(0,)) -> Run:
    """Runs args; wall time, CPU of the process and every descendant it waited for, peak summed RSS and PSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    peak = [0, 0, 0, 0]
    done = threading.Event()

    def sample():
        n = 0
        while not done.is_set():
            for k, v in enumerate(_tree_memory(proc.pid, pss=n % PSS_EVERY == 0)):
                peak[k] = max(peak[k], v)
            n += 1
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    t.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}):\n{out[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, peak, proc.returncode, out)


def _summary(output: str) -> tuple[int, int, float]:
    """(stacks, resources, planning seconds) from `tenancy plan`'s summary line."""
    m = re.search(r"^(\d+) stack\(s\), (\d+) resources, \d+ mandatory violation\(s\), ([\d.]+)s$", output, re.M)
    if not m:
        raise SystemExit(f"no summary line in:\n{output[-4000:]}")
    return int(m[1]), int(m[2]), float(m[3])


# ----------------------------------------------------------------------------------------------- floor

def _floor_stack(item: tuple[int, int]) -> int:
    from tenancy.recorder import run_program
    import pulumi_gcp as gcp

    index, count = item

    def program() -> None:
        for j in range(count):
            gcp.storage.Bucket(f"bucket-{j}", name=f"floor-{index}-{j}", location="EU", uniform_bucket_level_access=True,
                               public_access_prevention="enforced", versioning={"enabled": True},
                               labels={"tenant": f"floor-{index}"})

    return len(run_program(program, project="tenancy", stack=f"dev.floor-{index}", config={}).records)


def floor_main(resources: int, workers: int) -> None:
    """The SDK floor: `resources` Buckets in stacks of PER_FLOOR_STACK, the plan's worker processes and recycling."""
    sys.path.insert(0, os.getcwd())
    import pulumi_gcp as gcp
    from tenancy.plan import STACKS_PER_WORKER

    gcp.storage.Bucket    # imported before the workers fork, as the plan's parent has its SDKs imported
    stacks = [(i, min(PER_FLOOR_STACK, resources - i * PER_FLOOR_STACK)) for i in range(math.ceil(resources / PER_FLOOR_STACK))]
    with multiprocessing.get_context("fork").Pool(workers, maxtasksperchild=STACKS_PER_WORKER) as pool:
        total = sum(pool.imap_unordered(_floor_stack, stacks))
    print(f"floor: {total} resources in {len(stacks)} stacks")


# ------------------------------------------------------------------------------------------------ main

def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--floor", type=int, help=argparse.SUPPRESS)    # internal: run the SDK floor for N resources
    a = ap.parse_args()
    if a.floor is not None:
        floor_main(a.floor, a.workers)
        return
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tree = workspace(out)
    original = (tree / "stacks" / "Pulumi.dev.yaml").read_text()
    py = sys.executable
    tenancy = [py, "-m", "tenancy"]
    cache = tree / ".cache"
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        cat = catalogue(n)
        path = out / f"tenants-{n}.yaml"
        path.write_text(yaml.safe_dump(cat, sort_keys=False))
        ns_tenant = next(t["id"] for t in cat["tenants"] if t["plan"] == "standard")
        configure(tree, original, n)
        shutil.rmtree(cache, ignore_errors=True)
        full = measure([*tenancy, "plan", "--tenants", str(path), "--out", str(out / f"plan-{n}"),
                        "--workers", str(a.workers)], tree, ok=(0, 1))
        stacks, resources, planning = _summary(full.output)
        floor = measure([py, str(ROOT / "bench" / "plan_bench.py"), "--floor", str(resources), "--workers", str(a.workers)], tree)
        shutil.rmtree(cache, ignore_errors=True)
        cold = measure([*tenancy, "plan", "--tenants", str(path), "--tenant", ns_tenant, "--out", str(out / f"plan-{n}-one")], tree)
        warm = measure([*tenancy, "plan", "--tenants", str(path), "--tenant", ns_tenant, "--out", str(out / f"plan-{n}-one")], tree)
        row = dict(n=n, stacks=stacks, resources=resources, full=full, planning=planning, floor=floor, cold=cold, warm=warm,
                   plan_ms=1000 * full.cpu / resources, floor_ms=1000 * floor.cpu / resources)
        rows.append(row)
        print(f"{n:>6,} tenants: {stacks:,} stacks, {resources:,} resources; full plan {full.wall:.1f} s, {full.cpu:.0f} CPU s "
              f"({row['plan_ms']:.2f} ms/resource), peak RSS {mib(full.rss)}, PSS {mib(full.pss)} (parent {mib(full.parent_rss)}, "
              f"largest other process {mib(full.child_rss)}); SDK floor "
              f"{floor.wall:.1f} s, {floor.cpu:.0f} CPU s ({row['floor_ms']:.2f} ms/resource): "
              f"{row['plan_ms'] / row['floor_ms']:.2f}x; --tenant cold {cold.wall:.2f} s, cached {warm.wall:.2f} s", flush=True)
    print()
    print("| tenants | stacks | resources | full plan | CPU | CPU per resource | SDK floor per resource | plan / floor | "
          "peak memory RSS (PSS) | parent / largest other process | `--tenant` cold | `--tenant` cached |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['stacks']:,} | {r['resources']:,} | {r['full'].wall:.0f} s | {r['full'].cpu:.0f} s | "
              f"{r['plan_ms']:.2f} ms | {r['floor_ms']:.2f} ms | {r['plan_ms'] / r['floor_ms']:.2f}× | "
              f"{mib(r['full'].rss)} ({mib(r['full'].pss)}) | {mib(r['full'].parent_rss)} / {mib(r['full'].child_rss)} | "
              f"{r['cold'].wall:.1f} s | {r['warm'].wall:.1f} s |")


if __name__ == "__main__":
    main()
