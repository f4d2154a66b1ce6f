"""What a one-tenant plan would otherwise recompute on every run, kept on disk (`.cache/tenancy/`) and exact.

`tenancy plan --tenant X` plans X's stack (or, for a pooled tenant, its pool shard), which reads
the outputs of units it does not plan: the global stack's, and its cell's (a pool shard: cell 1's). Those outputs,
and the checked catalogue with its placement, are the caches here:

- **unit exports**: what a unit that is read but not planned exports to its dependents. The global stack's outputs
  less the ones made of the catalogue (`deployedRecord`, `tenantDirectory`: no dependent reads them), and a cell's
  tenant-facing outputs (its cluster and edge: a facing-only run builds no directory). Each is *computed from its
  key's inputs alone*: the program runs with an empty catalogue, the environment's config, and the outputs of the
  units it reads (themselves keyed the same way); the key is the code and pinned packages, the effective config,
  the stack and those outputs. So a cached value is a function of its key by construction, and nothing outside the
  key can have changed it. That these outputs do not depend on the catalogue is what lets a plan use them for a
  fleet's units (tests/test_plancache.py runs them with fleets and an empty catalogue and compares; plans with
  and without the cache are compared byte for byte). Secret outputs are stored as the SECRET marker, never a value.
- **the checked catalogue**: the catalogue read and validated, with the deployed placements of `--deployed-record`,
  and its placement, keyed by the bytes of the catalogue file and of the deployed record, the file's name as
  given, the environment's effective config and the code. Stored only when it had no problem, so every message
  about a bad file comes from reading it. It is a pickle (rebuilding 100,000 validated tenants from JSON would cost
  what validating them does): read only from this checkout's `.cache/`, which only this program writes and which
  whoever could write could as well change the code beside it.

`TENANCY_PLAN_CACHE=0` turns both off: every unit a plan reads runs with the whole catalogue, as without this
module, and the catalogue is read and placed again.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import pickle
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from tenancy import envconfig, naming
from tenancy.catalog import Catalog
from tenancy.offline import run_stack
from tenancy.recorder import SECRET

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".cache" / "tenancy"
SWITCH = "TENANCY_PLAN_CACHE"
# The code the cached values are made by: its config defaults, the pinned packages, every program, component,
# policy and module of the tool (a change anywhere in them invalidates every entry).
CODE_INPUTS = ("Pulumi.yaml", "requirements.txt", "constraints.txt", "components", "stacks", "tenancy", "policy")
# The installed packages the programs run on (constraints.txt pins them; a venv not yet reinstalled may differ).
PACKAGES = ("pulumi", "pulumi-gcp", "pulumi-kubernetes", "pulumi-random", "pydantic", "PyYAML")
# Outputs of the global stack and of a unit's directory that are made of the catalogue: never cached (no unit or
# tenant stack that reads the unit reads them).
CATALOGUE_OUTPUTS = ("deployedRecord", "tenantDirectory")
EMPTY = Catalog(path="", plans={}, tenants=())

Exports = tuple[dict[str, Any], list[str]]


def enabled() -> bool:
    return os.environ.get(SWITCH, "1") != "0"


@lru_cache(maxsize=1)
def code_key() -> str:
    """The code and packages every cached value is made by (read once per process)."""
    h = hashlib.sha256()
    for name in CODE_INPUTS:
        p = ROOT / name
        files = sorted(p.rglob("*.py")) + sorted(p.rglob("*.yaml")) if p.is_dir() else [p]
        for f in files:
            if f.exists() and "__pycache__" not in f.parts:
                h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    for package in PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{package}={version}\0".encode())
    return h.hexdigest()


def config_key(env: str) -> str:
    """The environment's effective config (stacks/Pulumi.<env>.yaml as every program reads it)."""
    return _digest(json.dumps(envconfig.load_stack_config(env), sort_keys=True, default=str))


# ------------------------------------------------------------------------------------------- unit exports

def unit_exports(env: str, stack: str, stack_outputs: dict[str, Exports]) -> Exports:
    """The exports of unit `stack` (the global stack or a cell) that its dependents read, from the cache or from a
    run of its program with an empty catalogue. `stack_outputs`: the exports of the units it reads (a cell: the
    global stack's), part of its key."""
    kind = naming.stack_kind(stack)[0]
    if kind not in (naming.ENV_STACK, naming.CELL_STACK):
        raise ValueError(f"stack '{stack}': only the global stack's and cells' exports are cached")
    key = _digest(json.dumps([code_key(), config_key(env), stack, stack_outputs], sort_keys=True))
    path = CACHE_DIR / f"unit-{stack}.json"
    hit = _read_json(path, key)
    if hit is not None:
        return hit["outputs"], hit["secretOutputs"]
    config = envconfig.load_stack_config(env) if kind == naming.ENV_STACK else {}
    result, _ = run_stack(stack, EMPTY, config, stack_outputs, tenant_facing_only=kind == naming.CELL_STACK)
    exports = facing(({k: (SECRET if k in result.secret_outputs else v) for k, v in result.raw_outputs.items()},
                      list(result.secret_outputs)))
    _write(path, json.dumps({"key": key, "outputs": exports[0], "secretOutputs": exports[1]}).encode())
    return exports


def facing(exports: Exports) -> Exports:
    """A unit's exports (outputs as its dependents' StackReferences read them, secrets as the marker) less those
    made of the catalogue."""
    raw = {k: v for k, v in exports[0].items() if k not in CATALOGUE_OUTPUTS}
    return raw, sorted(k for k in exports[1] if k in raw)


# -------------------------------------------------------------------------------------- checked catalogue

def checked_catalog(tenants: str | Path, env: str, deployed_record: str | None,
                    check: Callable[[], tuple[Catalog, Any]]) -> tuple[Catalog, Any]:
    """(catalogue, placement) as `check()` gives them for the catalogue file `tenants` in `env` with the deployed
    record `deployed_record`: from the cache when neither file, the config nor the code changed. `check()` raises
    on any problem; what it returns is stored only when the files read before and after it are the same."""
    if not enabled():
        return check()
    key = _files_key(tenants, env, deployed_record)
    path = CACHE_DIR / f"catalog-{env}.pickle"
    if key is not None:
        # Hundreds of thousands of objects, none of them garbage: without collections while they are made (each
        # would walk all of them so far), loading a 100,000-tenant catalogue takes a fifth of the time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            with path.open("rb") as f:
                if f.readline().rstrip(b"\n") == key.encode():
                    return pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, IndexError, TypeError):
            pass
        finally:
            if collecting:
                gc.enable()
    checked = check()
    if key is not None and key == _files_key(tenants, env, deployed_record):
        _write(path, key.encode() + b"\n" + pickle.dumps(checked, protocol=pickle.HIGHEST_PROTOCOL))
    return checked


def _files_key(tenants: str | Path, env: str, deployed_record: str | None) -> str | None:
    """The key of a checked catalogue, or None when a file cannot be read (the check reports it)."""
    try:
        parts = [code_key(), config_key(env), env, str(tenants), _digest(Path(tenants).read_bytes()),
                 _digest(Path(deployed_record).read_bytes()) if deployed_record else "-"]
    except Exception:  # noqa: BLE001 -- a missing file or bad config: the uncached check reports it as bad input
        return None
    return _digest("\0".join(parts))


# ------------------------------------------------------------------------------------------------- files

def _digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _read_json(path: Path, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("key") == key else None


def _write(path: Path, data: bytes) -> None:
    """A whole file or none: two plans at once each write theirs and rename it into place."""
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        pass  # a read-only checkout plans all the same, only slower
