"""A Cloud SQL PostgreSQL instance: private IP only, SSL only, point-in-time recovery, audited, protected.

Passwords are generated (pulumi-random), kept secret in Pulumi state, and stored in Secret Manager
(replicated only in the instance's region: credentials stay where the data is); workloads read them
from Secret Manager through their own service account. Only secret *names* leave this component, plus
the instance's server CA certificates (public), so that clients verify the server (`SSL_MODE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from tenancy import naming

# The roles the tenancy SQL expects: the owner runs migrations, the runtime role is subject to RLS, and
# the replication role is what an online tier move's subscription connects as (REPLICATION, BYPASSRLS,
# SELECT on isolated tables; tenancy/stores/replication.py). It reads every tenant's rows, so its
# password goes to Secret Manager for the operators who run moves and to no workload: the policy pack
# refuses a grant of its secret to a tenant principal.
OWNER_USER, RUNTIME_USER, REPLICATION_USER = naming.DATABASE_USERS
DATABASE = "app"
# Clients check the server's certificate against the instance's CA (`server_ca_cert`): a host on the
# path cannot pose as the database. `verify-full` is not used because Cloud SQL server certificates
# name the instance, not its private IP.
SSL_MODE = "verify-ca"

# Who did what to the schema and to roles, every session, and no statement text (which would carry
# tenant data) in the logs: pgAudit for DDL and role changes, slow-statement logging off; Query
# Insights keeps normalised query statistics. Every statement's duration is logged without its text
# (log_duration: only a threshold, log_min_duration_statement, adds the text). Failing statements are
# logged at the server's default level, spelled out for scanners, without the values bound to them
# (log_parameter_max_length_on_error stays 0) and without the error's detail, which quotes rows and key
# values ("Failing row contains (...)"): log_error_verbosity=terse.
AUDIT_FLAGS = (
    ("cloudsql.iam_authentication", "on"),
    ("cloudsql.enable_pgaudit", "on"),
    ("pgaudit.log", "ddl,role"),
    ("log_connections", "on"),
    ("log_disconnections", "on"),
    ("log_statement", "ddl"),
    ("log_lock_waits", "on"),
    ("log_checkpoints", "on"),
    ("log_min_duration_statement", "-1"),
    ("log_duration", "on"),
    ("log_min_error_statement", "error"),
    ("log_error_verbosity", "terse"),
)
# Online tier moves copy a tenant's rows with row-filtered logical replication from the primary (read
# replicas of PostgreSQL 15 cannot publish). Without it a move falls back to copying inside the freeze.
PRIMARY_FLAGS = (("cloudsql.logical_decoding", "on"),)


@dataclass(frozen=True)
class PostgresArgs:
    instance_name: str
    project: str
    region: str
    network_id: pulumi.Input[str]
    tier: str
    retention_days: int
    labels: dict[str, str]
    secret_prefix: str   # naming.database_secret_prefix(...): each user's secret is named from it
    high_availability: bool = False
    read_replicas: int = 0
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class PostgresInstance(pulumi.ComponentResource):
    instance_name: pulumi.Output[str]
    connection_name: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    server_ca_cert: pulumi.Output[str]
    secret_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: PostgresArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:gcp:PostgresInstance", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=True)
        instance = gcp.sql.DatabaseInstance(
            f"{name}-instance",
            name=args.instance_name,
            project=args.project,
            region=args.region,
            database_version="POSTGRES_15",
            deletion_protection=True,  # Pulumi refuses to delete it ...
            settings=self._settings(args),
            opts=pulumi.ResourceOptions(parent=self, protect=True, depends_on=args.depends_on),
        )
        for i in range(args.read_replicas):
            gcp.sql.DatabaseInstance(
                f"{name}-replica-{i + 1}",
                name=naming.read_replica(args.instance_name, i + 1),
                project=args.project,
                region=args.region,
                database_version="POSTGRES_15",
                master_instance_name=instance.name,
                deletion_protection=True,
                settings=self._settings(args, replica=True),
                opts=stateful,
            )
        gcp.sql.Database(f"{name}-db", name=DATABASE, instance=instance.name, project=args.project,
                         deletion_policy="ABANDON", opts=stateful)
        self.secret_ids = {}
        for user in (OWNER_USER, RUNTIME_USER, REPLICATION_USER):
            self.secret_ids[user] = self._user(name, args, instance, user, child)
        self.instance_name = instance.name
        self.connection_name = instance.connection_name
        self.private_ip = instance.private_ip_address
        # Every CA the instance currently presents (two during a CA rotation), as one PEM bundle. The
        # provider marks serverCaCerts secret wholesale; CA certificates are public (every TLS handshake
        # shows them), and clients need them in plain ConfigMaps and Helm values.
        self.server_ca_cert = pulumi.Output.unsecret(instance.server_ca_certs.apply(ca_bundle))
        self.register_outputs({"instance_name": self.instance_name, "connection_name": self.connection_name,
                               "server_ca_cert": self.server_ca_cert})

    @staticmethod
    def _settings(args: PostgresArgs, replica: bool = False) -> dict:
        backups = {
            "enabled": not replica,
            "point_in_time_recovery_enabled": not replica,
            "start_time": "02:00",
            "transaction_log_retention_days": min(7, args.retention_days),
            "backup_retention_settings": {"retained_backups": args.retention_days, "retention_unit": "COUNT"},
        }
        return {
            "tier": args.tier,
            "availability_type": "REGIONAL" if args.high_availability and not replica else "ZONAL",
            "disk_autoresize": True,
            "disk_type": "PD_SSD",
            # ... and so does the Cloud SQL API, whatever tool asks.
            "deletion_protection_enabled": True,
            # Private IP only; no public address, no authorized networks. Only TLS connections are accepted.
            "ip_configuration": {"ipv4_enabled": False, "private_network": args.network_id, "ssl_mode": "ENCRYPTED_ONLY"},
            "backup_configuration": backups,
            "database_flags": [{"name": k, "value": v}
                               for k, v in AUDIT_FLAGS + (() if replica else PRIMARY_FLAGS)],
            "insights_config": {"query_insights_enabled": True},
            "user_labels": args.labels,
        }

    def _user(self, name: str, args: PostgresArgs, instance: gcp.sql.DatabaseInstance, user: str,
              child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        role = user.replace("_", "-")
        password = random.RandomPassword(f"{name}-{role}-password", length=32, special=False, opts=child)
        secret_value = pulumi.Output.secret(password.result)
        gcp.sql.User(f"{name}-{role}", name=user, instance=instance.name, project=args.project,
                     password=secret_value, deletion_policy="ABANDON", opts=child)
        secret = gcp.secretmanager.Secret(
            f"{name}-{role}-secret", secret_id=naming.database_secret(args.secret_prefix, user), project=args.project,
            replication=regional_replication(args.region), labels=args.labels, opts=child)
        gcp.secretmanager.SecretVersion(f"{name}-{role}-secret-v", secret=secret.id, secret_data=secret_value, opts=child)
        return secret.secret_id


def regional_replication(region: str) -> dict:
    """Secret Manager replication in one region only (`auto` would copy the secret to any region)."""
    return {"user_managed": {"replicas": [{"location": region}]}}


def ca_bundle(certs: list | None) -> str | None:
    """The PEM certificates of `serverCaCerts`, in Cloud SQL's order, joined into one CA bundle."""
    pems = [(c.get("cert") if isinstance(c, dict) else getattr(c, "cert", None)) for c in (certs or [])]
    pems = [p.strip() for p in pems if p]
    return "\n".join(pems) + "\n" if pems else None
