"""The `tenancy` command line. Exit codes: 0 ok, 1 failure, 2 bad input."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

from tenancy.errors import CatalogError, TenancyError

EXIT_OK, EXIT_FAIL, EXIT_INPUT = 0, 1, 2
DEFAULT_ENV = os.environ.get("TENANCY_ENV", "dev")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code for usage errors is already 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}\n")


def to_json(value, indent: int | None = 1, **kw) -> str:
    """JSON as the command line prints it: non-ASCII kept readable (`→`, names in any script), not `\\u2192`."""
    return json.dumps(value, indent=indent, ensure_ascii=False, **kw)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenants", default="tenants.yaml", metavar="FILE", help="the tenant catalogue (default: tenants.yaml)")
    p.add_argument("--env", default=DEFAULT_ENV, metavar="ENV",
                   help="environment, i.e. the platform stack's name (default: $TENANCY_ENV or dev)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tenancy", description="Operate a tiered multi-tenant SaaS platform declared in tenants.yaml.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("validate", help="check tenants.yaml; one line per problem", description="Validate the catalogue. "
                       "Exit 0 when valid, 2 with one line per problem (file:line, tenant, field, what to do).")
    _common(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print (or write) the JSON Schema of tenants.yaml",
                       description="Generate the catalogue's JSON Schema from the models.")
    _common(p)
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--check", action="store_true", help="exit 1 if FILE differs from the generated schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("plan", help="run every stack program offline; write plan.json and manifests/",
                       description="Run the platform stack and every tenant stack program offline under a recording "
                       "runtime, evaluate the policy pack, and write DIR/plan.json and DIR/manifests/.")
    _common(p)
    p.add_argument("--out", default="plan", metavar="DIR", help="output directory (default: plan)")
    p.add_argument("--tenant", action="append", default=[], metavar="ID", help="plan only this tenant's stack (repeatable)")
    p.add_argument("--changed-since", metavar="GIT_REF", help="plan only stacks whose catalogue entries or code changed since GIT_REF")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes for tenant stacks (default: CPU count)")
    p.add_argument("--json", action="store_true", help="print the plan summary as JSON (stacks, reasons, violations)")
    _deployed_record_arg(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("policy-check", help="evaluate the policy pack against a plan file",
                       description="Evaluate the real policy pack against PLAN.json; exit 1 on a mandatory violation.")
    _common(p)
    p.add_argument("plan_file", metavar="PLAN.json")
    p.set_defaults(func=cmd_policy_check)
    p = sub.add_parser("affected", help="the stacks a change touches, as JSON (for CI matrices)",
                       description="Print the stacks whose catalogue entries or code changed since GIT_REF as JSON: "
                       '{"environment", "platform": bool, "stacks": [...], "real": [...], "offlineOnly": [...], "new": '
                       '[...], "jobs": N, "matrix": {"include": [{"batch": 1, "stacks": [...]}, ...]}, "reasons", '
                       '"removed"}. The matrix holds the stacks to preview for real, in at most --max-jobs batches; '
                       "stacks the change creates (`new`) are planned offline only: a preview never creates a stack.")
    _common(p)
    p.add_argument("--changed-since", required=True, metavar="GIT_REF")
    p.add_argument("--max-jobs", type=int, default=256, metavar="N", help="matrix jobs at most (GitHub's limit: 256)")
    p.add_argument("--max-real", type=int, metavar="N",
                   help="preview at most N stacks for real (the rest offline only); default: every affected stack")
    p.set_defaults(func=cmd_affected)

    p = sub.add_parser("pr-comment", help="the pull-request comment (Markdown with a Mermaid diagram)",
                       description="Print the pull-request comment for a change: which stacks change and why, resource "
                       "counts and policy violations (from --plan), and a Mermaid diagram of the affected tenants.")
    _common(p)
    base = p.add_mutually_exclusive_group(required=True)
    base.add_argument("--base", metavar="GIT_REF", help="compare with the catalogue and code at this git ref")
    base.add_argument("--base-catalog", metavar="FILE", help="compare with this catalogue file (no git needed)")
    p.add_argument("--plan", metavar="PLAN.json", help="the head's offline plan, for resource counts and violations")
    _deployed_record_arg(p)
    p.add_argument("--affected", metavar="AFFECTED.json", help="`tenancy affected` output: which stacks are previewed for real")
    p.add_argument("--full-out", metavar="FILE", help="also write the comment with every stack's row (a job artifact)")
    p.add_argument("--details-url", metavar="URL", help="where the full table is (the workflow run's artifacts)")
    p.set_defaults(func=cmd_pr_comment)

    p = sub.add_parser("operator", help="the Pulumi Kubernetes Operator's Stack objects",
                       description="Stack objects of the Pulumi Kubernetes Operator, one per stack of the environment.")
    osub = p.add_subparsers(dest="operator_command", required=True, parser_class=_Parser, metavar="ACTION")
    m = osub.add_parser("manifests", help="every Stack object of the environment at a commit, as YAML",
                        description="Print every Stack object of the environment at COMMIT as YAML documents, each "
                        "validated against the operator's CRD (schemas/pko/). `tenancy up --engine operator` creates and "
                        "patches them itself; this is for review, bootstrap and GitOps. The objects are rendered from the "
                        "working tree but pin COMMIT, so a working tree that differs from it (changed, staged or new "
                        "files) is refused, naming the files, unless --allow-dirty.")
    _common(m)
    m.add_argument("--commit", default="HEAD", metavar="REF", help="the commit the objects pin (default: HEAD)")
    m.add_argument("--allow-dirty", action="store_true",
                   help="render even when the working tree differs from COMMIT (the files are named on stderr)")
    m.set_defaults(func=cmd_operator_manifests)
    m = osub.add_parser("prune", help="delete the Stack objects of stacks that no longer exist",
                        description="Delete the environment's Stack objects whose stacks the deployed record no longer "
                        "has (offboarded tenants, tenants moved into the pool): the operator stops reconciling them. "
                        "Nothing is destroyed (Stack objects never destroy on deletion; one that would is refused).")
    _common(m)
    m.add_argument("--kube-context", metavar="NAME", help="kubeconfig context of the operator's cluster")
    m.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    m.set_defaults(func=cmd_operator_prune)

    p = sub.add_parser("db", help="database operations", description="Database operations on any PostgreSQL.")
    dbsub = p.add_subparsers(dest="db_command", required=True, parser_class=_Parser, metavar="ACTION")
    a = dbsub.add_parser("apply", help="apply the tenancy SQL (sql/*.sql) to DSN in one transaction; with --as NAME, "
                         "also what the platform's SQL job registers there",
                         description="Apply the tenancy SQL idempotently, then run the isolation audit. With --as NAME "
                         "(pool-N, or TENANT/postgres-N), do what the platform's SQL job does in that database, for a "
                         "local or hand-managed one: in the same transaction, mark it as ENV's NAME and register the "
                         "tenants whose rows it holds -- those the deployed record places there (read through --engine), "
                         "or, before the first deploy, those the catalogue places there. Without DSN, the registry's "
                         "record of NAME is used.")
    _common(a)
    _engine_args(a)
    _registry_arg(a)
    a.add_argument("dsn", metavar="DSN", nargs="?",
                   help="libpq connection string, as a role that may create roles (locally: the server's superuser); "
                        "prefer PGPASSWORD/PGPASSFILE to a password in it. Default with --as: the registry's record")
    a.add_argument("--as", dest="as_name", metavar="NAME",
                   help="the registry's name of this database: pool-N (a pool shard's) or TENANT/postgres-N")
    a.set_defaults(func=cmd_db_apply)
    for name, helptext in (("preview", "preview the affected stacks (platform first, then tenants in parallel)"),
                           ("up", "update the affected stacks; refuses stateful deletes/replaces without --allow-destroy")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        _common(p)
        _engine_args(p)
        p.add_argument("--tenant", action="append", default=[], metavar="ID", help="only this tenant's stack (repeatable)")
        p.add_argument("--stack", action="append", default=None, metavar="NAME",
                       help="only this stack (repeatable; a CI batch from `tenancy affected`)")
        p.add_argument("--changed-since", metavar="REF", help="only stacks whose catalogue entries or code changed since REF")
        p.add_argument("--parallel", type=int, default=None, metavar="N",
                       help="stacks at once within a wave (default 4; 50 with --engine operator)")
        p.add_argument("--allow-destroy", action="store_true", help="allow deleting or replacing stateful resources")
        if name == "up":
            _registry_arg(p)
            w = p.add_argument_group("waves")
            w.add_argument("--waves", metavar="FILE", help="the rollout's waves (default: rollout.yaml if present, "
                           "else the platform stack, then the tenant stacks)")
            w.add_argument("--from-wave", type=int, default=1, metavar="N", help="resume a halted rollout at wave N")
            w.add_argument("--pause", type=float, metavar="SECONDS", help="pause between waves (overrides the file)")
            w.add_argument("--no-health-gate", action="store_true", help="go on to the next wave without the health gate")
        p.set_defaults(func=cmd_deploy, mode=name)

    p = sub.add_parser("moves", help="what waits for an operation: tier moves the catalogue asks for, unfinished "
                       "operations and their leases, as JSON",
                       description="Print, as JSON, every pending item: the tenants whose plan in the catalogue moves "
                       "them into or out of the pool and that the deployment has not moved ({kind: move, tenant, "
                       "from_plan, to_plan, from_model, to_model}), and, with the registry, every unfinished operation "
                       "with its lease's holder and the commands that resume or abort it ({kind: operation, ...}). "
                       "With --dsn, also report (on stderr, exit 1) what online moves left behind in those databases: "
                       "replication slots (they hold WAL forever), publications, subscriptions and change-tracking "
                       "triggers that no unfinished operation owns.")
    _common(p)
    _engine_args(p)
    _registry_arg(p)
    p.add_argument("--dsn", action="append", default=[], metavar="DSN",
                   help="a database to check for leftovers of online moves (repeatable)")
    d = p.add_argument_group("the delivery workflow's steps (README, CI and delivery)")
    d.add_argument("--plan", metavar="FILE", help="instead, print what a deploy job runs, as JSON: with the reviewed "
                   "decisions of FILE (moves.yaml), the command resuming each unfinished operation and carrying out each "
                   "pending tier move, the Cloud SQL instances and the cluster each reaches; a downgrade FILE makes no "
                   "decision for is refused (exit 1) with the entry to add")
    d.add_argument("--base-catalog", metavar="FILE", help="with --plan, for a pull request's review: the base branch's "
                   "catalogue stands for the deployment (offline: no stack outputs, no registry)")
    d.add_argument("--archive-stamp", metavar="STAMP", help="with --plan: the suffix of each new move's archive "
                   "(default: the UTC time, 20250131T120000Z)")
    p.set_defaults(func=cmd_moves)

    p = sub.add_parser("registry", help="the environment's registry of record: tenants, databases, operations",
                       description="The registry of record of an environment: a small PostgreSQL database holding each "
                       "tenant's directory entry, placement, state and operation in progress, the databases its stores "
                       "live in, and the journal and lease of every operation.")
    rsub = p.add_subparsers(dest="registry_command", required=True, parser_class=_Parser, metavar="ACTION")
    r = rsub.add_parser("init", help="create (or update) the registry's schema for ENV", description="Apply the "
                        "registry SQL (idempotent) and claim the database for the environment (refused if it serves "
                        "another).")
    _common(r)
    _registry_arg(r)
    r.set_defaults(func=cmd_registry_init)
    r = rsub.add_parser("database", help="record how to reach a database of the environment",
                        description="Record how operations reach database NAME ('pool-1', '<tenant>/postgres-1'): a "
                        "DSN without a password (libpq finds credentials in PGPASSFILE, PGPASSWORD or through the Cloud "
                        "SQL Auth Proxy's IAM login), or --instance PROJECT:REGION:INSTANCE for the proxy's socket "
                        "directory ($TENANCY_CLOUDSQL_DIR, default /cloudsql).")
    _common(r)
    _registry_arg(r)
    r.add_argument("name", metavar="NAME")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--dsn", metavar="DSN", help="host, port, dbname and user; never a password")
    where.add_argument("--instance", metavar="CONNECTION_NAME", help="a Cloud SQL instance's connection name")
    r.add_argument("--dbname", metavar="NAME", help="with --instance: the database")
    r.add_argument("--user", metavar="USER", help="with --instance: the database user (IAM: the account's name)")
    r.set_defaults(func=cmd_registry_database)
    r = rsub.add_parser("show", help="tenants, databases and unfinished operations, as JSON",
                        description="Print the registry as JSON: one tenant's row and operations with TENANT, else every "
                        "tenant (or those in --state), the databases, and the unfinished operations.")
    _common(r)
    _registry_arg(r)
    r.add_argument("tenant", metavar="TENANT", nargs="?")
    r.add_argument("--state", choices=["active", "suspended", "frozen", "offboarded"])
    r.set_defaults(func=cmd_registry_show)
    r = rsub.add_parser("sync", help="record every deployed tenant in the registry (tenancy up does it too)",
                        description="Bring the registry up to date with the deployment: each deployed tenant's plan, "
                        "model, state, directory entry and stores, for every tenant no operation holds.")
    _common(r)
    _engine_args(r)
    _registry_arg(r)
    r.set_defaults(func=cmd_registry_sync)

    p = sub.add_parser("upgrade", help="move a tenant to another plan, data included (resumable)",
                       description="Move TENANT to PLAN between pooled and namespace/dedicated, every store with it: "
                       "provision, sync (rows replicating while the tenant writes, --method online/auto; documents and "
                       "objects copied while it writes), freeze, copy and verify (what changed since), switch, export, "
                       "publish, cleanup. Everything the move needs is checked before anything "
                       "changes; the tenant's lease keeps every other operation off it; each phase is journalled in the "
                       "registry: run the same command again to resume after any interruption. --abort before the switch "
                       "leaves the tenant where it was. Downgrades use the same command with a pooled plan.")
    _common(p)
    _engine_args(p)
    _operation_args(p)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--to", required=True, metavar="PLAN", dest="to_plan")
    p.add_argument("--source-dsn", metavar="DSN", help="override: where the tenant's rows are now (the pooled database "
                   "for an upgrade, its postgres-1 for a downgrade); default: the registry's record")
    p.add_argument("--target-dsn", metavar="DSN", help="override: where they go; default: the registry's record")
    p.add_argument("--keep-source", type=int, default=0, metavar="DAYS", help="keep source rows read-only this long")
    p.add_argument("--abort", action="store_true", help="roll back an unfinished move (before its switch)")
    _store_args(p)
    p.add_argument("--allow-destroy", action="store_true", help="allow deleting or replacing stateful resources")
    p.add_argument("--export-to", metavar="DIR|gs://BUCKET/PREFIX",
                   help="archive every source store here first (a new or empty directory, or a bucket prefix holding nothing)")
    p.add_argument("--method", choices=["auto", "online", "copy"], default="auto",
                   help="how PostgreSQL rows move: online (logical replication while the tenant writes; the freeze "
                        "only waits for the last changes), copy (inside the freeze), auto (default: online where the "
                        "databases allow it, copy elsewhere, saying why)")
    p.add_argument("--replication-dsn", action="append", default=[], metavar="STORE=DSN",
                   help="how the target's server reaches source STORE (pooled, postgres-N) as tenancy_replication "
                        "(default: that store's DSN with user tenancy_replication and no password; repeatable)")
    p.add_argument("--discard", action="append", default=[], metavar="STORE",
                   help="a downgrade may let go of this store of the old stack (postgres-2, postgres-3, firestore, graph, "
                        "objects) that the pooled plan cannot hold: with --export-to it is archived first (repeatable "
                        "or comma-separated)")
    p.set_defaults(func=cmd_upgrade)

    for name, helptext in (("suspend", "suspend a tenant: data kept, writes refused, workloads scaled to zero, routes "
                                       "removed"),
                           ("resume", "resume a suspended tenant")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ". Every database of "
                           "the tenant (found through the registry) records the state first.")
        _common(p)
        _engine_args(p)
        _operation_args(p)
        p.add_argument("tenant", metavar="TENANT")
        p.add_argument("--pooled-dsn", metavar="DSN", help="override: the pooled database of a pooled tenant")
        p.add_argument("--db", action="append", default=[], metavar="NAME=DSN", dest="dbs",
                       help="override: a database of the tenant (postgres-N, or the registry's name), repeatable")
        p.set_defaults(func=cmd_suspend, resume=(name == "resume"))

    p = sub.add_parser("offboard", help="export a tenant's data, then delete it, destroy its stack and unlist it",
                       description="Export every store of the tenant into a new archive and read it back, then delete "
                       "each store (only while it still matches the archive), destroy its tenant stack and remove it "
                       "from the platform stack. Checked before anything changes; resumable; --abort before the "
                       "delete leaves the tenant as it was.")
    _common(p)
    _engine_args(p)
    _operation_args(p)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--source-dsn", metavar="DSN",
                   help="override: the database holding the tenant's rows (the pooled database, or its postgres-1)")
    _store_args(p)
    p.add_argument("--export-to", metavar="DIR|gs://BUCKET/PREFIX",
                   help="the archive: a new or empty directory, or a bucket prefix holding nothing (required unless "
                        "--no-export --yes)")
    p.add_argument("--no-restore-check", action="store_true",
                   help="do not restore the archive into scratch stores before deleting (for stores too large to hold "
                        "twice): the archive is then only read back against the stores")
    p.add_argument("--no-export", action="store_true", help="export nothing (with --yes: every store is discarded)")
    p.add_argument("--yes", action="store_true")
    p.add_argument("--abort", action="store_true", help="roll back an unfinished offboarding (before its delete)")
    p.add_argument("--discard", action="append", default=[], metavar="STORE",
                   help="destroy this store without exporting it (postgres-2, postgres-3, firestore, graph, objects)")
    p.set_defaults(func=cmd_offboard)

    p = sub.add_parser("restore", help="bring an offboarded tenant back from its offboarding archive (resumable)",
                       description="Restore an offboarded TENANT, under its id and the plan it was offboarded on, from the "
                       "archive `tenancy offboard` wrote: a pooled tenant into its pool shard's stores, a tenant with "
                       "stores of its own into a freshly deployed tenant stack; every store verified against the "
                       "archive's counts and checksums before the tenant writes again, then the platform stack lists it "
                       "as active. Checked before anything changes; resumable; --abort before its activation removes "
                       "what it wrote.")
    _common(p)
    _engine_args(p)
    _operation_args(p)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--from", dest="source", metavar="DIR|gs://BUCKET/PREFIX", help="the archive (required, except "
                   "with --abort)")
    _store_args(p)
    p.add_argument("--abort", action="store_true", help="roll back an unfinished restore (before its activation)")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("place", help="move one deployed pooled tenant to another pool shard, data included",
                       description="Move a deployed pooled tenant to another pool shard with its rows, objects and "
                       "documents (the phases of a tier move; resumable, --abort before its switch). The target shard "
                       "must exist, be built and have room. Cells and data projects hold a namespace tenant's "
                       "namespace and databases, which this version does not move. Placement never moves a placed "
                       "tenant by itself.")
    _common(p)
    _engine_args(p)
    _operation_args(p)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--cell", metavar="CELL", help="namespace tenants: the cell, e.g. cell-2")
    p.add_argument("--pool-shard", metavar="SHARD", help="pooled tenants: the pool shard, e.g. pool-2")
    p.add_argument("--data-project", metavar="PROJECT", help="namespace tenants: the project of its Cloud SQL instances")
    p.add_argument("--source-dsn", metavar="DSN", help="override: the database of the current pool shard")
    p.add_argument("--target-dsn", metavar="DSN", help="override: the database of the new pool shard")
    p.add_argument("--abort", action="store_true", help="roll back an unfinished move (before its switch)")
    _store_args(p)
    p.set_defaults(func=cmd_place)

    p = sub.add_parser("migrate", help="move a single-platform-stack environment to the cells layout (state only)",
                       description="Move an environment deployed as one platform stack to the cells layout set in "
                       "stacks/Pulumi.<env>.yaml (tenancy:layout: cells): each resource's state moves to the cell, pool-shard "
                       "or identity-shard stack that now declares it (`pulumi state move`), nothing in the cloud is "
                       "recreated, every stack is previewed (nothing may be deleted or replaced) and the unit stacks and "
                       "the global stack are updated in dependency order. Resumable; a re-run after success does nothing. "
                       "Run it with deploys paused.")
    _common(p)
    _engine_args(p)
    p.add_argument("--dry-run", action="store_true", help="say what would move where, and change nothing")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("data", help="per-tenant row moves between PostgreSQL databases",
                       description="Building blocks of tier moves, usable on any PostgreSQL with the tenancy SQL. "
                       "Connect as the owner role; DSNs are libpq strings (prefer PGPASSWORD/PGPASSFILE to passwords in them).")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser, metavar="ACTION")
    m = dsub.add_parser("move", help="copy one tenant's rows to another database and verify them",
                        description="Copy TENANT's rows (COPY streams, foreign-key order), verify counts and checksums, "
                        "reset sequences; with --delete-source remove them from the source after verification.")
    _common(m)
    m.add_argument("tenant", metavar="TENANT")
    m.add_argument("--source", required=True, metavar="DSN")
    m.add_argument("--target", required=True, metavar="DSN")
    m.add_argument("--delete-source", action="store_true",
                   help="freeze the tenant at the source first, and delete its source rows once verified")
    m.add_argument("--replace", action="store_true",
                   help="replace rows the target already holds for the tenant (otherwise such a move is refused)")
    m.add_argument("--state", choices=["active", "suspended", "frozen", "readonly"],
                   help="the tenant's registry state at the target (default: its state at the source before the move)")
    m.add_argument("--abort", action="store_true", help="roll back an unfinished move (before its switch)")
    _operation_args(m)
    _tables_arg(m)
    m.set_defaults(func=cmd_data_move)
    v = dsub.add_parser("verify", help="compare one tenant's rows in two databases",
                        description="Per-table row counts and ordered checksums on both sides; exit 1 on a difference.")
    _common(v)
    v.add_argument("tenant", metavar="TENANT")
    v.add_argument("--source", required=True, metavar="DSN")
    v.add_argument("--target", required=True, metavar="DSN")
    _tables_arg(v)
    v.set_defaults(func=cmd_data_verify)
    e = dsub.add_parser("export", help="export one tenant's rows (one CSV per table plus manifest.json)",
                        description="Write one CSV per isolated table and manifest.json with counts and checksums.")
    _common(e)
    e.add_argument("tenant", metavar="TENANT")
    e.add_argument("--source", required=True, metavar="DSN")
    e.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory; created private (0700)")
    _tables_arg(e)
    e.set_defaults(func=cmd_data_export)
    return parser


def _registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="DSN", default=None,
                   help="the environment's registry database (default: $TENANCY_REGISTRY, else the global stack's "
                        "registry instance through the Cloud SQL Auth Proxy)")


def _operation_args(p: argparse.ArgumentParser) -> None:
    _registry_arg(p)
    p.add_argument("--take-over", action="store_true",
                   help="take the tenant's lease from a process that holds it but is stuck (its registry session is "
                        "ended first); resumes that same operation")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON (operation, status, phases run, "
                   "what moved), for scripts")


def _deployed_record_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deployed-record", metavar="FILE", help="the platform stack's deployedRecord output saved to FILE "
                   "(`pulumi stack output deployedRecord -s ENV > FILE`): placed tenants are shown where they are")


def _with_deployed(catalog, args):
    """The catalogue with the deployed placements of --deployed-record (unchanged without it)."""
    if not getattr(args, "deployed_record", None):
        return catalog
    import dataclasses

    from tenancy.fleet import capacity, placement

    project = capacity.load(args.env).platform_project
    return dataclasses.replace(catalog, placements=placement.record_placements(args.deployed_record, catalog, project))


def _tables_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", action="append", metavar="SCHEMA.TABLE", dest="tables",
                   help="only this isolated table (repeatable or comma-separated; quote mixed-case names: app.\"Trips\")")


def _table_list(values: list[str] | None) -> list[str] | None:
    return None if not values else [t.strip() for v in values for t in v.split(",") if t.strip()]


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["auto", "offline", "operator"], default="auto",
                   help="auto: the Pulumi CLI through the Automation API; offline: run programs locally (dry runs); "
                        "operator: Stack objects on the Pulumi Kubernetes Operator")
    p.add_argument("--state", metavar="DIR", default=".tenancy-state", help="state directory of the offline engine")
    p.add_argument("--policy-pack", metavar="DIR", default="policy", help="policy pack passed to every preview/up")
    op = p.add_argument_group("operator engine")
    op.add_argument("--commit", default="HEAD", metavar="REF", help="the commit the rollout pins (default: HEAD; pushed)")
    op.add_argument("--kube-context", metavar="NAME", help="kubeconfig context of the operator's cluster")
    op.add_argument("--operator-preview", choices=["stacks", "offline", "both"], default="stacks",
                    help="preview through `preview: true` Stack objects, the offline engine (--state), or both")
    op.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS", help="wait at most this long per stack")


def _engine(args):
    import shutil

    from tenancy.engine import AutomationEngine, OfflineEngine

    if args.engine == "offline":
        return OfflineEngine(args.state, args.env)
    root = Path(__file__).resolve().parent.parent
    auto = None
    if shutil.which("pulumi") is not None:
        auto = AutomationEngine(root, root / args.policy_pack,
                                on_output=lambda stack, line: print(f"[{stack}] {line.rstrip()}", file=sys.stderr))
    if args.engine == "operator":
        from tenancy.operator import engine as operator

        return operator.build(args.env, commit=args.commit, kube_context=args.kube_context, preview=args.operator_preview,
                              state=args.state, timeout=args.timeout, outputs_fallback=auto.outputs if auto else None,
                              on_status=lambda stack, msg: print(f"[{stack}] {msg}", file=sys.stderr, flush=True))
    if auto is None:
        from tenancy.errors import ConfigError
        raise ConfigError("the Pulumi CLI is not on PATH; install it, or use --engine offline --state DIR for a dry run")
    return auto


def cmd_deploy(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.lifecycle import deploy, waves

    catalog = load_catalog(args.tenants)
    parallel = args.parallel or (50 if args.engine == "operator" else 4)
    if parallel < 1:
        print("--parallel must be at least 1", file=sys.stderr)
        return EXIT_INPUT
    engine = _engine(args)
    spec = gate = None
    if args.mode == "up":
        explicit = args.waves is not None
        spec = waves.load(args.waves if explicit else Path(args.tenants).resolve().parent / "rollout.yaml", args.env,
                          required=explicit)
        if args.pause is not None:
            spec = spec.model_copy(update={"pause_seconds": args.pause,
                                           "waves": tuple(w.model_copy(update={"pause_seconds": None}) for w in spec.waves)})
        if args.engine == "offline":   # nothing serves traffic in a dry run: the gate checks outputs only
            spec = spec.model_copy(update={"health": spec.health.model_copy(update={"endpoints": False})})
        if not args.no_health_gate:
            gate = waves.HealthGate(engine, spec.health, sleep=time.sleep)
    try:
        result = deploy.rollout(engine, catalog, args.env, mode=args.mode, tenants=args.tenant, stacks=args.stack,
                                changed_since=args.changed_since, parallel=parallel, allow_destroy=args.allow_destroy,
                                waves=spec, from_wave=getattr(args, "from_wave", 1), gate=gate)
    except deploy.NotDeployed as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.outside:
            print(f"deploy {'it' if len(exc.outside) == 1 else 'them'} first: {_first_command(args, exc.outside)}; then "
                  "run this command again", file=sys.stderr)
        else:
            print(f"start at that wave: {_resume_command(args, exc.from_wave)}", file=sys.stderr)
        return EXIT_INPUT
    outcomes = result.outcomes
    for o in outcomes:
        for line in o.lines():
            print(line)
    for p in result.pending:
        print(deploy.pending_line(p, args.env, _same_options(args)))
    if args.mode == "up" and any(o.status == "ok" for o in outcomes):
        try:
            registry = _registry(args, engine, required=False)
            if registry is not None:
                from tenancy.lifecycle import record as rec
                from tenancy.operations.sync import sync
                synced = sync(registry, rec.read(engine, args.env), args.env, engine)
                print(f"registry: {synced['written']} tenant(s) recorded"
                      + (f", {synced['held']} held by an operation" if synced["held"] else ""))
        except TenancyError as exc:   # the stacks are deployed; the registry catches up with `tenancy registry sync`
            print(f"warning: the registry was not updated ({exc}); run `tenancy registry sync --env {args.env}`",
                  file=sys.stderr)
    bad = [o for o in outcomes if o.status in ("failed", "refused")]
    print(f"{len(outcomes)} stack(s): {sum(o.status == 'ok' for o in outcomes)} ok, "
          f"{sum(o.status == 'refused' for o in outcomes)} refused, {sum(o.status == 'failed' for o in outcomes)} failed, "
          f"{sum(o.status == 'skipped' for o in outcomes)} skipped; "
          f"{len(result.pending)} tenant(s) pending a lifecycle command")
    if result.halted:
        h = result.halted
        print(f"halted at wave {h.wave}/{len(result.waves)} '{h.name}': {h.reason}")
        print(f"to resume once it is fixed: {_resume_command(args, h.wave)}")
        return EXIT_FAIL
    return EXIT_FAIL if bad else EXIT_OK


def _first_command(args, stacks: list[str]) -> str:
    """The command that was run, for only `stacks` (what it selected and where it started are left out)."""
    import shlex

    out = _argv_without(args, {"--tenant", "--stack", "--changed-since", "--from-wave"})
    return shlex.join(["tenancy", *out, *[a for s in stacks for a in ("--stack", s)]])


def _argv_without(args, options: set[str]) -> list[str]:
    """The command line as run, without `options` (each with its value, `--opt V` or `--opt=V`)."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in options:
            skip = True
            continue
        if a.split("=", 1)[0] in options and "=" in a:
            continue
        out.append(a)
    return out


def _resume_command(args, wave: int) -> str:
    """The command that was run, with --from-wave N (stacks already done are no-ops when run again)."""
    import shlex

    return shlex.join(["tenancy", *_argv_without(args, {"--from-wave"}), "--from-wave", str(wave)])


def cmd_moves(args) -> int:
    from dataclasses import asdict

    from tenancy.catalog import load_catalog
    from tenancy.lifecycle import deploy

    if args.plan or args.base_catalog or args.archive_stamp:
        return cmd_moves_plan(args)
    for dsn in args.dsn:
        _check_dsn("--dsn", dsn)
    engine = _engine(args)
    found = [asdict(p) for p in deploy.pending(engine, load_catalog(args.tenants), args.env)]
    registry = _registry(args, engine, required=False)
    if registry is not None:
        for op in registry.unfinished():
            found.append({**op.to_json(), "kind": "operation", "operation_kind": op.kind})
    print(json.dumps(found, indent=1, ensure_ascii=False, default=str))
    if not args.dsn:
        return EXIT_OK
    from tenancy.lifecycle.online import leftovers, owned_names

    left = leftovers(args.dsn, owned_names(registry) if registry is not None else set())
    for server, o in left:
        print(f"leftover of an online move on {server}: {o}", file=sys.stderr)
    if left:
        print(f"{len(left)} leftover(s): finish or abort the operation that made them (`tenancy moves` lists the "
              "unfinished ones with their commands); for a move no one will resume, drop them "
              "(tenancy.stores.replication.cleanup)", file=sys.stderr)
    return EXIT_FAIL if left else EXIT_OK


def cmd_moves_plan(args) -> int:
    """`tenancy moves --plan moves.yaml`: the deploy job's steps (tenancy/delivery.py) as JSON; exit 1 when an item is
    refused (it is listed with why), 2 when the moves file or the catalogue is wrong."""
    from datetime import datetime, timezone

    from tenancy import delivery, naming
    from tenancy.catalog import load_catalog
    from tenancy.engine import EngineError
    from tenancy.errors import ConfigError
    from tenancy.lifecycle import record as rec

    if not args.plan:
        raise ConfigError("--base-catalog and --archive-stamp go with --plan FILE (the moves file)")
    if args.dsn:
        raise ConfigError("--plan takes no --dsn: it reads the registry's record of every database")
    stamp = args.archive_stamp or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}", stamp):
        raise ConfigError(f"--archive-stamp {stamp[:60]!r}: up to 40 letters, digits, '.', '_' or '-'")
    catalog = load_catalog(args.tenants)
    moves = delivery.load(args.plan)
    registry = None
    if args.base_catalog:
        facts = delivery.review_facts(args.env, load_catalog(args.base_catalog), args.tenants)
    else:
        engine = _engine(args)
        try:
            outputs = engine.outputs(naming.stack_name(args.env))
        except EngineError:
            outputs = {}
        registry = _registry(args, engine, required=False)
        facts = delivery.Facts(args.env, rec.read(engine, args.env), str(outputs.get("region") or ""),
                               delivery.registry_databases(registry) if registry is not None else {},
                               registry.unfinished() if registry is not None else None, args.tenants)
    deployed = facts.deployed.catalog
    moves.check(catalog, dict(deployed.plans) if deployed is not None else None)
    found = delivery.steps(catalog, moves, facts, stamp)
    if registry is None and not args.base_catalog:
        for s in found:
            if s.status == "run":
                s.status, s.message = "failed", (f"{s.message}; but the environment's registry is not reachable (no "
                                                 "--registry, no TENANCY_REGISTRY, no `registry` output of the global "
                                                 "stack): every operation takes the tenant's lease there")
    print(to_json({"environment": args.env, "moves_file": args.plan, "archive_stamp": stamp,
                   "steps": [s.to_json() for s in found]}))
    for s in found:
        if s.status == "failed":
            print(f"refused: {s.message}", file=sys.stderr)
    return EXIT_FAIL if any(s.status == "failed" for s in found) else EXIT_OK


def _registry(args, engine=None, required: bool = True):
    """The environment's registry: --registry, $TENANCY_REGISTRY, or the global stack's registry instance through the
    Cloud SQL Auth Proxy. None when none is configured and `required` is False."""
    from tenancy.errors import ConfigError
    from tenancy.operations.registry import Registry

    dsn = getattr(args, "registry", None) or os.environ.get("TENANCY_REGISTRY")
    if not dsn and engine is not None:
        dsn = _registry_from_outputs(engine, args.env)
    if not dsn:
        if not required:
            return None
        raise ConfigError("this command needs the environment's registry: give --registry DSN or set TENANCY_REGISTRY "
                          "(for a deployed environment: the global stack's registry instance, reached through the Cloud "
                          f"SQL Auth Proxy); create one with `tenancy registry init --env {args.env} --registry DSN`")
    _check_dsn("--registry", dsn)
    return Registry.open(dsn, args.env)


def _registry_from_outputs(engine, env: str) -> str | None:
    """The registry instance the global stack exports (`registry`: connection name, database, user), through the
    Cloud SQL Auth Proxy's socket directory."""
    from tenancy import naming
    from tenancy.engine import EngineError
    from tenancy.operations.stores import connection_dsn

    try:
        found = engine.outputs(naming.stack_name(env)).get("registry")
    except EngineError:
        return None
    if not isinstance(found, dict) or not found.get("connectionName"):
        return None
    return connection_dsn({"instance": found["connectionName"], "dbname": found.get("database", "tenancy_registry"),
                           **({"user": found["user"]} if found.get("user") else {})})


def _context(args, engine):
    from tenancy.operations.protocol import Context

    return Context(args.env, _registry(args, engine), engine, say=_progress)


def _command_line(args, drop: tuple[str, ...] = ("--abort", "--take-over")) -> str:
    """The command that was run, as it resumes the operation: passwords in it redacted (it is recorded)."""
    import shlex

    argv = [a for a in (getattr(args, "argv", None) or sys.argv[1:]) if a not in drop]
    return _redact(shlex.join(["tenancy", *argv]))


def _same_options(args) -> str:
    """The options a follow-up command needs to reach what this one reached: its catalogue, engine and state, and
    the registry it was given (a password in it redacted)."""
    import shlex

    out = []
    if args.tenants != "tenants.yaml":
        out += ["--tenants", args.tenants]
    if getattr(args, "engine", "auto") != "auto":
        out += ["--engine", args.engine]
        if args.engine == "offline":
            out += ["--state", args.state]
    if getattr(args, "registry", None):
        out += ["--registry", args.registry]
    return _redact(shlex.join(out)) if out else ""


def _print_outcome(out, line: str, as_json: bool = False) -> int:
    if as_json:
        print(json.dumps(out.to_json(), indent=1, ensure_ascii=False, default=str))
        return EXIT_OK
    if out.status in ("nothing to do", "nothing to abort"):
        print(out.message)
        return EXIT_OK
    print(line)
    return EXIT_OK


def _check_dsn(option: str, dsn: str) -> None:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    from tenancy.errors import ConfigError
    try:
        conninfo_to_dict(dsn)
    except ProgrammingError:
        raise ConfigError(f"{option}: not a libpq connection string (key=value ... or postgresql://...); not shown, it "
                          "may hold a password") from None


def _store_args(p) -> None:
    p.add_argument("--db", action="append", default=[], metavar="NAME=DSN", dest="dbs",
                   help="override: a database of the operation, by store (postgres-N, pooled) or registry name (pool-N, "
                        "<tenant>/postgres-N); default: the registry's record; repeatable")
    p.add_argument("--objects-root", metavar="DIR", help="dry runs: buckets are directories DIR/<bucket name>")
    p.add_argument("--kubeconfig", metavar="FILE", help="cluster credentials for the graph's neo4j-admin dump (or, for a "
                   "restore, load) Job")
    p.add_argument("--skip", action="append", default=[], metavar="KIND",
                   help="do not carry this store kind in this run (objects, firestore, graph): its data stays where it is")


def _reach(args, dsns: dict[str, str]):
    from tenancy.errors import ConfigError
    from tenancy.lifecycle.tenant_data import KINDS, Reach

    for name, dsn in _db_overrides(args.dbs).items():
        dsns.setdefault(name, dsn)
    skip = set()
    for v in args.skip:
        for k in v.split(","):
            if k not in KINDS or k == "postgres":
                raise ConfigError(f"--skip {k}: not a store kind; use objects, firestore or graph")
            skip.add(k)
    runner = None
    if args.kubeconfig:
        from tenancy.stores.graph import KubernetesJobRunner
        try:
            text = Path(args.kubeconfig).read_text()
        except OSError as exc:
            raise ConfigError(f"--kubeconfig {args.kubeconfig}: {exc.strerror or exc}; give the path of a kubeconfig "
                              "file (the tenant stack's `kubeconfig` output saved to a file)") from None
        runner = KubernetesJobRunner(text)
    return Reach(dsns, args.objects_root, runner, frozenset(skip))


def _stores(values: list[str]) -> frozenset[str]:
    from tenancy.errors import ConfigError
    from tenancy.lifecycle.destroy import STORES

    out = set()
    for v in values:
        for s in v.split(","):
            if s not in STORES:
                raise ConfigError(f"--discard {s}: not a store; use one of {', '.join(STORES)}")
            out.add(s)
    return frozenset(out)


def cmd_upgrade(args) -> int:
    from tenancy.catalog import Model, load_catalog
    from tenancy.errors import ConfigError
    from tenancy.operations import tier_move

    catalog = load_catalog(args.tenants)
    if args.to_plan not in catalog.plans:
        raise ConfigError(f"unknown plan '{args.to_plan}'; plans: {', '.join(sorted(catalog.plans))}")
    for option, dsn in (("--source-dsn", args.source_dsn), ("--target-dsn", args.target_dsn)):
        if dsn:
            _check_dsn(option, dsn)
    replication = _replication_dsns(args.replication_dsn)
    # Towards a pooled plan the rows come from the tenant's databases into the pool; otherwise the reverse.
    to_pool = catalog.plans[args.to_plan].model is Model.POOLED
    pooled_dsn, tenant_dsn = (args.target_dsn, args.source_dsn) if to_pool else (args.source_dsn, args.target_dsn)
    reach = _reach(args, {k: v for k, v in (("pooled", pooled_dsn), ("postgres-1", tenant_dsn)) if v})
    for kind in sorted(reach.skip):
        _progress(f"warning: --skip {kind}: this move does not carry the tenant's {kind}; move it yourself")
    discard = _stores(args.discard)
    if args.export_to and args.abort:
        raise ConfigError("--abort takes no --export-to: it removes what the unfinished move created")
    _archive_arg("--export-to", args.export_to)
    engine = _engine(args)
    ctx = _context(args, engine)
    out = tier_move.upgrade(ctx, catalog, args.tenant, args.to_plan, reach=reach, keep_source_days=args.keep_source,
                            abort=args.abort, take_over=args.take_over, allow_destroy=args.allow_destroy, discard=discard,
                            export_to=args.export_to, method=args.method, replication=replication,
                            command=_command_line(args))
    d = out.detail
    freeze = f"; write freeze {d['freeze_seconds']:.2f}s" if d.get("freeze_seconds") is not None else ""
    line = (f"{out.operation}: {out.status}; phases run: {', '.join(out.phases_run) or 'none'}; {d.get('rows', 0)} rows "
            f"copied{freeze}"
            + "".join(f"; {k}: " + ", ".join(f"{n} {w}" for w, n in v.items() if w != "verified")
                      for k, v in (d.get("copied") or {}).items() if "rows" not in v)
            + (f"; {out.message}" if out.message else ""))
    code = _print_outcome(out, line, args.json)
    if d.get("catalog_line") and not args.json:
        print(d["catalog_line"])
    return code


def _replication_dsns(items: list[str]) -> dict[str, str]:
    from tenancy.errors import ConfigError

    out = {}
    for item in items:
        name, sep, dsn = item.partition("=")
        if not sep or not re.fullmatch(r"pooled|postgres-[1-9]", name) or not dsn:
            raise ConfigError(f"--replication-dsn {name}=...: give STORE=DSN with STORE pooled or postgres-N")
        _check_dsn(f"--replication-dsn {name}", dsn)
        out[name] = dsn
    return out


def cmd_suspend(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.lifecycle.tenant_data import Reach
    from tenancy.operations import suspend

    dsns = _db_overrides(args.dbs)
    if args.pooled_dsn:
        _check_dsn("--pooled-dsn", args.pooled_dsn)
        dsns["pooled"] = args.pooled_dsn
    catalog = load_catalog(args.tenants)
    engine = _engine(args)
    out = suspend.set_state(_context(args, engine), catalog, args.tenant, resume=args.resume, reach=Reach(dsns),
                            take_over=args.take_over, command=_command_line(args))
    line = (f"tenant '{args.tenant}' {'resumed: its databases accept its writes again' if args.resume else 'suspended: its databases refuse its writes'}"
            f" ({out.operation})")
    return _print_outcome(out, line, args.json)


def _db_overrides(items: list[str]) -> dict[str, str]:
    from tenancy.errors import ConfigError

    out = {}
    for item in items:
        name, sep, dsn = item.partition("=")
        if not sep or not dsn or not re.fullmatch(r"pooled|postgres-[1-9]|pool-[1-9][0-9]*|[a-z0-9-]+/postgres-[1-9]", name):
            raise ConfigError(f"--db {item.split('=', 1)[0]}=...: give NAME=DSN with NAME postgres-N, pooled, pool-N or "
                              "<tenant>/postgres-N")
        _check_dsn(f"--db {name}", dsn)
        out[name] = dsn
    return out


def cmd_offboard(args) -> int:
    from tenancy.catalog import Model, load_catalog
    from tenancy.errors import ConfigError
    from tenancy.operations import offboard

    if args.no_export and args.export_to:
        print("--no-export and --export-to contradict each other", file=sys.stderr)
        return EXIT_INPUT
    discard = _stores(args.discard)
    if args.no_export and args.yes:
        from tenancy.lifecycle.destroy import STORES
        discard = frozenset(STORES)
    if args.source_dsn:
        _check_dsn("--source-dsn", args.source_dsn)
    if args.abort and (args.export_to or args.no_export):
        raise ConfigError("--abort takes no --export-to or --no-export: it undoes what the unfinished offboarding did")
    _archive_arg("--export-to", args.export_to)
    catalog = load_catalog(args.tenants)
    engine = _engine(args)
    ctx = _context(args, engine)
    overrides = {}
    if args.source_dsn:
        from tenancy.lifecycle import record as rec
        deployed = rec.read(engine, args.env)
        pooled = deployed.knows(args.tenant) and deployed.catalog.tenant(args.tenant).model is Model.POOLED
        overrides["pooled" if pooled else "postgres-1"] = args.source_dsn
    out = offboard.offboard(ctx, catalog, args.tenant, export_to=args.export_to, reach=_reach(args, overrides),
                            discard=discard, yes=args.yes and args.no_export, abort=args.abort, take_over=args.take_over,
                            command=_command_line(args), restore_check=not args.no_restore_check)
    if out.status in ("nothing to abort",) and not args.json:
        print(out.message)
        return EXIT_OK
    print(json.dumps({"tenant": args.tenant, **out.to_json()}, indent=1, ensure_ascii=False, default=str))
    return EXIT_OK


def _archive_arg(option: str, value: str | None) -> None:
    """A gs:// archive location must name a bucket and a prefix of its own (bad input: exit 2)."""
    from tenancy.errors import ConfigError
    from tenancy.lifecycle import archives

    if archives.is_bucket(value):
        try:
            archives.parse(value)
        except archives.ArchiveError as exc:
            raise ConfigError(f"{option} {exc}") from None


def cmd_restore(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.errors import ConfigError
    from tenancy.operations import restore

    if not args.source and not args.abort:
        raise ConfigError(f"give the archive to restore '{args.tenant}' from: --from DIR or --from gs://BUCKET/PREFIX")
    _archive_arg("--from", args.source)
    reach = _reach(args, {})
    catalog = load_catalog(args.tenants)
    engine = _engine(args)
    out = restore.restore(_context(args, engine), catalog, args.tenant, source=args.source, reach=reach,
                          abort=args.abort, take_over=args.take_over, command=_command_line(args))
    if out.status == "nothing to abort" and not args.json:
        print(out.message)
        return EXIT_OK
    print(json.dumps({"tenant": args.tenant, **out.to_json()}, indent=1, ensure_ascii=False, default=str))
    return EXIT_OK


def cmd_place(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.lifecycle import record as rec
    from tenancy.operations import place

    catalog = load_catalog(args.tenants)
    engine = _engine(args)
    for option, dsn in (("--source-dsn", args.source_dsn), ("--target-dsn", args.target_dsn)):
        if dsn:
            _check_dsn(option, dsn)
    overrides = {}
    if args.source_dsn or args.target_dsn:
        from tenancy.fleet import capacity
        from tenancy.fleet.placement import place as placed
        deployed = rec.read(engine, args.env)
        if deployed.knows(args.tenant):
            now = placed(deployed.catalog, capacity.load(args.env)).tenants[args.tenant]
            if args.source_dsn and now.pool_shard:
                overrides[now.pool_shard] = args.source_dsn
        if args.target_dsn and args.pool_shard:
            overrides[args.pool_shard] = args.target_dsn
    reach = _reach(args, overrides)
    from tenancy.fleet.relocate import resolve
    now, target = resolve(catalog, rec.read(engine, args.env), args.env, args.tenant, cell=args.cell,
                          pool_shard=args.pool_shard, data_project=args.data_project)
    if now == target and not args.abort:
        print(f"tenant '{args.tenant}' is already in {target.describe()}; nothing to do")
        return EXIT_OK
    ctx = _context(args, engine)
    out = place.place(ctx, catalog, args.tenant, cell=args.cell, pool_shard=args.pool_shard,
                      data_project=args.data_project, reach=reach, abort=args.abort, take_over=args.take_over,
                      command=_command_line(args))
    if out.status != "done" or args.json:
        return _print_outcome(out, out.message or f"{out.operation}: {out.status}", args.json)
    was = ", ".join(out.detail["from"].values()) or "nowhere"
    now = ", ".join(out.detail["to"].values())
    print(f"tenant '{args.tenant}' moved from {was} to {now} with its data ({out.operation})")
    return EXIT_OK


def cmd_migrate(args) -> int:
    from tenancy.fleet import migrate

    engine = _engine(args)
    if args.engine == "operator":
        from tenancy.errors import ConfigError
        raise ConfigError("`tenancy migrate` moves state through the Pulumi CLI: use --engine auto (or offline)")
    out = migrate.migrate(engine, args.env, say=_progress, dry_run=args.dry_run)
    for stack, urns in sorted(out.plan.moves.items()):
        print(f"{stack}: {len(urns)} resource(s) {'would move' if args.dry_run else 'moved'}")
    if out.plan.count or not args.dry_run:
        print(f"global stack {args.env}: keeps {len(out.plan.kept)} resource(s)" if out.plan.count else
              f"environment '{args.env}' is in the cells layout")
    return EXIT_OK


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_data_move(args) -> int:
    from tenancy.operations import data_move

    for option, dsn in (("--source", args.source), ("--target", args.target)):
        _check_dsn(option, dsn)
    ctx = _context(args, None)
    out = data_move.move(ctx, args.tenant, args.source, args.target, delete_source=args.delete_source,
                         replace=args.replace, tables=_table_list(args.tables), target_state=args.state,
                         abort=args.abort, take_over=args.take_over, command=_command_line(args))
    if out.status != "done" or args.json:
        return _print_outcome(out, out.message or f"{out.operation}: {out.status}", args.json)
    d = out.detail
    seconds = d.get("seconds") or 0.0
    replaced = f"; replaced {d['replaced_rows']} rows the target held" if d.get("replaced_rows") else ""
    print(f"moved {d['total_rows']} rows of '{args.tenant}' ({len(d['tables'])} tables), verified, in {seconds:.2f}s "
          f"({d['total_rows'] / max(seconds, 1e-9):,.0f} rows/s){replaced}"
          f"{'; source rows deleted' if d.get('deleted_source') else '; source rows kept'} ({out.operation})")
    return EXIT_OK


def cmd_registry_init(args) -> int:
    from tenancy.errors import ConfigError
    from tenancy.operations.registry import Registry

    dsn = args.registry or os.environ.get("TENANCY_REGISTRY")
    if not dsn:
        raise ConfigError("give --registry DSN (or set TENANCY_REGISTRY): the database to hold the registry")
    _check_dsn("--registry", dsn)
    reg = Registry.init(dsn, args.env)
    print(f"registry of environment '{args.env}' ready at {reg.describe()}")
    return EXIT_OK


def cmd_registry_database(args) -> int:
    from tenancy.errors import ConfigError
    from tenancy.operations.stores import connection_record

    if not re.fullmatch(r"pool-[1-9][0-9]*|[a-z0-9]([a-z0-9-]*[a-z0-9])?/postgres-[1-9]", args.name):
        raise ConfigError(f"database name '{args.name[:60]}': use pool-N or <tenant>/postgres-N, as the data layout names "
                          "a tenant's databases")
    if args.dsn:
        _check_dsn("--dsn", args.dsn)
        try:
            connection = connection_record(args.dsn)
        except ValueError:
            raise ConfigError("--dsn holds a password: the registry never keeps one; give it through PGPASSFILE, "
                              "PGPASSWORD or IAM authentication, and the DSN without it") from None
    else:
        if not args.dbname:
            raise ConfigError("--instance needs --dbname (and usually --user)")
        connection = {"instance": args.instance, "dbname": args.dbname, **({"user": args.user} if args.user else {})}
    unit = args.name if args.name.startswith("pool-") else f"tenant:{args.name.split('/')[0]}"
    reg = _registry(args)
    reg.set_database(args.name, unit, connection)
    print(f"database {args.name} ({unit}) recorded in the registry of '{args.env}'")
    return EXIT_OK


def cmd_registry_sync(args) -> int:
    from tenancy.lifecycle import record as rec
    from tenancy.operations.sync import sync

    engine = _engine(args)
    reg = _registry(args, engine)
    out = sync(reg, rec.read(engine, args.env), args.env, engine)
    print(f"registry of '{args.env}': {out['written']} tenant(s) and {out['databases']} database(s) recorded"
          + (f", {out['held']} held by an operation (left to it)" if out["held"] else ""))
    return EXIT_OK


def cmd_registry_show(args) -> int:
    reg = _registry(args)
    out: dict = {"environment": args.env}
    if args.tenant:
        row = reg.tenant(args.tenant)
        out["tenant"] = row.__dict__ if row else None
        out["operations"] = [op.to_json() for op in reg.history(args.tenant)]
    else:
        out["tenants"] = [r.__dict__ for r in reg.tenants(args.state)]
        out["databases"] = [{k: v for k, v in d.__dict__.items()} for d in reg.databases()]
        out["unfinished"] = [op.to_json() for op in reg.unfinished()]
    print(json.dumps(out, indent=1, ensure_ascii=False, default=str))
    return EXIT_OK


def cmd_data_verify(args) -> int:
    from tenancy.stores import postgres as data

    checks = data.verify(args.source, args.target, args.tenant, tables=_table_list(args.tables))
    for c in checks:
        if c.ok:
            print(f"{c.table}: {c.source_rows} rows, checksums match")
        else:
            print(f"{c.table}: DIFFERS: source {c.source_rows} rows {c.source_checksum}, target {c.target_rows} rows {c.target_checksum}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAIL


def cmd_data_export(args) -> int:
    from tenancy.stores import postgres as data

    manifest = data.export(args.source, args.tenant, args.out, progress=_progress, tables=_table_list(args.tables))
    total = sum(t["rows"] for t in manifest["tables"].values())
    print(f"exported {total} rows of '{args.tenant}' in {len(manifest['tables'])} tables to {args.out} (manifest.json), "
          "files re-read and checked against the database")
    return EXIT_OK


def cmd_affected(args) -> int:
    from tenancy import ci, naming
    from tenancy.catalog import load_catalog
    from tenancy.changes import changes_since

    if not 1 <= args.max_jobs <= ci.MAX_JOBS:
        print(f"--max-jobs must be between 1 and {ci.MAX_JOBS} (GitHub Actions' matrix limit)", file=sys.stderr)
        return EXIT_INPUT
    if args.max_real is not None and args.max_real < 1:
        print("--max-real must be at least 1", file=sys.stderr)
        return EXIT_INPUT
    catalog = load_catalog(args.tenants)
    naming.check_env(args.env)
    ch = changes_since(catalog, args.env, args.changed_since)
    from tenancy.topology import every_platform_stack

    platform = naming.stack_name(args.env)
    # The platform side first (in the cells layout: the global stack, identity shards, cells, pool shards).
    sides = [s for s in every_platform_stack(args.env) if s in ch.reasons]
    stacks = sides + sorted(s for s in ch.reasons if s not in sides)
    chosen = ci.select(stacks, ch, catalog, args.env, args.max_real)
    matrix = ci.matrix(chosen, args.max_jobs, platform)
    print(to_json({"environment": args.env, "platform": bool(sides), "stacks": stacks,
                      "real": chosen.real, "offlineOnly": chosen.offline_only, "new": chosen.new,
                      "jobs": len(matrix["include"]),
                      "matrix": matrix, "reasons": ch.reasons, "removed": ch.removed}, indent=1))
    return EXIT_OK


def cmd_pr_comment(args) -> int:
    from tenancy import naming, prcomment
    from tenancy.catalog import load_catalog
    from tenancy.changes import catalog_at, changes_between, changes_since

    head = load_catalog(args.tenants)
    naming.check_env(args.env)
    if args.base_catalog:
        base = load_catalog(args.base_catalog)
        changes = changes_between(base, head, args.env, base_label=args.base_catalog)
        label = args.base_catalog
    else:
        changes = changes_since(head, args.env, args.base)
        base, _ = catalog_at(args.tenants, args.base)
        label = args.base
    plan = json.loads(Path(args.plan).read_text()) if args.plan else None
    from tenancy.fleet import capacity, placement as fleet
    placed, refused = None, None
    try:
        placed = fleet.place(_with_deployed(head, args), capacity.load(args.env))
    except fleet.PlacementError as exc:   # shown in the comment: the change cannot be deployed as it is
        refused = str(exc)
    affected = json.loads(Path(args.affected).read_text()) if args.affected else None
    kw = dict(base_label=label, affected=affected, details_url=args.details_url, placement=placed,
              placement_refused=refused)
    if args.full_out:
        Path(args.full_out).write_text(prcomment.render(base, head, changes, args.env, plan, full=True, **kw))
    sys.stdout.write(prcomment.render(base, head, changes, args.env, plan, **kw))
    return EXIT_OK


def cmd_operator_manifests(args) -> int:
    import yaml

    from tenancy.catalog import load_catalog
    from tenancy.operator import schema
    from tenancy.operator.settings import OperatorSettings
    from tenancy.operator.stacks import fleet_objects, resolve_commit, tree_changes

    settings = OperatorSettings.load(args.env).require_rollout()
    commit = resolve_commit(args.commit)
    changed = tree_changes(commit)
    if changed:
        files = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        what = (f"the working tree differs from {args.commit} ({commit[:12]}) in {len(changed)} file(s): {files}; the "
                "objects would be rendered from the working tree but pin the commit")
        if not args.allow_dirty:
            print(f"error: {what}: commit the changes (and push them), or pass --allow-dirty", file=sys.stderr)
            return EXIT_INPUT
        print(f"warning: {what} (--allow-dirty)", file=sys.stderr)
    objects = fleet_objects(load_catalog(args.tenants), settings, commit)
    for obj in objects:
        if found := schema.problems(obj):
            print(f"error: Stack {obj['metadata']['name']}: {'; '.join(found)}", file=sys.stderr)
            return EXIT_FAIL
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    print(f"{len(objects)} Stack object(s) at commit {commit[:12]}, each valid against the operator's CRD", file=sys.stderr)
    return EXIT_OK


def cmd_operator_prune(args) -> int:
    import shutil

    from tenancy.engine import AutomationEngine
    from tenancy.lifecycle import record as rec
    from tenancy.operator import engine as operator
    from tenancy.operator.stacks import fleet

    root = Path(__file__).resolve().parent.parent
    auto = AutomationEngine(root, None) if shutil.which("pulumi") else None
    engine = operator.build(args.env, commit="HEAD", kube_context=args.kube_context, preview="stacks", state=".tenancy-state",
                            timeout=60.0, outputs_fallback=auto.outputs if auto else None, on_status=None)
    deployed = rec.read(engine, args.env)
    if deployed.catalog is None:
        raise rec.RecordError(f"environment '{args.env}' has no deployed record: nothing to compare Stack objects with")
    gone = engine.prune([s.stack for s in fleet(deployed.catalog, args.env)], dry_run=args.dry_run)
    for name, stack in gone:
        print(f"{'would delete' if args.dry_run else 'deleted'} Stack {name} ({stack})")
    if not gone:
        print("every Stack object belongs to a deployed stack")
    return EXIT_OK


def cmd_db_apply(args) -> int:
    from tenancy import db
    from tenancy.errors import ConfigError

    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.as_name is None:
        if not args.dsn:
            raise ConfigError("give the database's DSN, or --as NAME to apply to the database the registry records as NAME")
        _check_dsn("DSN", args.dsn)
        applied = db.apply(args.dsn, progress=say)
        print(f"applied {', '.join(applied)}; isolation audit clean")
        return EXIT_OK
    from tenancy import registration

    target = registration.parse(args.as_name)
    if args.dsn:
        _check_dsn("DSN", args.dsn)
    engine = _engine(args)
    rows, source = registration.for_database(target, args.env, engine, lambda: _checked_catalog(args), args.tenants)
    dsn = args.dsn or _recorded_dsn(args, engine, target.name)
    registration.check_database(dsn, args.env, target.name)
    applied = db.apply(dsn, progress=say, then=("the registration", registration.sql(target, args.env, rows)))
    names = ", ".join(f"{r.id} ({r.state})" for r in rows) or "none"
    print(f"applied {', '.join(applied)} to {db.describe_dsn(dsn)} in one transaction")
    print(f"{args.env}'s {target.name}: {len(rows)} tenant(s) registered, from {source}: {names}")
    print("isolation audit clean")
    return EXIT_OK


def _recorded_dsn(args, engine, name: str) -> str:
    from tenancy.errors import ConfigError
    from tenancy.operations.stores import Resolver

    registry = _registry(args, engine)
    dsn = Resolver(registry).dsn(name, name)
    if dsn is None:
        raise ConfigError(f"the registry of {args.env} has no connection for database {name}: give its DSN, or record it "
                          f"first (`tenancy registry database {name} --dsn DSN --env {args.env}`)")
    return dsn


def _checked_catalog(args, deployed: bool = False):
    """(the catalogue of --tenants, its placement), checked against --env's platform config and capacity: every
    problem of the file and of its fit to the environment in one CatalogError (exit 2, one line each, in the order
    of their lines). `deployed`: with the placements of --deployed-record (pins and capacity are checked around
    them)."""
    from tenancy.fleet.placement import fit
    from tenancy.catalog import load_catalog, ordered

    problems = []
    try:
        catalog = load_catalog(args.tenants)
    except CatalogError as exc:
        if exc.partial is None:
            raise
        catalog, problems = exc.partial, list(exc.problems)
    if deployed:
        catalog = _with_deployed(catalog, args)
    placed, more = fit(catalog, args.env)
    problems += more
    if problems:
        raise CatalogError(ordered(problems, args.tenants))
    return catalog, placed


def cmd_validate(args) -> int:
    # The file, the rules that need the environment (custom domains against its base domain, its platform
    # project), and whether its capacity holds every tenant and each pin (tenancy/fleet): all in one run.
    catalog, _ = _checked_catalog(args)
    models: dict[str, int] = {}
    for t in catalog.tenants:
        models[t.model.value] = models.get(t.model.value, 0) + 1
    counts = ", ".join(f"{n} {m}" for m, n in sorted(models.items()))
    print(f"{args.tenants}: valid: {len(catalog.tenants)} tenants ({counts}), {len(catalog.plans)} plans; "
          f"checked against environment {args.env}")
    return EXIT_OK


def cmd_schema(args) -> int:
    from tenancy.catalog import json_schema

    text = to_json(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.check:
        if not args.out:
            print("tenancy schema --check needs --out FILE", file=sys.stderr)
            return EXIT_INPUT
        current = Path(args.out).read_text() if Path(args.out).exists() else ""
        if current != text:
            print(f"{args.out} is out of date; run `tenancy schema --out {args.out}`", file=sys.stderr)
            return EXIT_FAIL
        print(f"{args.out} is up to date")
        return EXIT_OK
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_plan(args) -> int:
    from tenancy import plan as planmod

    if args.workers is not None and args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return EXIT_INPUT
    planmod.prefetch_exports(args.env)   # computed beside the catalogue's parsing and placement
    from tenancy import plancache

    catalog, placed = plancache.checked_catalog(args.tenants, args.env, args.deployed_record,
                                                lambda: _checked_catalog(args, deployed=True))
    from tenancy.progress import Meter

    meter = Meter(sys.stderr)
    result = planmod.plan(catalog, args.env, tenants=args.tenant, changed_since=args.changed_since,
                          workers=args.workers, progress=meter.say, meter=meter, out=args.out, placed=placed)
    path = result.plan_file
    if args.json:
        print(to_json({
            "environment": result.environment, "planFile": str(path),
            "stacks": [{"name": s.name, "kind": s.kind, "tenant": s.tenant, "model": s.model, "resources": s.resource_count,
                        "reasons": s.reasons, "violations": s.violations, "placement": s.placement} for s in result.stacks],
            "removed": result.removed, "unchanged": result.unchanged}, indent=1))
    else:
        print(planmod.summary(result))
        print(f"wrote {path} and {Path(args.out) / 'manifests'}/")
    return EXIT_FAIL if result.mandatory_violations else EXIT_OK


def cmd_policy_check(args) -> int:
    from tenancy.policycheck import MalformedPlan, evaluate_plan, evaluate_stack, plan_problem, stack_of_urn

    path = Path(args.plan_file)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"{args.plan_file}: file not found", file=sys.stderr)
        return EXIT_INPUT
    except IsADirectoryError:
        print(f"{args.plan_file}: is a directory; give the plan file (e.g. {path / 'plan.json'})", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:
        print(f"{args.plan_file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT
    except UnicodeDecodeError:
        print(f"{args.plan_file}: not a plan file (not UTF-8 text)", file=sys.stderr)
        return EXIT_INPUT
    except json.JSONDecodeError as exc:
        print(f"{args.plan_file}:{exc.lineno}: not valid JSON: {exc.msg}", file=sys.stderr)
        return EXIT_INPUT
    problem = plan_problem(data)
    if problem:
        print(f"{args.plan_file}: {problem}", file=sys.stderr)
        return EXIT_INPUT
    try:
        found = [(stack.get("name"), v) for stack in data["stacks"] for v in evaluate_stack(stack)]
        found += [(stack_of_urn(v["urn"]), v) for v in evaluate_plan(data["stacks"])]
    except MalformedPlan as exc:
        print(f"{args.plan_file}: {exc}; a plan written by `tenancy plan` has the shapes the policy pack reads",
              file=sys.stderr)
        return EXIT_INPUT
    mandatory = 0
    total = 0
    for name, v in found:
        total += 1
        mandatory += v["enforcement"] == "mandatory"
        print(f"[{v['enforcement']}] stack {name}: {v['urn']}: {v['policy']}: {v['message']}")
    print(f"{len(data['stacks'])} stack(s) checked: {mandatory} mandatory violation(s), {total - mandatory} advisory")
    return EXIT_FAIL if mandatory else EXIT_OK


def run() -> NoReturn:
    """The `tenancy` command: main(), then an exit without the interpreter's teardown when nothing is left to
    finish (no child process, no other thread): freeing a 10,000-tenant catalogue and every imported SDK module
    object by object takes about a second, after the work is done and written."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:          # a closed pipe: the interpreter's own exit says so as it always has
        sys.exit(code)
    import multiprocessing
    import threading

    if threading.active_count() == 1 and not multiprocessing.active_children():
        os._exit(code)
    sys.exit(code)


def _quiet_google_python_warning() -> None:
    """google.api_core warns, when a command first opens a Firestore or Cloud Storage client, that new releases of
    Google's libraries will drop this Python version: nothing an operator can act on (Python 3.11 is the project's
    pinned runtime, raised with its dependencies), printed on every such command. Only that warning is silenced:
    FutureWarning, from google.api_core's Python-version check, with its message; every other warning still shows."""
    import warnings

    warnings.filterwarnings("ignore", message=r"You are using a (non-supported )?Python version", category=FutureWarning,
                            module=r"google\.api_core\._python_version_support")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PULUMI_ERROR_OUTPUT_STRING", "1")
    _quiet_google_python_warning()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    func: Callable = args.func
    try:
        return func(args)
    except CatalogError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); nothing was planned or applied", file=sys.stderr)
        return EXIT_INPUT
    except TenancyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:   # a file or directory the command needs (export directory, state directory, ...)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error:{where}: {exc.strerror or exc}; nothing more was done", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # noqa: BLE001 -- the last line of defence: one line, never a traceback or a secret
        import psycopg

        if isinstance(exc, psycopg.Error):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"error: database: {_redact(first)}; nothing more was done", file=sys.stderr)
            return EXIT_FAIL
        raise


def _redact(text: str) -> str:
    import re

    return re.sub(r"(password\s*=\s*)\S+|(://[^:/@\s]+:)[^@\s]+@", lambda m: (m.group(1) or m.group(2)) + "***"
                  + ("" if m.group(1) else "@"), text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
