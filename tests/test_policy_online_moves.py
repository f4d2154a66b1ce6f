"""What online tier moves need from Cloud SQL, in the components and in the policy pack: logical decoding on
every primary, a replication user on every instance whose password no tenant principal may read."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import of_type
from tests.test_policy import SQL, check

SECRET_IAM = "gcp:secretmanager/secretIamMember:SecretIamMember"


@pytest.fixture(scope="module")
def plan_data(sample_plan):
    return sample_plan[1]


def instances(plan_data) -> list[tuple[str, dict]]:
    return [(s["name"], r) for s in plan_data["stacks"] for r in of_type(s, SQL)]


def test_every_primary_has_a_replication_user_whose_secret_no_one_is_granted(plan_data):
    primaries = [(stack, r) for stack, r in instances(plan_data) if not r["inputs"].get("masterInstanceName")]
    assert len(primaries) == 2 + 5 * 3, "the pool, the registry, and postgres-1..3 of each of the five non-pooled tenants"
    for stack, r in primaries:
        s = next(x for x in plan_data["stacks"] if x["name"] == stack)
        users = [u for u in of_type(s, "gcp:sql/user:User") if u["inputs"]["name"] == "tenancy_replication"
                 and u["urn"].split("::")[-1].startswith(r["urn"].split("::")[-1].removesuffix("-instance"))]
        assert len(users) == 1 and users[0]["inputs"]["password"] == "[secret]", r["urn"]
        flags = {f["name"]: f["value"] for f in r["inputs"]["settings"]["databaseFlags"]}
        assert flags["cloudsql.logical_decoding"] == "on", r["urn"]
    secrets = [x["inputs"]["secretId"] for s in plan_data["stacks"] for x in of_type(s, "gcp:secretmanager/secret:Secret")
               if x["inputs"]["secretId"].endswith("-tenancy-replication")]
    assert len(secrets) == len(primaries) and "dev-pooled-tenancy-replication" in secrets
    granted = [g["inputs"]["secretId"] for s in plan_data["stacks"] for g in of_type(s, SECRET_IAM)]
    assert granted and not [g for g in granted if g.endswith("-tenancy-replication")], \
        "no workload or tenant account is given the replication password"


def test_cloudsql_flags_are_reviewed_ones(plan_data):
    primary = next(copy.deepcopy(r["inputs"]) for _, r in instances(plan_data) if not r["inputs"].get("masterInstanceName"))
    replica = next(copy.deepcopy(r["inputs"]) for _, r in instances(plan_data) if r["inputs"].get("masterInstanceName"))
    assert check("cloudsql-flags", SQL, primary) == [] and check("cloudsql-flags", SQL, replica) == []

    def with_flags(inputs: dict, **changes: str) -> dict:
        out = copy.deepcopy(inputs)
        flags = {f["name"]: f["value"] for f in out["settings"]["databaseFlags"]}
        flags.update({k.replace("__", "."): v for k, v in changes.items()})
        out["settings"]["databaseFlags"] = [{"name": k, "value": v} for k, v in flags.items()]
        return out

    assert check("cloudsql-flags", SQL, with_flags(primary, log_statement="all")) == [
        "Cloud SQL: log_statement=all is not allowed (none or ddl): statement text in logs carries tenant data, and "
        "audit and IAM authentication stay on"]
    assert check("cloudsql-flags", SQL, with_flags(primary, cloudsql__enable_pg_cron="on")) == [
        "Cloud SQL: flag cloudsql.enable_pg_cron has not been reviewed for tenant isolation; add it to the policy pack's "
        "CLOUDSQL_FLAGS with the values it may take and why"]
    assert check("cloudsql-flags", SQL, with_flags(primary, pgaudit__log="ddl")) == [
        "Cloud SQL: pgAudit must be on and log ddl and role (cloudsql.enable_pgaudit=on, pgaudit.log=ddl,role): who "
        "changed the schema or a role is how isolation breaks are traced"]
    detail = ["Cloud SQL: log_error_verbosity must be terse: an error's detail quotes the failing row or key (\"Failing "
              "row contains (...)\"), tenant data that would land in Cloud Logging"]
    assert check("cloudsql-flags", SQL, with_flags(primary, log_error_verbosity="default")) == [
        "Cloud SQL: log_error_verbosity=default is not allowed (terse): statement text in logs carries tenant data, and "
        "audit and IAM authentication stay on", *detail]
    without = copy.deepcopy(primary)
    without["settings"]["databaseFlags"] = [f for f in without["settings"]["databaseFlags"]
                                            if f["name"] != "log_error_verbosity"]
    assert check("cloudsql-flags", SQL, without) == detail
    assert check("cloudsql-flags", SQL, with_flags(primary, log_duration="on", log_min_error_statement="error")) == []
    assert check("cloudsql-flags", SQL, with_flags(primary, log_min_error_statement="warning")) == [
        "Cloud SQL: log_min_error_statement=warning is not allowed (error or log or fatal or panic): statement text in "
        "logs carries tenant data, and audit and IAM authentication stay on"]
    assert check("cloudsql-flags", SQL, with_flags(primary, cloudsql__logical_decoding="off")) == [], \
        "a primary may run without it: tier moves then copy inside the freeze"
    assert check("cloudsql-flags", SQL, with_flags(replica, cloudsql__logical_decoding="on")) == [
        "Cloud SQL: cloudsql.logical_decoding belongs on the primary: a PostgreSQL 15 read replica cannot decode, and "
        "online tier moves replicate from the primary"]


@pytest.mark.parametrize("member", [
    "serviceAccount:t-dev-stark@tenancy-dev-482913.iam.gserviceaccount.com",
    "serviceAccount:tenancy-dev-482913.svc.id.goog[tenant-stark/app]",
    "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/tenancy-dev-482913.svc.id.goog"
    "/namespace/tenant-stark",
])
def test_the_replication_password_is_never_granted_to_a_tenant_principal(member):
    grant = {"secretId": "dev-stark-postgres-1-tenancy-replication", "role": "roles/secretmanager.secretAccessor",
             "member": member, "project": "tenancy-dev-482913"}
    assert check("replication-secret-private", SECRET_IAM, grant) == [
        f"secret dev-stark-postgres-1-tenancy-replication: roles/secretmanager.secretAccessor must not go to {member}: "
        "the replication user reads every tenant's rows (BYPASSRLS); only the operators who run tier moves may read its "
        "password"]
    assert check("replication-secret-private", SECRET_IAM, {**grant, "secretId": "dev-stark-postgres-1-tenancy-app"}) == []
    assert check("replication-secret-private", SECRET_IAM, {**grant, "member": "group:dba@example.com"}) == []
