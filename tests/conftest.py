from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests import pg

ROOT = Path(__file__).resolve().parent.parent
os.environ["PULUMI_ERROR_OUTPUT_STRING"] = "1"
os.environ.pop("PULUMI_CONFIG", None)


@pytest.fixture(autouse=True)
def _empty_plan_cache(tmp_path_factory, monkeypatch):
    """Every test starts with an empty plan cache of its own (tenancy/plancache.py): an entry another test wrote, or
    one made while a test had patched code the cache key cannot see, is never read."""
    from tenancy import plancache

    monkeypatch.setattr(plancache, "CACHE_DIR", tmp_path_factory.mktemp("plancache"))


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL per test process. Under CI a missing server is a failure, not a skip."""
    try:
        server = pg.start()
    except pg.PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture
def fresh_db(pg_server):
    """A new empty database; returns its name."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def tenancy_db(pg_server, fresh_db):
    """A database with the tenancy SQL applied (by the real `tenancy db apply` code) and login roles."""
    import psycopg

    from tenancy import db

    db.apply(pg_server.dsn(dbname=fresh_db))
    with psycopg.connect(pg_server.dsn(dbname=fresh_db), autocommit=True) as conn:
        conn.execute("ALTER ROLE tenancy_owner LOGIN; ALTER ROLE tenancy_app LOGIN")
    return fresh_db


@pytest.fixture(scope="session")
def sample_plan(tmp_path_factory):
    """The real offline plan of the committed tenants.yaml: (result, plan.json data, output directory)."""
    import json

    from tenancy import plan as planmod
    from tenancy.catalog import load_catalog

    out = tmp_path_factory.mktemp("plan")
    result = planmod.plan(load_catalog(ROOT / "tenants.yaml"), "dev", workers=2)
    planmod.write(result, out)
    return result, json.loads((out / "plan.json").read_text()), out


def stack_of(data: dict, name: str) -> dict:
    for s in data["stacks"]:
        if s["name"] == name:
            return s
    raise AssertionError(f"no stack {name} in plan: {[s['name'] for s in data['stacks']]}")


def of_type(stack: dict, type_: str) -> list[dict]:
    return [r for r in stack["resources"] if r["type"] == type_]


def catalog_repo_at(tmp_path) -> Path:
    """A git repository holding a copy of the committed tenants.yaml in one commit; returns its catalogue path."""
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "tenants.yaml", repo / "tenants.yaml")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return repo / "tenants.yaml"


def _server_or_fail(start, what: str):
    from tests import servers

    try:
        return start()
    except servers.ServerUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required under CI: {exc}")
        pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture(scope="session")
def firestore_server():
    """One Firestore API server per test process; FIRESTORE_EMULATOR_HOST points at it."""
    from tests import servers

    server = _server_or_fail(servers.start_firestore, "the Firestore API server")
    os.environ["FIRESTORE_EMULATOR_HOST"] = server.host
    yield server
    os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """One Cloud Storage API server per test process; STORAGE_EMULATOR_HOST points at it."""
    from tests import servers

    server = _server_or_fail(servers.start_gcs, "the GCS API server")
    os.environ["STORAGE_EMULATOR_HOST"] = server.host
    yield server
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    server.stop()


@pytest.fixture
def registry(pg_server):
    """A fresh registry database for environment dev (the real `tenancy registry init` code)."""
    import psycopg

    from tenancy.operations.registry import Registry

    name = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield Registry.init(pg_server.dsn(dbname=name), "dev")
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_DEPLOYED: dict[str, Path] = {}


def deployed_offline(catalog, state_dir: Path, env: str = "dev"):
    """An OfflineEngine over `state_dir` holding the environment deployed with `catalog` (`tenancy up`).
    The deploy runs once per catalogue and stack config in a test process; each test gets a copy of its state."""
    import hashlib
    import json
    import shutil
    import tempfile

    from tenancy.envconfig import load_stack_config
    from tenancy.catalog import to_document
    from tenancy.engine import OfflineEngine
    from tenancy.lifecycle import deploy

    key = hashlib.sha256(json.dumps([to_document(catalog), load_stack_config(env), env], sort_keys=True,
                                    default=str).encode()).hexdigest()
    if key not in _DEPLOYED:
        template = Path(tempfile.mkdtemp(prefix="tenancy-deployed-"))
        outcomes = deploy.deploy(OfflineEngine(template, env), catalog, env, mode="up")
        assert outcomes and {o.status for o in outcomes} == {"ok"}, [(o.stack, o.status, o.message) for o in outcomes]
        _DEPLOYED[key] = template
    shutil.copytree(_DEPLOYED[key], state_dir, dirs_exist_ok=True)
    return OfflineEngine(state_dir, env)


def deployed_directory(engine, env: str = "dev") -> dict:
    """The tenant directory as deployed: the cells' and pool shards' directories, read as one (the deployed record)."""
    from tenancy.lifecycle import record

    return record.read(engine, env).directory
