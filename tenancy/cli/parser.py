"""The command line's grammar: every subcommand with its options and help text, and the function it runs."""

from __future__ import annotations

import argparse
import os
import sys

from tenancy.cli.common import EXIT_INPUT
from tenancy.cli.deploy_commands import (cmd_db_apply, cmd_deploy, cmd_migrate, cmd_moves, cmd_operator_manifests,
                                         cmd_operator_prune)
from tenancy.cli.plan_commands import (cmd_affected, cmd_plan, cmd_policy_check, cmd_pr_comment, cmd_schema,
                                       cmd_validate)
from tenancy.cli.registry_commands import (cmd_registry_database, cmd_registry_init, cmd_registry_show,
                                           cmd_registry_sync)
from tenancy.cli.tenant_commands import (cmd_data_export, cmd_data_move, cmd_data_verify, cmd_offboard, cmd_place,
                                         cmd_restore, cmd_suspend, cmd_upgrade)

DEFAULT_ENV = os.environ.get("TENANCY_ENV", "dev")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code for usage errors is already 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}\n")


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


def _tables_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", action="append", metavar="SCHEMA.TABLE", dest="tables",
                   help="only this isolated table (repeatable or comma-separated; quote mixed-case names: app.\"Trips\")")


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


def _store_args(p) -> None:
    p.add_argument("--db", action="append", default=[], metavar="NAME=DSN", dest="dbs",
                   help="override: a database of the operation, by store (postgres-N, pooled) or registry name (pool-N, "
                        "<tenant>/postgres-N); default: the registry's record; repeatable")
    p.add_argument("--objects-root", metavar="DIR", help="dry runs: buckets are directories DIR/<bucket name>")
    p.add_argument("--kubeconfig", metavar="FILE", help="cluster credentials for the graph's neo4j-admin dump (or, for a "
                   "restore, load) Job")
    p.add_argument("--skip", action="append", default=[], metavar="KIND",
                   help="do not carry this store kind in this run (objects, firestore, graph): its data stays where it is")
