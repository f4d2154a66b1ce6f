"""`make demo`, as a new user runs it after the two set-up commands, then `make demo-down`: each step's commands and
what they and the sample application report, in order; and nothing left behind -- no server process, no demo
directory, no PostgreSQL data elsewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.postgres

STEPS = [
    "local servers: PostgreSQL, the Firestore API and the GCS API on free ports",
    "the registry of record, and the databases it records",
    "deploy the shipped catalogue with the offline engine",
    "register the pooled tenants in pool-1, as the platform's SQL job would",
    "sample data: rows, documents and objects of the pooled tenants",
    "onboard soylent: a tenant added to a copy of tenants.yaml, deployed",
    "upgrade soylent to standard, its data with it, while it writes",
    "downgrade soylent to free, its data with it, while it writes",
    "suspend soylent: its data kept, its writes refused",
    "resume soylent",
    "offboard soylent: every store archived and read back, then deleted",
    "restore soylent from its archive",
    "the neighbours, and what the application saw",
]
APP = re.compile(r"application \((\w+)\): (\d+) writes committed, (\d+) refused and retried; longest gap between committed "
                 r"writes: ([0-9.]+)s")


def _requirements() -> None:
    from tenancy import localservers

    missing = []
    try:
        localservers.bindir()
    except localservers.PostgresUnavailable as exc:
        missing.append(str(exc))
    if shutil.which("node") is None or not (ROOT / ".tools/node_modules/@firestore-emulator/server").exists():
        missing.append("the Firestore API server (node and `make servers`)")
    if shutil.which("make") is None:
        missing.append("make")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the demo needs: {'; '.join(missing)}")
        pytest.skip(f"the demo needs: {'; '.join(missing)}")


def _make(target: str, directory: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "TENANCY_REGISTRY", "TENANCY_ENV", "FIRESTORE_EMULATOR_HOST",
                        "STORAGE_EMULATOR_HOST")}
    return subprocess.run(["make", "--no-print-directory", target, f"DEMO_DIR={directory}"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def _steps(out: str) -> list[tuple[str, list[str]]]:
    """(title, lines) of each `== N/13 title ===` section, in order."""
    found: list[tuple[str, list[str]]] = []
    for line in out.splitlines():
        m = re.fullmatch(r"== (\d+)/13 (.+?) =+", line)
        if m:
            assert int(m.group(1)) == len(found) + 1, line
            found.append((m.group(2), []))
        elif found:
            found[-1][1].append(line.strip())
    return found


def _commands(lines: list[str]) -> list[str]:
    return [line.removeprefix("$ .venv/bin/tenancy ") for line in lines if line.startswith("$ ")]


def _app(lines: list[str], tenant: str) -> tuple[int, int, float]:
    found = [m for m in map(APP.match, lines) if m and m.group(1) == tenant]
    assert len(found) == 1, (tenant, lines)
    return int(found[0].group(2)), int(found[0].group(3)), float(found[0].group(4))


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_make_demo_walks_a_tenant_through_its_life_and_demo_down_leaves_nothing(tmp_path):
    _requirements()
    d = tmp_path / "demo"
    restore = subprocess.run([str(ROOT / ".venv/bin/tenancy"), "restore", "--help"], capture_output=True).returncode == 0
    pids: dict[str, int] = {}
    data = d / "postgres"
    try:
        run = _make("demo", d, timeout=600)
        out = run.stdout
        assert run.returncode == 0, out[-4000:]
        pids = {f.stem: int(f.read_text().split()[0]) for f in (d / "pids").glob("*.pid")}
        assert sorted(pids) == ["firestore", "gcs", "postgres"] and all(map(_alive, pids.values()))
        data = (d / "postgres").resolve()
        _check_output(out, d, restore)
    finally:
        down = _make("demo-down", d, timeout=120)
    assert down.returncode == 0, down.stdout
    assert sorted(down.stdout.splitlines()) == sorted(
        [f"stopped {name} (pid {pid})" for name, pid in pids.items()] + [f"removed {d}"])
    assert not d.exists() and not data.exists()
    assert not [name for name, pid in pids.items() if _alive(pid)], "every server the demo started is stopped"
    left = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _alive(int(p.name))
            and str(data) in (p / "cmdline").read_bytes().decode(errors="replace")]
    assert not left, "no PostgreSQL process of the demo is left"
    again = _make("demo-down", d, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == f"no demo in {d}: nothing to stop"


def _check_output(out: str, d: Path, restore: bool) -> None:
    from tenancy.catalog import load_catalog
    from tenancy.topology import every_platform_stack

    shipped = load_catalog(ROOT / "tenants.yaml")
    # the global stack, its identity shard, cell and pool shard, and a stack per tenant that has one
    assert every_platform_stack("dev") == ["dev", "dev.identity-1", "dev.cell-1", "dev.pool-1"]
    stacks = len(every_platform_stack("dev")) + sum(t.has_stack for t in shipped.tenants)
    # in the deployed record's order: merged from the cell and pool-shard stacks, by tenant id
    pooled = sorted((t for t in shipped.tenants if t.model.value == "pooled" and t.in_directory), key=lambda t: t.id)
    models = {m: sum(t.model.value == m for t in shipped.tenants) + (m == "pooled") for m in ("dedicated", "namespace",
                                                                                            "pooled")}
    seeded = [t.id for t in pooled if t.state.value == "active"]
    neighbour = seeded[0]        # the demo's application also writes the first of them throughout
    steps = _steps(out)
    assert [t for t, _ in steps] == STEPS, out[-3000:]
    by = dict(steps)
    where = ["--tenants", f"{d}/tenants.yaml", "--engine", "offline", "--state", f"{d}/state", "--env", "dev"]
    w = " ".join(where)

    servers = by[STEPS[0]]
    port = int(re.search(r"PostgreSQL +127\.0\.0\.1:(\d+)", "\n".join(servers)).group(1))
    assert f"export TENANCY_REGISTRY='host=127.0.0.1 port={port} user=postgres dbname=tenancy_registry'" in servers
    env_file = (d / "env").read_text()
    assert f"export TENANCY_REGISTRY='host=127.0.0.1 port={port} user=postgres dbname=tenancy_registry'" in env_file
    assert "FIRESTORE_EMULATOR_HOST=127.0.0.1:" in env_file and "STORAGE_EMULATOR_HOST=http://127.0.0.1:" in env_file

    registry = by[STEPS[1]]
    names = ["pool-1", "soylent/postgres-1", "soylent/postgres-2", "soylent/postgres-3"]
    assert _commands(registry) == ["registry init --env dev"] + [
        f"registry database {n} --dsn 'host=127.0.0.1 port={port} user=postgres dbname=dev_{n.replace('/', '_').replace('-', '_')}' "
        "--env dev" for n in names]
    assert "registry of environment 'dev' ready at 'host=127.0.0.1 port=" in "\n".join(registry)
    assert [line for line in registry if line.startswith("database ")] == [
        "database pool-1 (pool-1) recorded in the registry of 'dev'",
        *(f"database {n} (tenant:soylent) recorded in the registry of 'dev'" for n in names[1:])]
    # From here on no command is given a DSN.
    later = [c for _, lines in steps[2:] for c in _commands(lines)]
    assert later and not [c for c in later if "host=" in c or "--dsn" in c or "--registry" in c]

    deploy = by[STEPS[2]]
    assert _commands(deploy) == [f"up --engine offline --state {d}/state --env dev"]
    assert f"registry: {len(shipped.tenants)} tenant(s) recorded" in deploy
    assert f"{stacks} stack(s): {stacks} ok, 0 refused, 0 failed, 0 skipped; 0 tenant(s) pending a lifecycle command" \
        in deploy

    register = by[STEPS[3]]
    assert _commands(register) == [f"db apply --as pool-1 --engine offline --state {d}/state --env dev"]
    assert (f"dev's pool-1: {len(pooled)} tenant(s) registered, from the deployed record of dev: "
            + ", ".join(f"{t.id} ({t.state.value})" for t in pooled)) in register

    seed = by[STEPS[4]]
    assert [line.split(":")[0] for line in seed if re.match(r"[\w-]+: ", line)] == [t.id for t in pooled]
    for t in pooled:
        assert (f"{t.id}: suspended: its database refuses its writes; nothing seeded" in seed) == (
            t.state.value == "suspended")
    assert any(line.startswith("created the buckets the stacks declare") and "dev-soylent-uploads" in line for line in seed)

    onboard = by[STEPS[5]]
    assert _commands(onboard) == [f"validate --tenants {d}/tenants.yaml --env dev", f"up --tenant soylent {w}",
                                  f"db apply --as pool-1 {w}"]
    assert (f"{d}/tenants.yaml: valid: {len(shipped.tenants) + 1} tenants ({models['dedicated']} dedicated, "
            f"{models['namespace']} namespace, {models['pooled']} pooled), {len(shipped.plans)} plans; checked against "
            "environment dev") in onboard
    assert (f"dev's pool-1: {len(pooled) + 1} tenant(s) registered, from the deployed record of dev: " + ", ".join(
        sorted([f"{t.id} ({t.state.value})" for t in pooled] + ["soylent (active)"]))) in onboard
    assert f"registry: {len(shipped.tenants) + 1} tenant(s) recorded" in onboard

    for step, to, extra, at in ((STEPS[6], "standard", "", "soylent/postgres-1"),
                                (STEPS[7], "free", f"--export-to {d}/archives/soylent-downgrade --discard graph ",
                                 "pool-1")):
        lines = by[step]
        assert _commands(lines) == [f"upgrade soylent --to {to} {extra}{w}"]
        done = [line for line in lines if re.match(r"op-\w+: done; phases run: ", line)]
        # the export runs (after the switch, from the read-only sources) only when the command archives
        phases = "provision, sync, freeze, copy, verify, switch, " + ("export, " if "--export-to" in extra else "")
        assert len(done) == 1 and f"phases run: {phases}publish, cleanup;" in done[0], done
        assert re.search(r"; write freeze [0-9.]+s", done[0])
        committed, _, _ = _app(lines, "soylent")
        assert committed > 0, "the application wrote through the move"
        assert _app(lines, neighbour)[1] == 0, "the neighbour's writes are never refused"
        assert any(re.fullmatch(rf"check: all \d+ users the application wrote are in {re.escape(at)} \(where the registry "
                                r"points\), each with its last value", line) for line in lines)
        assert f"{d}/tenants.yaml: soylent's entry now says plan: {to}, as the command asks" in lines

    suspend, resume = by[STEPS[8]], by[STEPS[9]]
    assert _commands(suspend) == [f"suspend soylent {w}"] and _commands(resume) == [f"resume soylent {w}"]
    assert any(line.startswith("tenant 'soylent' suspended: its databases refuse its writes") for line in suspend)
    assert _app(suspend, "soylent")[1] > 0, "a suspended tenant's writes are refused"
    assert any(line.startswith("tenant 'soylent' resumed: its databases accept its writes again") for line in resume)
    assert _app(resume, "soylent")[0] > 0, "writes go through again"
    assert any(re.fullmatch(r"the application could not write soylent for [0-9.]+s, from the suspend until the resume",
                            line) for line in resume)

    offboard = by[STEPS[10]]
    assert _commands(offboard) == [f"offboard soylent --export-to {d}/archives/soylent {w}"]
    assert any(line.endswith("then the registry no longer knew the tenant: the application stopped")
               and line.startswith("application (soylent)") for line in offboard)
    assert (d / "archives/soylent/archive.json").exists()

    restored = by[STEPS[11]]
    if restore:
        assert _commands(restored) == [f"restore soylent --from {d}/archives/soylent {w}"]
        assert any(re.fullmatch(r"check: all \d+ users the application wrote before the offboarding are in pool-1 \(where "
                                r"the registry points\), each with its last value", line) for line in restored)
    else:
        assert _commands(restored) == []
        assert restored[0] == ("skipped: `tenancy restore --help` exited 2: this version has no `tenancy restore`, which "
                               "brings an offboarded tenant back from its archive (`tenancy restore soylent --from "
                               f"{d}/archives/soylent`)")

    end = by[STEPS[12]]
    assert (f"neighbours untouched: {', '.join(sorted(seeded))} hold the rows, documents and objects seeded for them "
            f"(and {neighbour} the users its application wrote)") in end
    table = end[end.index(next(line for line in end if line.startswith("step "))):]
    assert [re.split(r"\s{2,}", line)[:2] for line in table[1:8]] == [
        ["onboard soylent", "tenancy up"], ["upgrade to standard", "tenancy upgrade"],
        ["downgrade to free", "tenancy upgrade"], ["suspend soylent", "tenancy suspend"],
        ["resume soylent", "tenancy resume"], ["offboard soylent", "tenancy offboard"],
        ["restore soylent", "tenancy restore"]]
    assert re.search(r"demo done in \d+s\. The servers keep running", out)
