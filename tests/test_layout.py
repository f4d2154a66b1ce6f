"""The data layout (stores.yaml): validated with clear errors; each tenant's stores derived from it and listed in
its directory entry."""

from __future__ import annotations

import json

import pytest

from tenancy.catalog import parse_catalog
from tenancy.errors import ConfigError
from tenancy.stores.layout import load_layout, stores_for

CATALOG = """
version: 1
tenants:
  - {id: alpha, name: Alpha, plan: free, admin_email: a@alpha.example}
  - {id: bravo, name: Bravo, plan: standard, admin_email: b@bravo.example, features: [core, comments]}
  - {id: cobalt, name: Cobalt, plan: enterprise, admin_email: c@cobalt.example,
     dedicated: {project: {id: cobalt-tenancy-prod}}}
"""


def test_stores_follow_the_layout_for_each_model():
    catalog = parse_catalog(CATALOG)
    alpha = stores_for(catalog.tenant("alpha"), "dev", "plat-proj")
    assert alpha.to_json() == {
        "postgres": {"pooled": ["app.users", "app.itineraries", "app.comments", "app.likes"]},
        "objects": "gs://plat-proj-dev-pooled-uploads/alpha/",
        "firestore": {"project": "plat-proj", "database": "dev-pooled", "root": "tenants/alpha",
                      "collections": ["itineraries", "settings", "users"]}}
    assert alpha.postgres["pooled"][-2:] == ("app.audit_events", "app.api_requests"), "a move out carries every table"
    assert alpha.names == ["pooled", "objects", "firestore"]
    bravo = stores_for(catalog.tenant("bravo"), "dev", "plat-proj")
    assert bravo.postgres == {"postgres-1": ("app.users", "app.itineraries", "app.comments", "app.likes"),
                              "postgres-2": ("app.audit_events",), "postgres-3": ("app.api_requests",)}
    assert not bravo.graph, "no recommendations feature: no graph"
    cobalt = stores_for(catalog.tenant("cobalt"), "dev", "plat-proj")
    assert cobalt.graph and cobalt.firestore_project == "cobalt-tenancy-prod" and cobalt.bucket == "dev-cobalt-uploads"
    assert cobalt.to_json()["graph"] == {"namespace": "tenant-cobalt",
                                         "dump": "gs://dev-cobalt-uploads/_tenancy/graph/cobalt/neo4j.dump"}


@pytest.mark.parametrize("text, message", [
    ("postgres: {app.users: {database: postgres-1}}\n", "needs `version: 1`"),
    ("version: 1\npostgres: {Users: {database: postgres-1}}\nfirestore: {users: {}}\ngraph: {feature: recommendations}\n",
     "postgres: 'Users' is not a lowercase schema.table name"),
    ("version: 1\npostgres: {app.users: {database: pg1}}\nfirestore: {users: {}}\ngraph: {feature: recommendations}\n",
     "postgres.app.users.database must be postgres-1 .. postgres-9"),
    ("version: 1\npostgres: {app.users: {database: postgres-1, feature: chat}}\nfirestore: {users: {}}\n"
     "graph: {feature: recommendations}\n", "postgres.app.users.feature 'chat' is not a feature"),
    ("version: 1\npostgres: {app.users: {database: postgres-1}}\ngraph: {feature: recommendations}\n",
     "firestore: declare the tenant's collections"),
    ("version: 1\npostgres: {app.users: {database: postgres-1}}\nfirestore: {users: {}}\n", "graph.feature must be a feature"),
    ("version: [1\n", "cannot read the data layout"),
])
def test_a_bad_layout_is_refused_with_the_key_to_fix(tmp_path, text, message):
    path = tmp_path / "stores.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_layout(path)
    assert message in str(err.value) and str(err.value).startswith("stores.yaml: ")


def test_the_directory_lists_each_tenants_stores(sample_plan):
    from tenancy.catalog import load_catalog
    from tests.conftest import ROOT

    _, data, _ = sample_plan
    # the directory is published in shares, one per cell and pool shard, each tenant in one of them
    shares = {s["name"]: json.loads(s["outputs"]["tenantDirectory"]) for s in data["stacks"] if "tenantDirectory" in s["outputs"]}
    assert set(shares) == {"dev.cell-1", "dev.pool-1"}
    directory = {**shares["dev.cell-1"], **shares["dev.pool-1"]}
    assert len(directory) == sum(map(len, shares.values()))
    assert set(directory) == {t.id for t in load_catalog(ROOT / "tenants.yaml").tenants if t.in_directory}
    for tenant_id, entry in directory.items():
        stores = entry["stores"]
        assert set(stores) >= {"postgres", "objects", "firestore"}, tenant_id
        if entry["model"] == "pooled":
            assert stores["objects"].endswith(f"/{tenant_id}/") and stores["firestore"]["root"] == f"tenants/{tenant_id}"
        else:
            assert stores["objects"] == f"gs://{entry['placement']['bucket']}/"
            assert set(stores["postgres"]) == set(entry["databaseSecrets"])
