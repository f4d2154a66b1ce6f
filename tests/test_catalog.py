"""The catalogue rules: each one has an input that breaks it and the message a user reads."""

from __future__ import annotations

import textwrap

import pytest

from tenancy.catalog import BUILTIN_PLANS, Model, State, load_catalog, parse_catalog
from tenancy.errors import CatalogError
from tests.conftest import ROOT

GOOD = """
tenants:
  - id: acme
    name: Acme
    plan: standard
    admin_email: ops@acme.example
"""


def versioned(text: str) -> str:
    """The catalogue text with `version: 1` appended (at the end, so that line numbers stay put)."""
    return textwrap.dedent(text) + "\nversion: 1\n"


def parse(text: str):
    return parse_catalog(versioned(text), "tenants.yaml")


def problems(text: str, raw: bool = False) -> list[str]:
    with pytest.raises(CatalogError) as exc:
        parse_catalog(textwrap.dedent(text) if raw else versioned(text), "tenants.yaml")
    return [str(p) for p in exc.value.problems]


def one(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def tenant(**fields) -> str:
    base = {"id": "acme", "name": "Acme", "plan": "standard", "admin_email": "ops@acme.example"}
    base.update(fields)
    lines = ["tenants:", "  - " + "\n    ".join(f"{k}: {v}" for k, v in base.items() if v is not None)]
    return "\n".join(lines) + "\n"


def test_committed_catalogue_is_valid_and_covers_every_plan_and_state():
    catalog = load_catalog(ROOT / "tenants.yaml")
    assert len(catalog.tenants) >= 8
    assert {t.plan_name for t in catalog.tenants} >= {"free", "standard", "enterprise", "basic", "premium"}
    assert {t.state for t in catalog.tenants} == set(State)
    assert {t.model for t in catalog.tenants} == set(Model)
    assert (ROOT / "tenants.yaml").read_text().startswith("# yaml-language-server: $schema=./schemas/tenants.schema.json")


def test_defaults_resolve_from_the_plan():
    t = parse(GOOD).tenant("acme")
    assert t.subdomain == "acme"
    assert t.state is State.ACTIVE
    assert t.model is Model.NAMESPACE
    assert t.features == BUILTIN_PLANS["standard"].features
    assert t.limits == BUILTIN_PLANS["standard"].limits


def test_builtin_plans_match_the_design_table():
    free, standard, enterprise = (BUILTIN_PLANS[p] for p in ("free", "standard", "enterprise"))
    assert (free.model, free.limits.api_rate_limit, free.limits.storage_gb, free.limits.backup_retention_days) == (Model.POOLED, 100, 1, 7)
    assert (standard.model, standard.limits.api_rate_limit, standard.limits.storage_gb, standard.limits.backup_retention_days) == (Model.NAMESPACE, 1000, 50, 30)
    assert (enterprise.model, enterprise.limits.backup_retention_days, enterprise.high_availability) == (Model.DEDICATED, 365, True)
    assert standard.databases == ("postgres-1", "postgres-2", "postgres-3") and free.databases == ()


@pytest.mark.parametrize("bad,message", [
    ("Acme", "id 'Acme' may contain only lowercase letters, digits and hyphens, and must not start or end with a hyphen"),
    ("ac", "id 'ac' has 2 characters; use 3 to 50"),
    ("a" * 51, f"id '{'a' * 51}' has 51 characters; use 3 to 50"),
    ("-acme", "id '-acme' may contain only lowercase letters, digits and hyphens, and must not start or end with a hyphen"),
    ("acme-", "id 'acme-' may contain only lowercase letters, digits and hyphens, and must not start or end with a hyphen"),
    ("ac_me", "id 'ac_me' may contain only lowercase letters, digits and hyphens, and must not start or end with a hyphen"),
    ("ac--me", "id 'ac--me' contains '--' (reserved for derived names and punycode); use single hyphens"),
])
def test_bad_ids_name_the_position_and_the_fix(bad, message):
    assert one(tenant(id=f"'{bad}'")) == f"tenants.yaml:2: tenants[0] (position 1): id: {message}"


@pytest.mark.parametrize("reserved", ["www", "api", "admin", "app", "staging", "auth", "status"])
def test_reserved_ids_and_subdomains(reserved):
    assert one(tenant(id=reserved)) == f"tenants.yaml:2: tenants[0] (position 1): id: id '{reserved}' is reserved; choose another id"
    assert one(tenant(subdomain=reserved)) == (
        f"tenants.yaml:6: tenant 'acme': subdomain: subdomain '{reserved}' is reserved; choose another subdomain")


def test_subdomain_follows_the_id_rules():
    assert one(tenant(subdomain="Bad.Sub")) == ("tenants.yaml:6: tenant 'acme': subdomain: subdomain 'Bad.Sub' may contain only "
                                                "lowercase letters, digits and hyphens, and must not start or end with a hyphen")


def test_ids_subdomains_and_custom_domains_are_unique():
    text = """
    tenants:
      - {id: acme, name: A, plan: enterprise, admin_email: a@a.example, custom_domain: portal.acme.example}
      - {id: acme, name: B, plan: free, admin_email: b@b.example}
      - {id: other, name: C, plan: free, admin_email: c@c.example, subdomain: acme}
      - {id: third, name: D, plan: enterprise, admin_email: d@d.example, custom_domain: portal.acme.example}
    """
    assert problems(text) == [
        "tenants.yaml:4: tenant 'acme': id: 'acme' is already used by the tenant at line 3; each tenant needs its own id",
        "tenants.yaml:5: tenant 'other': subdomain: 'acme' is already used by the tenant at line 3; each tenant needs its own subdomain",
        "tenants.yaml:6: tenant 'third': custom_domain: 'portal.acme.example' is already used by the tenant at line 3; "
        "each tenant needs its own custom domain",
    ]


def test_unknown_keys_anywhere_are_errors_with_a_suggestion():
    text = """
    plans:
      premium:
        model: pooled
        limits: {api_rate_limit: 1, storage_gb: 1, cpu: 1, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7, bogus: 1}
        features: [core]
        databsaes: []
    tenants:
      - id: acme
        name: Acme
        plan: standard
        admin_email: ops@acme.example
        subdomian: acme2
        limits: {cpuu: 2}
    extra: true
    """
    assert problems(text) == [
        "tenants.yaml:5: plan 'premium': limits.bogus: unknown key 'bogus'; remove it or fix the spelling "
        "(allowed keys: api_rate_limit, backup_retention_days, cpu, memory_gb, pods, pvcs, services, storage_gb)",
        "tenants.yaml:7: plan 'premium': databsaes: unknown key 'databsaes'; remove it or fix the spelling (did you mean 'databases'?)",
        "tenants.yaml:13: tenant 'acme': subdomian: unknown key 'subdomian'; remove it or fix the spelling (did you mean 'subdomain'?)",
        "tenants.yaml:14: tenant 'acme': limits.cpuu: unknown key 'cpuu'; remove it or fix the spelling (did you mean 'cpu'?)",
        "tenants.yaml:15: extra: unknown key 'extra'; remove it or fix the spelling (allowed keys: plans, tenants, version)",
    ]


def test_custom_domain_only_on_dedicated_plans():
    assert one(tenant(custom_domain="portal.acme.example")) == (
        "tenants.yaml:6: tenant 'acme': custom_domain: custom domains need a dedicated plan, and 'standard' is namespace; "
        "remove custom_domain or move the tenant to a dedicated plan")
    assert parse(tenant(plan="enterprise", custom_domain="portal.acme.example")).tenant("acme").custom_domain == "portal.acme.example"


def test_custom_domain_must_be_a_domain():
    assert one(tenant(plan="enterprise", custom_domain="https://acme.example/x")) == (
        "tenants.yaml:6: tenant 'acme': custom_domain: 'https://acme.example/x' is not a domain name; "
        "write it lowercase without scheme or path, e.g. portal.acme.com")


def test_features_only_those_the_plan_allows():
    assert one(tenant(plan="free", features="[core, sso, recommendations]")) == (
        "tenants.yaml:6: tenant 'acme': features: plan 'free' does not allow sso, recommendations; allowed: core, comments, likes")
    assert one(tenant(features="[core, telepathy]")).startswith(
        "tenants.yaml:6: tenant 'acme': features.1: 'telepathy' is not allowed; use one of 'core', 'comments'")


def test_limit_overrides_within_the_plans_bounds():
    assert one(tenant(limits="{api_rate_limit: 6000}")) == (
        "tenants.yaml:6: tenant 'acme': limits.api_rate_limit: 6000 exceeds plan 'standard' maximum of 5000; "
        "lower it or choose a larger plan")
    assert one(tenant(plan="free", limits="{storage_gb: 2}")) == (
        "tenants.yaml:6: tenant 'acme': limits.storage_gb: 2 exceeds plan 'free' maximum of 1; lower it or choose a larger plan")
    assert one(tenant(limits="{cpu: -1}")) == (
        "tenants.yaml:6: tenant 'acme': limits.cpu: '-1': input should be greater than 0")
    ok = parse(tenant(limits="{api_rate_limit: 4000, cpu: 8}")).tenant("acme")
    assert (ok.limits.api_rate_limit, ok.limits.cpu, ok.limits.storage_gb) == (4000, 8, 50)


def test_valid_email():
    assert one(tenant(admin_email="not-an-email")) == (
        "tenants.yaml:5: tenant 'acme': admin_email: 'not-an-email' is not a valid email address")


def test_region_must_be_a_gcp_region():
    assert one(tenant(region="europe-west")) == (
        "tenants.yaml:6: tenant 'acme': region: 'europe-west' is not a Google Cloud region (did you mean 'europe-west9'?); "
        "use a region name such as europe-west1")
    assert parse(tenant(region="us-central1")).tenant("acme").region == "us-central1"


def test_unknown_plan_suggests_the_closest():
    assert one(tenant(plan="standrad")) == (
        "tenants.yaml:4: tenant 'acme': plan: unknown plan 'standrad'; did you mean 'standard'? "
        "use one of enterprise, free, standard or declare it under 'plans'")


def test_missing_required_fields():
    assert problems("tenants:\n  - id: acme\n") == [
        "tenants.yaml:2: tenant 'acme': name: is required; add it",
        "tenants.yaml:2: tenant 'acme': plan: is required; add it",
        "tenants.yaml:2: tenant 'acme': admin_email: is required; add it",
    ]


def test_state_must_be_known():
    assert one(tenant(state="paused")) == (
        "tenants.yaml:6: tenant 'acme': state: 'paused' is not allowed; use one of 'active', 'suspended' or 'offboarded'")


def test_yaml_syntax_errors_report_the_line():
    assert one("tenants:\n  - id: acme\n    name: [unclosed\n    plan: free\n") .startswith(
        "tenants.yaml:4: (syntax): YAML syntax error:")
    assert one("tenants:\n  - id: a\n    id: b\n") == (
        "tenants.yaml:3: (syntax): YAML syntax error: duplicate key 'id' (first at line 2); keep one; fix the YAML at this line")


def test_all_problems_in_one_run_even_in_broken_entries():
    text = """
    tenants:
      - {id: Bad_ID, name: X, plan: free, admin_email: x@x.example, custom_domain: a.example, features: [sso]}
      - {id: ok-one, name: Y, plan: fre, admin_email: nope}
    """
    assert problems(text) == [
        "tenants.yaml:3: tenants[0] (position 1): id: id 'Bad_ID' may contain only lowercase letters, digits and hyphens, "
        "and must not start or end with a hyphen",
        "tenants.yaml:3: tenants[0] (position 1): custom_domain: custom domains need a dedicated plan, and 'free' is pooled; "
        "remove custom_domain or move the tenant to a dedicated plan",
        "tenants.yaml:3: tenants[0] (position 1): features: plan 'free' does not allow sso; allowed: core, comments, likes",
        "tenants.yaml:4: tenant 'ok-one': admin_email: 'nope' is not a valid email address",
        "tenants.yaml:4: tenant 'ok-one': plan: unknown plan 'fre'; did you mean 'free'? use one of enterprise, free, "
        "standard or declare it under 'plans'",
    ]


def test_plans_are_checked_for_coherence():
    text = """
    plans:
      cheap:
        model: pooled
        limits: {api_rate_limit: 1, storage_gb: 1, cpu: 1, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7}
        features: [core, recommendations]
    tenants: []
    """
    assert one(text) == ("tenants.yaml:3: plan 'cheap': (entry): feature(s) recommendations need per-tenant infrastructure; "
                         "remove them from this pooled plan")


def test_catalogue_may_add_pooled_plans_without_code_changes():
    text = """
    plans:
      premium:
        model: pooled
        limits: {api_rate_limit: 500, storage_gb: 20, cpu: 1, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 14}
        features: [core, api-access]
    tenants:
      - {id: hooli, name: Hooli, plan: premium, admin_email: a@hooli.example}
    """
    t = parse(text).tenant("hooli")
    assert (t.model, t.limits.api_rate_limit, t.plan_name) == (Model.POOLED, 500, "premium")


def test_dedicated_settings_only_for_dedicated_plans_and_complete():
    assert one(tenant(dedicated="{private_endpoint: true}")) == (
        "tenants.yaml:6: tenant 'acme': dedicated: dedicated settings apply to dedicated plans only, and 'standard' is namespace; "
        "remove the 'dedicated' block")
    assert one(tenant(plan="enterprise", dedicated="{project: {create: true, id: acme-proj-1}}")) == (
        "tenants.yaml:6: tenant 'acme': dedicated.project: create: true needs folder_id and billing_account")
    assert one(tenant(plan="enterprise", dedicated='{project: {create: true, folder_id: "123456789012", '
                                                   'billing_account: 01AB23-45CD67-89EF01}}')) == (
        "tenants.yaml:6: tenant 'acme': dedicated.project: create: true needs the id of the project to create")


def test_kms_key_not_on_pooled_plans():
    assert one(tenant(plan="free", kms_key="projects/p/locations/l/keyRings/r/cryptoKeys/k")) == (
        "tenants.yaml:6: tenant 'acme': kms_key: a pooled plan shares the platform bucket; remove kms_key or move the "
        "tenant to a namespace or dedicated plan")


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(CatalogError) as exc:
        load_catalog(tmp_path / "nope.yaml")
    assert str(exc.value) == f"{tmp_path / 'nope.yaml'}: (file): file not found; pass --tenants FILE or create tenants.yaml"


def test_models_are_frozen():
    t = parse(GOOD).tenant("acme")
    with pytest.raises(Exception):
        t.plan.limits.cpu = 99  # type: ignore[misc]


def test_operator_group_is_a_group_email_on_namespace_and_dedicated_plans():
    from tenancy.catalog import to_document, with_tenant
    catalog = parse(tenant(operator_group="acme-ops@acme.example"))
    assert catalog.tenant("acme").operator_group == "acme-ops@acme.example"
    assert to_document(catalog)["tenants"][0]["operator_group"] == "acme-ops@acme.example"
    moved = with_tenant(catalog, "acme", plan="enterprise")
    assert moved.tenant("acme").operator_group == "acme-ops@acme.example"
    assert with_tenant(catalog, "acme", plan="free").tenant("acme").operator_group is None
    assert parse(GOOD).tenant("acme").operator_group is None
    assert one(tenant(operator_group="acme-ops")) == (
        "tenants.yaml:6: tenant 'acme': operator_group: 'acme-ops' is not a valid email address")
    assert one(tenant(plan="free", operator_group="acme-ops@acme.example")) == (
        "tenants.yaml:6: tenant 'acme': operator_group: a pooled plan has no namespace or cluster of the tenant's own "
        "for operators to run; remove operator_group or move the tenant to a namespace or dedicated plan")


def test_node_isolation_defaults_per_model_and_pooled_plans_stay_shared():
    from tenancy.catalog import NodeIsolation
    assert [BUILTIN_PLANS[p].node_isolation for p in ("free", "standard", "enterprise")] == [
        NodeIsolation.SHARED, NodeIsolation.SANDBOX, NodeIsolation.DEDICATED]
    plan = """
    plans:
      custom:
        model: {model}
        {extra}
        limits: {{api_rate_limit: 1, storage_gb: 1, cpu: 1, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7}}
        features: [core]
        databases: {dbs}
    tenants: []
    """
    def load(model, extra="", dbs="[postgres-1]"):
        return parse(plan.format(model=model, extra=extra, dbs=dbs)).plans["custom"]
    assert load("namespace").node_isolation is NodeIsolation.SANDBOX
    assert load("dedicated").node_isolation is NodeIsolation.DEDICATED
    assert load("pooled", dbs="[]").node_isolation is NodeIsolation.SHARED
    assert load("namespace", "node_isolation: dedicated").node_isolation is NodeIsolation.DEDICATED
    assert one(plan.format(model="pooled", extra="node_isolation: sandbox", dbs="[]")) == (
        "tenants.yaml:3: plan 'custom': (entry): a pooled plan runs every tenant in the shared deployment, so "
        "node_isolation 'sandbox' cannot apply; use shared or model namespace/dedicated")
    assert one(plan.format(model="dedicated", extra="node_isolation: shared", dbs="[postgres-1]")) == (
        "tenants.yaml:3: plan 'custom': (entry): node_isolation shared is for pooled plans; a dedicated plan uses sandbox or dedicated")
    assert one(plan.format(model="namespace", extra="node_isolation: gvisor", dbs="[postgres-1]")) == (
        "tenants.yaml:5: plan 'custom': node_isolation: 'gvisor' is not allowed; use one of 'shared', 'sandbox' or 'dedicated'")


# ------------------------------------------------------------------ untrusted input: the loader must hold


LAUGHS = "version: 1\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"
ALIASES = "anchors and aliases (&name, *name) are not accepted in a catalogue (limit: none); write each value out in full"
TOO_DEEP = "nesting deeper than 20 levels (the limit; a catalogue needs about 6); is the file what you meant to pass?"


@pytest.mark.parametrize("text,message", [
    (LAUGHS, f"tenants.yaml:2: (syntax): YAML {ALIASES}"),
    ("version: 1\ntenants:\n  - &t {id: acme, name: A, plan: free, admin_email: a@a.example}\n", f"tenants.yaml:3: (syntax): YAML {ALIASES}"),
    ("[" * 100_000, f"tenants.yaml:1: (syntax): {TOO_DEEP}"),
    ("version: 1\ntenants:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(30)), f"tenants.yaml:22: (syntax): {TOO_DEEP}"),
    ("version: 1\n? [a, b]\n: 1\n", "tenants.yaml:2: (syntax): a list or mapping is used as a key; keys are plain names"),
    ("a" * 4_000_000, "tenants.yaml:1: (file): the catalogue must be a mapping with 'plans' and 'tenants' keys"),
    ("x" * (17 * 2**20), "tenants.yaml: (file): the file has 17,825,792 bytes or more, over the limit of 16,777,216 bytes "
                         "(16 MiB); is it the catalogue you meant to pass?"),
], ids=["billion-laughs", "anchor", "deep-list", "deep-mapping", "complex-key", "one-huge-scalar", "over-16-MiB"])
def test_hostile_yaml_is_one_clear_problem(text, message):
    assert problems(text, raw=True) == [message]


def test_line_index_does_not_recurse():
    import yaml

    from tenancy.catalog import line_index
    node = leaf = yaml.ScalarNode("tag:yaml.org,2002:str", "x", start_mark=yaml.Mark("f", 0, 0, 0, None, None))
    for _ in range(3000):  # three times the interpreter's recursion limit
        node = yaml.SequenceNode("tag:yaml.org,2002:seq", [node], start_mark=leaf.start_mark)
    lines = line_index(node)
    assert len(lines) == 3001 and lines[(0,) * 3000] == 1


def test_a_50_mb_file_or_an_endless_device_is_refused_after_reading_16_mib(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(50 * 2**20)
    for path in (big, "/dev/zero"):
        with pytest.raises(CatalogError) as exc:
            load_catalog(path)
        assert str(exc.value) == (f"{path}: (file): the file has 16,777,217 bytes or more, over the limit of 16,777,216 "
                                  "bytes (16 MiB); is it the catalogue you meant to pass?")
    with pytest.raises(CatalogError, match=f"^{tmp_path}: \\(file\\): is a directory; pass the catalogue file$"):
        load_catalog(tmp_path)


def test_cli_refuses_a_hostile_file_with_exit_2_and_no_traceback(tmp_path):
    import subprocess
    import sys

    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(LAUGHS)
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000)
    for path, line in ((hostile, f"{hostile}:2: (syntax): YAML {ALIASES}"), (deep, f"{deep}:1: (syntax): {TOO_DEEP}")):
        run = subprocess.run([sys.executable, "-m", "tenancy", "validate", "--tenants", str(path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert run.returncode == 2, run.stderr
        assert run.stderr.splitlines() == [line, "1 problem(s); nothing was planned or applied"]
        assert run.stdout == ""


def test_huge_values_are_cut_short_in_messages():
    found = problems(tenant(admin_email="x" * 3_000_000, name="n" * 200))
    assert found == [
        "tenants.yaml:3: tenant 'acme': name: " + "'" + "n" * 60 + "…': string should have at most 100 characters",
        "tenants.yaml:5: tenant 'acme': admin_email: " + "'" + "x" * 60 + "…' is not a valid email address",
    ]
    key = problems("tenants: []\n" + "k" * 1000 + ": 1\n")  # YAML's longest plain key is 1024 characters
    assert key == ["tenants.yaml:2: " + "k" * 60 + "…: unknown key '" + "k" * 60 + "…'; remove it or fix the spelling "
                   "(allowed keys: plans, tenants, version)"]


def test_a_flood_of_bad_entries_stops_at_100_problems():
    found = problems("tenants:\n" + "- {}\n" * 10_000)
    assert len(found) == 101
    assert found[0] == "tenants.yaml:2: tenants[0] (position 1): id: is required; add it"
    assert found[-1] == "tenants.yaml: (file): stopped after 100 problems (the limit); fix these and run again"


# ------------------------------------------------------------------ patterns match the whole value


PROJECT = "{create: true, id: acme-proj-1, folder_id: '123456789012', billing_account: 01AB23-45CD67-89EF01}"


@pytest.mark.parametrize("fields,line,message", [
    ({"id": '"globex\\n"'}, 2, "tenants[0] (position 1): id: id 'globex\\n' may contain only lowercase letters, digits and "
                               "hyphens, and must not start or end with a hyphen"),
    ({"subdomain": '"globex\\n"'}, 6, "tenant 'acme': subdomain: subdomain 'globex\\n' may contain only lowercase letters, "
                                      "digits and hyphens, and must not start or end with a hyphen"),
    ({"admin_email": '"a@acme.example\\n"'}, 5, "tenant 'acme': admin_email: 'a@acme.example\\n' is not a valid email address"),
    ({"operator_group": '"ops@acme.example\\n"'}, 6, "tenant 'acme': operator_group: 'ops@acme.example\\n' is not a valid email address"),
    ({"plan": "enterprise", "custom_domain": '"portal.acme.example\\n"'}, 6,
     "tenant 'acme': custom_domain: 'portal.acme.example\\n' is not a domain name; write it lowercase without scheme or path, "
     "e.g. portal.acme.com"),
    ({"region": '"europe-west1\\n"'}, 6, "tenant 'acme': region: 'europe-west1\\n' is not a Google Cloud region (did you mean "
                                        "'europe-west1'?); use a region name such as europe-west1"),
    ({"kms_key": '"projects/p/locations/l/keyRings/r/cryptoKeys/k\\n"'}, 6,
     "tenant 'acme': kms_key: 'projects/p/locations/l/keyRings/r/cryptoKeys/k\\n' has the wrong format; string should match "
     "pattern '^projects/[^/\\s]+/locations/[^/\\s]+/keyRings/[^/\\s]+/cryptoKeys/[^/\\s]+$'"),
    ({"plan": "enterprise", "dedicated": '{project: {id: "acme-proj-1\\n"}}'}, 6,
     "tenant 'acme': dedicated.project.id: 'acme-proj-1\\n' is not a GCP project id (6-30 characters: lowercase letters, "
     "digits, hyphens; starts with a letter)"),
    ({"plan": "enterprise", "dedicated": "{project: " + PROJECT.replace("'123456789012'", '"123456789012\\n"') + "}"}, 6,
     "tenant 'acme': dedicated.project.folder_id: '123456789012\\n' has the wrong format; string should match pattern "
     "'^[0-9]{6,20}$'"),
    ({"plan": "enterprise", "dedicated": "{project: " + PROJECT.replace("01AB23-45CD67-89EF01", '"01AB23-45CD67-89EF01\\n"') + "}"}, 6,
     "tenant 'acme': dedicated.project.billing_account: '01AB23-45CD67-89EF01\\n' has the wrong format; string should match "
     "pattern '^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$'"),
    ({"plan": "enterprise", "dedicated": '{project: {id: acme-proj-1}, log_sink: "storage.googleapis.com/b\\n"}'}, 6,
     "tenant 'acme': dedicated.log_sink: 'storage.googleapis.com/b\\n' has the wrong format; string should match pattern "
     "'^(storage|bigquery|pubsub|logging)\\.googleapis\\.com/.+$'"),
    ({"plan": "enterprise", "dedicated": '{project: {id: acme-proj-1}, notification_email: "a@acme.example\\n"}'}, 6,
     "tenant 'acme': dedicated.notification_email: 'a@acme.example\\n' is not a valid email address"),
])
def test_a_trailing_newline_never_passes(fields, line, message):
    assert one(tenant(**fields)) == f"tenants.yaml:{line}: {message}"


def test_plan_names_and_database_names_match_whole_values():
    text = """
    plans:
      "gold\\n":
        model: namespace
        limits: {api_rate_limit: 1, storage_gb: 1, cpu: 1, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7}
        features: [core]
        databases: ["postgres-1\\n"]
    """
    assert problems(text) == [
        "tenants.yaml:7: plan 'gold\\n': databases.0: 'postgres-1\\n' has the wrong format; string should match pattern "
        "'^postgres-[1-9]$'",
    ]
    assert problems(text.replace('databases: ["postgres-1\\n"]', "databases: [postgres-1]")) == [
        "tenants.yaml:2: plans: plan name 'gold\\n' must be 2-31 lowercase letters, digits or hyphens, starting with a letter",
    ]


# ------------------------------------------------------------------ no name of the platform's


@pytest.mark.parametrize("reserved,reason", [
    ("pooled", "it would name the same service account as the platform's pooled application identity"),
    ("shared", "it would name the same GKE cluster as the platform's shared GKE cluster"),
    ("sql-migrator", "it would name the same service account as the platform's SQL migrator identity"),
    ("globex-pooled", "it could name the same bucket as the platform's pooled uploads bucket (<project>-<env>-pooled-uploads)"),
    ("platform", "it is the name of the platform's platform stack"),
    ("tenancy-system", "it is the name of the platform's system namespace"),
    ("gke-nodes", "it is the name of the platform's GKE node service account"),
    ("system", "it is the name of the platform's system namespace"),
    ("identity", "it is the name of the platform's Identity Platform configuration"),
    ("directory", "it is the name of the platform's tenant directory"),
    ("cert-manager", "it is the name of the platform's certificate manager namespace"),
])
def test_ids_naming_a_platform_component_are_reserved(reserved, reason):
    assert one(tenant(id=reserved)) == (
        f"tenants.yaml:2: tenants[0] (position 1): id: tenant id '{reserved}' is reserved: {reason}; choose another id")


def test_subdomains_naming_a_platform_component_are_reserved():
    assert one(tenant(subdomain="pooled")) == (
        "tenants.yaml:6: tenant 'acme': subdomain: subdomain 'pooled' is reserved: it is the name of the platform's "
        "pooled tier (namespace, database, bucket, service account); choose another subdomain")
    assert one(tenant(subdomain="ingress")) == (
        "tenants.yaml:6: tenant 'acme': subdomain: subdomain 'ingress' is reserved; choose another subdomain")


def test_two_dedicated_tenants_may_not_share_a_project():
    text = """
    tenants:
      - {id: acme, name: A, plan: enterprise, admin_email: a@a.example, dedicated: {project: {id: shared-proj-1}}}
      - {id: bravo, name: B, plan: enterprise, admin_email: b@b.example, dedicated: {project: {id: shared-proj-1}}}
    """
    assert problems(text) == [
        "tenants.yaml:4: tenant 'bravo': dedicated.project.id: project 'shared-proj-1' is also the project of tenant 'acme'; "
        "tenants 'acme' and 'bravo' each need a project of their own"]


# ------------------------------------------------------------------ numbers: finite, bounded, strictly typed


LIMITS = "{api_rate_limit: 1, storage_gb: 1, cpu: 1, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7}"


@pytest.mark.parametrize("override,message", [
    ("{cpu: .inf}", "limits.cpu: .inf is not a finite number; write a number, e.g. 2 or 0.5"),
    ("{memory_gb: .nan}", "limits.memory_gb: .nan is not a finite number; write a number, e.g. 2 or 0.5"),
    ("{cpu: yes}", "limits.cpu: true is not a number; write it without quotes, e.g. 2 or 0.5"),
    ("{cpu: '2'}", "limits.cpu: '2' is not a number; write it without quotes, e.g. 2 or 0.5"),
    ("{pods: '5'}", "limits.pods: '5' is not a whole number; write digits without quotes, e.g. 5"),
    ("{pods: 5.5}", "limits.pods: '5.5' is not a whole number; write digits without quotes, e.g. 5"),
    ("{pods: true}", "limits.pods: true is not a whole number; write digits without quotes, e.g. 5"),
    ("{pvcs: 1.0}", "limits.pvcs: '1.0' is not a whole number; write digits without quotes, e.g. 5"),
])
def test_limits_are_finite_and_strictly_typed(override, message):
    assert one(tenant(limits=override)) == f"tenants.yaml:6: tenant 'acme': {message}"


@pytest.mark.parametrize("key,maximum", [
    ("api_rate_limit", "10000000"), ("storage_gb", "1000000"), ("cpu", "4096"), ("memory_gb", "65536"),
    ("pods", "100000"), ("pvcs", "100000"), ("services", "10000"), ("backup_retention_days", "365"),
])
def test_every_limit_has_an_upper_bound(key, maximum):
    huge = "1.0e+300" if key in ("cpu", "memory_gb") else "10" + "0" * 30
    limits = dict(item.split(": ") for item in LIMITS[1:-1].split(", "))
    limits[key] = huge
    text = ("plans:\n  big:\n    model: dedicated\n    databases: [postgres-1]\n    features: [core]\n    limits: {"
            + ", ".join(f"{k}: {v}" for k, v in limits.items()) + "}\n")
    shown = "1e+300" if key in ("cpu", "memory_gb") else str(10 ** 31)
    assert one(text) == f"tenants.yaml:6: plan 'big': limits.{key}: '{shown}': input should be less than or equal to {maximum}"


@pytest.mark.parametrize("fields,message", [
    ({"plan": "enterprise", "dedicated": "{private_endpoint: 'yes'}"},
     "dedicated.private_endpoint: 'yes' is not true or false; write true or false without quotes"),
    ({"plan": "enterprise", "dedicated": "{project: {id: acme-proj-1}, read_replicas: true}"},
     "dedicated.read_replicas: true is not a whole number; write digits without quotes, e.g. 5"),
    ({"plan": "enterprise", "dedicated": "{project: {id: acme-proj-1, create: 1}}"},
     "dedicated.project.create: '1' is not true or false; write true or false without quotes"),
])
def test_booleans_and_counts_are_strict_in_dedicated_settings(fields, message):
    assert one(tenant(**fields)) == f"tenants.yaml:6: tenant 'acme': {message}"


def test_plan_booleans_and_the_version_are_strict():
    plan = f"plans:\n  big:\n    model: dedicated\n    databases: [postgres-1]\n    features: [core]\n    limits: {LIMITS}\n"
    assert problems(plan + "    high_availability: 'true'\n") == [
        "tenants.yaml:7: plan 'big': high_availability: 'true' is not true or false; write true or false without quotes"]
    assert problems("version: true\n", raw=True) == [
        "tenants.yaml:1: version: true is not a whole number; write digits without quotes, e.g. 5"]
    assert problems("version: '1'\n", raw=True) == [
        "tenants.yaml:1: version: '1' is not a whole number; write digits without quotes, e.g. 5"]


# ------------------------------------------------------------------ the version is required


@pytest.mark.parametrize("text,line", [("", ""), ("# nothing but a comment\n", ""), ("tenants: []\n", ":1"),
                                       ("plans: {}\ntenants:\n  - {id: acme, name: A, plan: free, admin_email: a@a.example}\n", ":1")])
def test_a_catalogue_without_version_is_refused(text, line):
    assert problems(text, raw=True) == [
        f"tenants.yaml{line}: version: the catalogue has no 'version' (an empty or truncated file?); add `version: 1`"]


def test_a_missing_version_does_not_hide_the_declared_plans():
    text = f"plans:\n  gold:\n    model: pooled\n    features: [core]\n    limits: {LIMITS}\ntenants:\n" \
           "  - {id: acme, name: A, plan: gold, admin_email: a@a.example}\n"
    assert problems(text, raw=True) == [
        "tenants.yaml:1: version: the catalogue has no 'version' (an empty or truncated file?); add `version: 1`"]


def test_cli_refuses_an_empty_catalogue(tmp_path):
    import subprocess
    import sys

    empty = tmp_path / "tenants.yaml"
    empty.write_text("")
    run = subprocess.run([sys.executable, "-m", "tenancy", "validate", "--tenants", str(empty)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2
    assert run.stderr.splitlines()[0] == (
        f"{empty}: version: the catalogue has no 'version' (an empty or truncated file?); add `version: 1`")


# ------------------------------------------------------------------ the one-pass reader equals the checked path


def _checked(text: str):
    """Document and line index the long way: shape check, loader, line index."""
    from tenancy.catalog.reader import _read_checked
    return _read_checked(text, "tenants.yaml")


def _typed(value):
    if isinstance(value, dict):
        return [(_typed(k), _typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return type(value).__name__, value


@pytest.mark.parametrize("text", [
    (ROOT / "tenants.yaml").read_text(),
    "version: 1\nx: [1, 2.5, .inf, true, no, ~, '', 0x1f, 017, 1_000, +5, 190:20:30, 'x', \"y\", -0]\ny: |\n  block\n",
    "version: 1\na:\n  - b: 1\n    c: [x, {d: e}]\n  - []\n  - {}\n  -\n  - - z\n",
    "---\nversion: 1\n...\n", "---\n", "", "# only a comment\n", "a\n", "- 1\n- 2\n", "version: 1\n1: a\ntwo: b\nnull: c\n",
], ids=["committed", "scalars", "nested", "explicit-document", "empty-document", "empty", "comment", "scalar", "list", "keys"])
def test_one_pass_reader_builds_what_the_checked_path_builds(text):
    from tenancy.catalog.reader import _read_plain
    raw, lines = _read_plain(text)
    expected_raw, expected_lines = _checked(text)
    assert _typed(raw) == _typed(expected_raw)  # 1 and 1.0 and True compare equal: the types are compared too
    assert lines == expected_lines


@pytest.mark.parametrize("text", [
    LAUGHS, "version: 1\na: &x 1\n", "version: 1\nx: !!str 5\n", "version: 1\nx: ! 5\n", "version: 1\nx: 2001-12-14\n",
    "version: 1\n<<: {a: 1}\n", "version: 1\nversion: 2\n", "version: 1\n1: a\n'1': b\n", "version: 1\n1: a\ntrue: b\n",
    "version: 1\n? [a, b]\n: 1\n", "version: 1\n---\nversion: 1\n", "version: 1\ntenants: [\n", "[" * 100_000,
    "version: 1\ntenants:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(30)),
], ids=["laughs", "anchor", "tag", "non-specific-tag", "timestamp", "merge", "duplicate", "duplicate-text", "duplicate-value",
        "complex-key", "two-documents", "syntax", "deep-list", "deep-mapping"])
def test_one_pass_reader_leaves_anything_else_to_the_checked_path(text):
    from tenancy.catalog.reader import _read_plain
    assert _read_plain(text) is None


# ------------------------------------------------------------------------------------------ the package itself


def test_a_change_to_any_module_of_the_catalogue_replans_the_platform_and_every_tenant_stack():
    # Every stack program reads the catalogue through this package: a change to any of its modules can change
    # any stack, so `tenancy plan --changed-since` must not skip one.
    from tenancy.changes import changes_between

    catalog = load_catalog(ROOT / "tenants.yaml")
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tenancy" / "catalog").glob("*.py"))
    assert "tenancy/catalog/rules.py" in modules and len(modules) >= 8
    stacks = {"dev", "dev.identity-1", "dev.cell-1", "dev.pool-1"} | {f"dev.{t.id}" for t in catalog.stack_tenants}
    for module in modules:
        changes = changes_between(catalog, catalog, "dev", changed_files=[module])
        assert changes.reasons == {stack: [f"code changed: {module}"] for stack in stacks}, module


def test_a_loaded_catalogue_survives_pickling_at_its_modules_paths():
    import pickle

    from tenancy.catalog import Catalog, Plan, Tenant

    catalog = load_catalog(ROOT / "tenants.yaml")
    assert (Catalog.__module__, Tenant.__module__, Plan.__module__) == (
        "tenancy.catalog.models", "tenancy.catalog.models", "tenancy.catalog.plans")
    assert pickle.loads(pickle.dumps(catalog)) == catalog
