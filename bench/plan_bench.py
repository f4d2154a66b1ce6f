"""Benchmark of the offline plan: wall time and peak memory at 10, 100 and 1,000 tenants.

Catalogues are generated with 90% pooled, 9% namespace and 1% dedicated tenants. Each measurement runs
`tenancy plan` in a fresh process; peak memory is the largest sum of resident memory over the process
and its worker processes, sampled every 20 ms from /proc.

Targets (2-core machine): full plan of 1,000 tenants <= 60 s and <= 2 GB; `--tenant` for one namespace
tenant at 1,000 tenants <= 3 s and at least 20x faster than the full plan.

    .venv/bin/python bench/plan_bench.py [--sizes 10,100,1000] [--out bench/out]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PLANS = ["free", "basic", "premium"]


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


def _tree_rss(pid: int) -> int:
    """Resident bytes of pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def measure(args: list[str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    elapsed = time.perf_counter() - start
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out}")
    return elapsed, peak, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tenancy = [sys.executable, "-m", "tenancy"]
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        cat = catalogue(n)
        path = out / f"tenants-{n}.yaml"
        path.write_text(yaml.safe_dump(cat, sort_keys=False))
        ns_tenant = next(t["id"] for t in cat["tenants"] if t["plan"] == "standard")
        full_t, full_m, full_out = measure([*tenancy, "plan", "--tenants", str(path), "--out", str(out / f"plan-{n}")])
        one_t, one_m, one_out = measure([*tenancy, "plan", "--tenants", str(path), "--tenant", ns_tenant,
                                   "--out", str(out / f"plan-{n}-one")])
        summary = next((l for l in full_out.splitlines() if " resources, " in l), "")
        resources = summary.split(",")[1].strip().split()[0]
        full_in = _in_process(full_out)
        one_in = _in_process(one_out)
        rows.append((n, resources, full_t, full_m, full_in, one_t, one_m, one_in))
        print(f"{n:>5} tenants: full plan {full_t:6.1f} s ({full_in:.1f} s planning) {full_m / 2**20:7.0f} MiB, "
              f"{resources} resources; --tenant {one_t:5.2f} s ({one_in:.2f} s planning) {one_m / 2**20:5.0f} MiB", flush=True)
    last_n = rows[-1][0]
    warm = warm_single(out / f"tenants-{last_n}.yaml", next(t["id"] for t in catalogue(last_n)["tenants"] if t["plan"] == "standard"))
    print(f"warm --tenant at {last_n:,} tenants (SDKs already imported): {warm:.2f} s; "
          f"full planning part / warm --tenant = {rows[-1][4] / warm:.0f}x")
    print()
    print("| tenants | resources | full plan | planning part | peak memory | `--tenant` | planning part | peak memory | "
          "speed-up end to end | speed-up of planning |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, res, ft, fm, fi, ot, om, oi in rows:
        print(f"| {n:,} | {res} | {ft:.1f} s | {fi:.1f} s | {fm / 2**20:.0f} MiB | {ot:.2f} s | {oi:.2f} s | "
              f"{om / 2**20:.0f} MiB | {ft / ot:.1f}x | {fi / oi:.0f}x |")


WARM = """
import sys, time
from tenancy import plan
from tenancy.catalog import load_catalog
catalog = load_catalog(sys.argv[1])
plan.plan(catalog, "dev", tenants=[sys.argv[2]], workers=1)          # warms the SDK imports
start = time.perf_counter()
for _ in range(3):
    plan.plan(catalog, "dev", tenants=[sys.argv[2]], workers=1)
print((time.perf_counter() - start) / 3)
"""


def warm_single(path: Path, tenant: str) -> float:
    """Seconds of a `--tenant` plan in a process that has already imported the SDKs (the planning work itself)."""
    out = subprocess.run([sys.executable, "-c", WARM, str(path), tenant], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _in_process(output: str) -> float:
    """The planning time `tenancy plan` reports itself (after interpreter start and SDK imports)."""
    line = next((l for l in output.splitlines() if " resources, " in l), "")
    return float(line.rsplit(",", 1)[1].strip().rstrip("s"))


if __name__ == "__main__":
    main()
