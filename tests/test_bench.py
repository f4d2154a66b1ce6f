"""Every benchmark script runs, at a tiny size, so that none can rot: each is run as a user runs it and must
finish with its table (and, where it checks them, its row counts and lost writes: a baseline that moves another
number of rows than the command, or a committed write missing after a move, fails the script)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHES = {
    "cells_bench.py": ["--sizes", "20"],
    "fleet_bench.py": ["--sizes", "20"],
    "plan_bench.py": ["--sizes", "5", "--out", "{tmp}/plan"],
    "plan_tenant_bench.py": ["--sizes", "200", "--runs", "1", "--out", "{tmp}/plan-tenant"],
    "data_bench.py": ["--rows", "400"],
    "online_move_bench.py": ["--rows", "400", "--rate", "50"],
    "upgrade_bench.py": ["--rows", "400", "--documents", "20", "--objects", "5", "--runs", "1", "--methods",
                         "online,copy", "--rates", "rows=40,documents=10,objects=5"],
}
NEEDS = {"data_bench.py": "postgres", "online_move_bench.py": "postgres", "upgrade_bench.py": "servers"}


def test_every_bench_script_is_listed():
    assert sorted(p.name for p in (ROOT / "bench").glob("*.py")) == sorted(BENCHES)


@pytest.mark.parametrize("script", sorted(BENCHES))
def test_bench_runs_at_a_tiny_size(script, tmp_path, request):
    if NEEDS.get(script):
        request.getfixturevalue("pg_server")     # skips (or fails under CI) where PostgreSQL is missing
    if NEEDS.get(script) == "servers":
        request.getfixturevalue("firestore_server")
        request.getfixturevalue("gcs_server")
    args = [a.replace("{tmp}", str(tmp_path)) for a in BENCHES[script]]
    env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "|---" in out.stdout, f"{script} printed no table:\n{out.stdout[-2000:]}"
    if script == "upgrade_bench.py":
        assert "0 lost" in out.stdout and "| online | 400 |" in out.stdout and "| copy | 400 |" in out.stdout
    if script == "plan_tenant_bench.py":      # it fails itself when plan.json differs with and without the cache
        assert "| 200 | namespace | 1 |" in out.stdout and "| 200 | pooled | 1 |" in out.stdout, out.stdout
    if script == "data_bench.py":
        assert "| raw COPY pipe (no verification) | 400 |" in out.stdout, out.stdout
        assert "| pg_dump --data-only | psql (a database of the tenant's rows only) | 400 |" in out.stdout
