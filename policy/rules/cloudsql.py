"""Cloud SQL: instances are private, encrypted in transit, backed up and protected; their flags are reviewed
ones; the replication user's password reaches no tenant."""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import first, get, known
from .iam import IAM_TYPE, KSA_MEMBER, TENANT_SA, WI_NAMESPACE_SET, WI_POOL_SET, WI_PRINCIPAL, iam_grants

# Minimum backup retention per isolation model (days); overridable through the pack's config.
DEFAULT_MIN_RETENTION = {"pooled": 7, "namespace": 30, "dedicated": 30}


def cloudsql_private_ssl_backups(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:sql/databaseInstance:DatabaseInstance":
        return
    p = args.props
    s = first(p.get("settings")) or {}
    ip = first(s.get("ipConfiguration")) or {}
    if ip.get("ipv4Enabled") is not False:
        report("Cloud SQL: public IP must be off (settings.ipConfiguration.ipv4Enabled=false); tenants' data is reached over private IP only")
    if ip.get("sslMode") not in ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"):
        report("Cloud SQL: sslMode must be ENCRYPTED_ONLY (or TRUSTED_CLIENT_CERTIFICATE_REQUIRED): no clear-text connections")
    if p.get("masterInstanceName"):
        return  # replicas inherit backups from their primary
    b = first(s.get("backupConfiguration")) or {}
    if b.get("enabled") is not True or b.get("pointInTimeRecoveryEnabled") is not True:
        report("Cloud SQL: backups and point-in-time recovery must be on: a tenant's data must be recoverable")
    retained = get(first(b.get("backupRetentionSettings")) or {}, "retainedBackups")
    model = (s.get("userLabels") or {}).get("model", "pooled")
    minimum = int(args.get_config().get(f"minRetention_{model}", DEFAULT_MIN_RETENTION.get(model, 7)))
    if known(retained) and int(retained) < minimum:
        report(f"Cloud SQL: {retained} retained backups is below the {model} minimum of {minimum} days")
    if s.get("deletionProtectionEnabled") is not True or p.get("deletionProtection") is False:
        report("Cloud SQL: deletion protection must be on at the API (settings.deletionProtectionEnabled) and in the provider")


# The database flags the platform sets and the values it allows; a flag not listed has not been reviewed.
# Statement text carries tenant data, so no flag may put it in the logs (log_statement beyond 'ddl', a
# log_min_duration_statement threshold). cloudsql.logical_decoding lets online tier moves replicate one
# tenant's rows out of a primary; a PostgreSQL 15 read replica cannot decode, so it is a primary's flag.
CLOUDSQL_FLAGS: dict[str, tuple[str, ...]] = {
    "cloudsql.iam_authentication": ("on",),
    "cloudsql.enable_pgaudit": ("on",),
    "pgaudit.log": (),                       # any list that includes ddl and role
    "log_connections": ("on",),
    "log_disconnections": ("on",),
    "log_statement": ("none", "ddl"),
    "log_lock_waits": ("on", "off"),
    "log_checkpoints": ("on", "off"),
    "log_min_duration_statement": ("-1",),
    "cloudsql.logical_decoding": ("on", "off"),
    # A duration line holds no statement text; a failing statement's text is logged, its bound values are not,
    # and terse errors leave out the detail that quotes the failing row or key.
    "log_duration": ("on", "off"),
    "log_min_error_statement": ("error", "log", "fatal", "panic"),
    "log_error_verbosity": ("terse",),
}


def cloudsql_flags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:sql/databaseInstance:DatabaseInstance":
        return
    s = first(args.props.get("settings")) or {}
    flags = {str(f.get("name")): str(f.get("value")) for f in s.get("databaseFlags") or [] if isinstance(f, dict)}
    for name, value in flags.items():
        allowed = CLOUDSQL_FLAGS.get(name)
        if allowed is None:
            report(f"Cloud SQL: flag {name} has not been reviewed for tenant isolation; add it to the policy pack's "
                   "CLOUDSQL_FLAGS with the values it may take and why")
        elif allowed and value not in allowed and known(value):
            report(f"Cloud SQL: {name}={value} is not allowed ({' or '.join(allowed)}): statement text in logs carries "
                   "tenant data, and audit and IAM authentication stay on")
    audited = set(flags.get("pgaudit.log", "").replace(" ", "").split(","))
    if flags.get("cloudsql.enable_pgaudit") != "on" or not {"ddl", "role"} <= audited:
        report("Cloud SQL: pgAudit must be on and log ddl and role (cloudsql.enable_pgaudit=on, pgaudit.log=ddl,role): "
               "who changed the schema or a role is how isolation breaks are traced")
    if flags.get("log_error_verbosity") != "terse":
        report("Cloud SQL: log_error_verbosity must be terse: an error's detail quotes the failing row or key "
               "(\"Failing row contains (...)\"), tenant data that would land in Cloud Logging")
    if args.props.get("masterInstanceName") and flags.get("cloudsql.logical_decoding") == "on":
        report("Cloud SQL: cloudsql.logical_decoding belongs on the primary: a PostgreSQL 15 read replica cannot decode, "
               "and online tier moves replicate from the primary")


# The replication user (tenancy_replication) bypasses row-level security to read any tenant's rows for an
# online tier move; its password is for the operators who run moves.
REPLICATION_SECRET = re.compile(r"(^|[-/])tenancy-replication$")


def replication_secret_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p = args.resource_type, args.props
    if not (t.startswith("gcp:secretmanager/") and IAM_TYPE.search(t)):
        return
    secret = str(p.get("secretId") or "")
    if not REPLICATION_SECRET.search(secret):
        return
    for g in iam_grants(t, p):
        if TENANT_SA.match(g.member) or any(r.match(g.member) for r in (KSA_MEMBER, WI_PRINCIPAL, WI_NAMESPACE_SET,
                                                                         WI_POOL_SET)):
            report(f"secret {secret}: {g.role} must not go to {g.member}: the replication user reads every tenant's "
                   "rows (BYPASSRLS); only the operators who run tier moves may read its password")
