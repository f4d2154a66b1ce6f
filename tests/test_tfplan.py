"""The offline plan in Terraform's plan format (tenancy/tfplan.py): the names and shapes Checkov's terraform_plan
checks read, from the real plan and from small plans that show each conversion rule."""

from __future__ import annotations

from tenancy.tfplan import address_name, attributes, convert, snake, terraform_type


def test_type_tokens_become_terraform_types():
    assert {t: terraform_type(t) for t in (
        "gcp:sql/databaseInstance:DatabaseInstance", "gcp:storage/bucketIAMMember:BucketIAMMember",
        "gcp:projects/iAMAuditConfig:IAMAuditConfig", "gcp:organizations/project:Project",
        "gcp:secretmanager/secretIamMember:SecretIamMember", "gcp:serviceaccount/account:Account",
        "gcp:serviceaccount/iAMMember:IAMMember", "gcp:servicenetworking/connection:Connection",
        "gcp:identityplatform/tenant:Tenant", "gcp:compute/routerNat:RouterNat",
        "kubernetes:core/v1:Namespace", "pulumi:providers:gcp")} == {
        "gcp:sql/databaseInstance:DatabaseInstance": "google_sql_database_instance",
        "gcp:storage/bucketIAMMember:BucketIAMMember": "google_storage_bucket_iam_member",
        "gcp:projects/iAMAuditConfig:IAMAuditConfig": "google_project_iam_audit_config",
        "gcp:organizations/project:Project": "google_project",
        "gcp:secretmanager/secretIamMember:SecretIamMember": "google_secret_manager_secret_iam_member",
        "gcp:serviceaccount/account:Account": "google_service_account",
        "gcp:serviceaccount/iAMMember:IAMMember": "google_service_account_iam_member",
        "gcp:servicenetworking/connection:Connection": "google_service_networking_connection",
        "gcp:identityplatform/tenant:Tenant": "google_identity_platform_tenant",
        "gcp:compute/routerNat:RouterNat": "google_compute_router_nat",
        "kubernetes:core/v1:Namespace": None, "pulumi:providers:gcp": None}


def test_inputs_become_terraform_attributes():
    assert [snake(n) for n in ("ipv4Enabled", "masterIpv4CidrBlock", "enableL4IlbSubsetting", "IAMAuditConfig")] == [
        "ipv4_enabled", "master_ipv4_cidr_block", "enable_l4_ilb_subsetting", "iam_audit_config"]
    inputs = {"settings": {"ipConfiguration": {"ipv4Enabled": False, "privateNetwork": "[unknown]"},
                           "databaseFlags": [{"name": "log_duration", "value": "on"}],
                           "userLabels": {"tenant": "stark", "managed-by": "tenancy"}},
              "lifecycleRules": [{"action": {"type": "Delete"}, "condition": {"age": 3}}],
              "auditLogConfigs": [{"logType": "DATA_READ", "exemptedMembers": []}],
              "password": "[secret]", "masterInstanceName": "[unknown]"}
    assert attributes(inputs) == {
        "settings": {"ip_configuration": {"ipv4_enabled": False},
                     "database_flags": [{"name": "log_duration", "value": "on"}],
                     "user_labels": {"tenant": "stark", "managed-by": "tenancy"}},
        # the bridge's plural names of repeated blocks are Terraform's singular ones
        "lifecycle_rule": [{"action": {"type": "Delete"}, "condition": {"age": 3}}],
        "audit_log_config": [{"log_type": "DATA_READ", "exempted_members": []}],
        # a value known only after apply is left out, as Terraform leaves it out; a secret stays masked
        "password": "[secret]"}


def _resource(stack: str, type_: str, name: str, inputs: dict) -> dict:
    return {"urn": f"urn:pulumi:{stack}::tenancy::{type_}::{name}", "type": type_, "name": name, "inputs": inputs}


def test_a_plan_becomes_a_terraform_plan_with_references_between_its_resources():
    plan = {"stacks": [{"name": "dev.acme", "resources": [
        _resource("dev.acme", "gcp:organizations/project:Project", "project", {"projectId": "acme-prod"}),
        _resource("dev.acme", "gcp:projects/iAMAuditConfig:IAMAuditConfig", "audit-logs",
                  {"project": "acme-prod", "service": "allServices"}),
        _resource("dev.acme", "gcp:storage/bucket:Bucket", "uploads-bucket", {"name": "b", "project": "other"}),
        _resource("dev.acme", "gcp:storage/bucket:Bucket", "uploads.bucket", {"name": "c"}),
        _resource("dev.acme", "kubernetes:core/v1:Namespace", "ns", {"metadata": {"name": "tenant-acme"}}),
    ]}]}
    tf = convert(plan)
    assert set(tf) == {"format_version", "terraform_version", "planned_values", "resource_changes", "configuration"}
    resources = tf["planned_values"]["root_module"]["resources"]
    assert [r["address"] for r in resources] == [
        "google_project.dev_acme__project", "google_project_iam_audit_config.dev_acme__audit-logs",
        "google_storage_bucket.dev_acme__uploads-bucket", "google_storage_bucket.dev_acme__uploads_bucket"]
    assert [c["change"]["actions"] for c in tf["resource_changes"]] == [["create"]] * 4
    expressions = {c["address"]: c["expressions"] for c in tf["configuration"]["root_module"]["resources"]}
    # the audit config's project is the project the plan creates: what connects them for graph checks
    assert expressions["google_project_iam_audit_config.dev_acme__audit-logs"] == {"project": {"references": [
        "google_project.dev_acme__project.project_id", "google_project.dev_acme__project"]}}
    assert expressions["google_storage_bucket.dev_acme__uploads-bucket"] == {}, "a project the plan does not create"
    taken: set[str] = set()
    assert [address_name("dev.x", "a/b", taken), address_name("dev.x", "a.b", taken)] == ["dev_x__a_b", "dev_x__a_b_2"]


def test_the_real_plan_converts_every_google_cloud_resource(sample_plan):
    _, data, _ = sample_plan
    tf = convert(data)
    resources = tf["planned_values"]["root_module"]["resources"]
    gcp = [r for s in data["stacks"] for r in s["resources"] if r["type"].startswith("gcp:")]
    assert len(resources) == len(gcp) == len({r["address"] for r in resources})
    by_type: dict[str, list[dict]] = {}
    for r in resources:
        by_type.setdefault(r["type"], []).append(r["values"])
    # what the checks the platform fixed read (CKV2_GCP_13, CKV_GCP_62, CKV2_GCP_5)
    assert len(by_type["google_sql_database_instance"]) == 20     # the registry's, the pool's, the tenants' and replicas
    for values in by_type["google_sql_database_instance"]:
        assert {"name": "log_duration", "value": "on"} in values["settings"]["database_flags"]
    logs = "tenancy-dev-482913-dev-access-logs"
    assert sorted(v["name"] for v in by_type["google_storage_bucket"] if v.get("logging", {}).get("log_bucket") == logs) \
        == ["dev-acme-uploads", "dev-cyberdyne-uploads", "dev-pied-piper-uploads", "dev-stark-uploads",
            "dev-wayne-uploads", "tenancy-dev-482913-dev-pooled-uploads"]
    [project] = by_type["google_project"]
    audits = [v for v in by_type["google_project_iam_audit_config"] if v["project"] == project["project_id"]]
    assert audits == [{"project": "acme-tenancy-prod", "service": "allServices", "audit_log_config": [
        {"log_type": "ADMIN_READ"}, {"log_type": "DATA_READ"}, {"log_type": "DATA_WRITE"}]}]
