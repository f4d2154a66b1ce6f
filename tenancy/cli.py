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
                       '{"environment", "platform": bool, "stacks": [...], "real": [...], "offlineOnly": [...], "jobs": N, '
                       '"matrix": {"include": [{"batch": 1, "stacks": [...]}, ...]}, "reasons", "removed"}. The matrix '
                       "holds the stacks to preview for real, in at most --max-jobs batches.")
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
                        "patches them itself; this is for review, bootstrap and GitOps.")
    _common(m)
    m.add_argument("--commit", default="HEAD", metavar="REF", help="the commit the objects pin (default: HEAD)")
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
    a = dbsub.add_parser("apply", help="apply the tenancy SQL (sql/*.sql) to DSN in one transaction",
                         description="Apply the tenancy SQL idempotently, then run the isolation audit.")
    _common(a)
    a.add_argument("dsn", metavar="DSN", help="libpq connection string; prefer PGPASSWORD/PGPASSFILE to a password in it")
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
            w = p.add_argument_group("waves")
            w.add_argument("--waves", metavar="FILE", help="the rollout's waves (default: rollout.yaml if present, "
                           "else the platform stack, then the tenant stacks)")
            w.add_argument("--from-wave", type=int, default=1, metavar="N", help="resume a halted rollout at wave N")
            w.add_argument("--pause", type=float, metavar="SECONDS", help="pause between waves (overrides the file)")
            w.add_argument("--no-health-gate", action="store_true", help="go on to the next wave without the health gate")
        p.set_defaults(func=cmd_deploy, mode=name)

    p = sub.add_parser("moves", help="tier moves the catalogue asks for and the deployment has not made, as JSON",
                       description="Compare the catalogue with the deployed tenant directory and print the tenants whose "
                       "plan moves them into or out of the pool: [{tenant, from_plan, to_plan, from_model, to_model}]. "
                       "With --dsn, also report (on stderr, exit 1) what online moves left behind in those databases: "
                       "replication slots (they hold WAL forever), publications, subscriptions and change-tracking "
                       "triggers that no unfinished move owns.")
    _common(p)
    _engine_args(p)
    p.add_argument("--dsn", action="append", default=[], metavar="DSN",
                   help="a database to check for leftovers of online moves: the pooled database and the tenants' own "
                        "(repeatable; the pooled one first, its move journal says which moves are unfinished)")
    p.set_defaults(func=cmd_moves)

    p = sub.add_parser("upgrade", help="move a tenant to another plan, data included (resumable)",
                       description="Move TENANT to PLAN between pooled and namespace/dedicated: provision, sync (rows "
                       "replicating while the tenant writes, --method online/auto), freeze, copy, verify, cutover, "
                       "unfreeze, cleanup. Each phase is journalled in the pooled database; run the "
                       "same command again to resume after any interruption. --abort before cutover leaves the tenant "
                       "where it was. Downgrades use the same command with a pooled plan.")
    _common(p)
    _engine_args(p)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--to", required=True, metavar="PLAN", dest="to_plan")
    p.add_argument("--source-dsn", metavar="DSN", help="where the tenant's rows are now (pooled DB for an upgrade)")
    p.add_argument("--target-dsn", metavar="DSN", help="where they go (the tenant's postgres-1 for an upgrade)")
    p.add_argument("--keep-source", type=int, default=0, metavar="DAYS", help="keep source rows read-only this long")
    p.add_argument("--abort", action="store_true", help="roll back an unfinished move (before cutover)")
    _store_args(p)
    p.add_argument("--allow-destroy", action="store_true", help="allow deleting or replacing stateful resources")
    p.add_argument("--export-to", metavar="DIR", help="archive every source store here first (a new or empty directory)")
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

    for name, helptext in (("suspend", "suspend a tenant: data kept, workloads scaled to zero, routes removed"),
                           ("resume", "resume a suspended tenant")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        _common(p)
        _engine_args(p)
        p.add_argument("tenant", metavar="TENANT")
        p.add_argument("--pooled-dsn", metavar="DSN", help="pooled database, to set the registry state of a pooled tenant")
        p.set_defaults(func=cmd_suspend, resume=(name == "resume"))

    p = sub.add_parser("offboard", help="export a tenant's data, then destroy its stack and pooled rows",
                       description="Export the tenant's rows (one file per table plus a manifest), then destroy its "
                       "tenant stack or delete its pooled rows, and remove it from the platform stack.")
    _common(p)
    _engine_args(p)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--source-dsn", required=True, metavar="DSN",
                   help="the database holding the tenant's rows (the pooled database, or its postgres-1)")
    _store_args(p)
    p.add_argument("--export-to", metavar="DIR", help="export directory (required unless --no-export --yes)")
    p.add_argument("--no-export", action="store_true", help="export nothing (with --yes: every store is discarded)")
    p.add_argument("--yes", action="store_true")
    p.add_argument("--discard", action="append", default=[], metavar="STORE",
                   help="destroy this store without exporting it (postgres-2, postgres-3, firestore, graph, objects)")
    p.set_defaults(func=cmd_offboard)

    p = sub.add_parser("place", help="move one deployed tenant to another cell, pool shard or data project",
                       description="Change where a deployed tenant is placed, and nothing else: the target must exist, be "
                       "built and have room, and no data may be left behind (a pooled tenant must have no rows left in "
                       "its current shard, checked with --source-dsn; cells and data projects hold a namespace tenant's "
                       "namespace and databases, which this version does not move). Placement never moves a placed "
                       "tenant by itself.")
    _common(p)
    _engine_args(p)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("--cell", metavar="CELL", help="namespace tenants: the cell, e.g. cell-2")
    p.add_argument("--pool-shard", metavar="SHARD", help="pooled tenants: the pool shard, e.g. pool-2")
    p.add_argument("--data-project", metavar="PROJECT", help="namespace tenants: the project of its Cloud SQL instances")
    p.add_argument("--source-dsn", metavar="DSN", help="pooled tenants: the database of the current pool shard")
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
    result = deploy.rollout(engine, catalog, args.env, mode=args.mode, tenants=args.tenant, stacks=args.stack,
                            changed_since=args.changed_since, parallel=parallel, allow_destroy=args.allow_destroy,
                            waves=spec, from_wave=getattr(args, "from_wave", 1), gate=gate)
    outcomes = result.outcomes
    for o in outcomes:
        print(o.line())
    bad = [o for o in outcomes if o.status in ("failed", "refused")]
    print(f"{len(outcomes)} stack(s): {sum(o.status == 'ok' for o in outcomes)} ok, "
          f"{sum(o.status == 'pending' for o in outcomes)} pending a lifecycle command, "
          f"{sum(o.status == 'refused' for o in outcomes)} refused, {sum(o.status == 'failed' for o in outcomes)} failed, "
          f"{sum(o.status == 'skipped' for o in outcomes)} skipped")
    if result.halted:
        h = result.halted
        print(f"halted at wave {h.wave}/{len(result.waves)} '{h.name}': {h.reason}")
        print(f"to resume once it is fixed: {_resume_command(args, h.wave)}")
        return EXIT_FAIL
    return EXIT_FAIL if bad else EXIT_OK


def _resume_command(args, wave: int) -> str:
    """The command that was run, with --from-wave N (stacks already done are no-ops when run again)."""
    import shlex

    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--from-wave":
            skip = True
            continue
        if a.startswith("--from-wave="):
            continue
        out.append(a)
    return shlex.join(["tenancy", *out, "--from-wave", str(wave)])


def cmd_moves(args) -> int:
    from dataclasses import asdict

    from tenancy.catalog import load_catalog
    from tenancy.lifecycle import deploy

    for dsn in args.dsn:
        _check_dsn("--dsn", dsn)
    found = deploy.pending(_engine(args), load_catalog(args.tenants), args.env)
    print(json.dumps([asdict(p) for p in found], indent=1))
    if not args.dsn:
        return EXIT_OK
    from tenancy.lifecycle.online import leftovers

    left = leftovers(args.dsn)
    for server, o in left:
        print(f"leftover of an online move on {server}: {o}", file=sys.stderr)
    if left:
        print(f"{len(left)} leftover(s): finish or abort the move that made them (`tenancy upgrade TENANT --to PLAN` or "
              "`--abort`); for a move no one will resume, drop them (tenancy.stores.replication.cleanup)", file=sys.stderr)
    return EXIT_FAIL if left else EXIT_OK


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
    p.add_argument("--db", action="append", default=[], metavar="postgres-N=DSN", dest="dbs",
                   help="the tenant's other databases (postgres-2, postgres-3), repeatable")
    p.add_argument("--objects-root", metavar="DIR", help="dry runs: buckets are directories DIR/<bucket name>")
    p.add_argument("--kubeconfig", metavar="FILE", help="cluster credentials for the graph's neo4j-admin dump Job")
    p.add_argument("--skip", action="append", default=[], metavar="KIND",
                   help="do not carry this store kind in this run (objects, firestore, graph): its data stays where it is")


def _reach(args, dsns: dict[str, str]):
    from tenancy.errors import ConfigError
    from tenancy.lifecycle.tenant_data import KINDS, Reach

    for item in args.dbs:
        name, sep, dsn = item.partition("=")
        if not sep or not re.fullmatch(r"postgres-[1-9]", name) or not dsn:
            raise ConfigError(f"--db {item.split('=', 1)[0]}=...: give postgres-N=DSN (e.g. postgres-2=host=... dbname=...)")
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
        runner = KubernetesJobRunner(args.kubeconfig)
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
    from tenancy.lifecycle import moves

    catalog = load_catalog(args.tenants)
    if args.to_plan not in catalog.plans:
        raise ConfigError(f"unknown plan '{args.to_plan}'; plans: {', '.join(sorted(catalog.plans))}")
    if not (args.source_dsn and args.target_dsn):
        raise ConfigError("give --source-dsn and --target-dsn (connect through the Cloud SQL Auth Proxy as the owner role)")
    replication = _replication_dsns(args.replication_dsn)
    # Towards a pooled plan the rows come from the tenant's databases into the pool; otherwise the reverse.
    to_pool = catalog.plans[args.to_plan].model is Model.POOLED
    pooled_dsn, tenant_dsn = (args.target_dsn, args.source_dsn) if to_pool else (args.source_dsn, args.target_dsn)
    reach = _reach(args, {"pooled": pooled_dsn, "postgres-1": tenant_dsn})
    for kind in sorted(reach.skip):
        _progress(f"warning: --skip {kind}: this move does not carry the tenant's {kind}; move it yourself")
    engine = _engine(args)
    out = moves.upgrade(engine, catalog, args.env, args.tenant, args.to_plan, reach=reach,
                        keep_source_days=args.keep_source, abort=args.abort, allow_destroy=args.allow_destroy,
                        discard=_stores(args.discard), export_to=args.export_to, say=_progress, method=args.method,
                        replication=replication)
    freeze = f"; write freeze {out.freeze_seconds:.1f}s" if out.freeze_seconds is not None else ""
    print(f"{out.move_id}: {out.status}; phases run: {', '.join(out.phases_run) or 'none'}; {out.rows} rows copied{freeze}"
          + "".join(f"; {k}: " + ", ".join(f"{n} {w}" for w, n in v.items()) for k, v in out.copied.items() if "rows" not in v)
          + (f"; {out.message}" if out.message else ""))
    if out.catalog_line:
        print(out.catalog_line)
    return EXIT_OK


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
    from tenancy.lifecycle import tenant_ops

    tenant_ops.suspend(_engine(args), load_catalog(args.tenants), args.env, args.tenant, args.pooled_dsn,
                       resume=args.resume, say=_progress)
    print(f"tenant '{args.tenant}' {'resumed' if args.resume else 'suspended'}")
    return EXIT_OK


def cmd_offboard(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.lifecycle import tenant_ops

    if args.no_export and args.export_to:
        print("--no-export and --export-to contradict each other", file=sys.stderr)
        return EXIT_INPUT
    discard = _stores(args.discard)
    if args.no_export and args.yes:
        from tenancy.lifecycle.destroy import STORES
        discard = frozenset(STORES)
    result = tenant_ops.offboard(_engine(args), load_catalog(args.tenants), args.env, args.tenant,
                                 source_dsn=args.source_dsn, export_to=args.export_to, discard=discard,
                                 reach=_reach(args, {}),
                                 yes=args.yes and args.no_export, say=_progress)
    print(json.dumps(result, indent=1))
    return EXIT_OK


def cmd_place(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.fleet import relocate

    out = relocate.relocate(_engine(args), load_catalog(args.tenants), args.env, args.tenant, cell=args.cell,
                            pool_shard=args.pool_shard, data_project=args.data_project, source_dsn=args.source_dsn,
                            say=_progress)
    was = ", ".join(out["from"].values()) or "nowhere"
    now = ", ".join(out["to"].values())
    print(f"tenant '{args.tenant}' is already in {now}; nothing to do" if out["status"] == "unchanged" else
          f"tenant '{args.tenant}' moved from {was} to {now}")
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
    from tenancy.stores import postgres as data

    r = data.move(args.source, args.target, args.tenant, delete_source=args.delete_source, replace=args.replace,
                  tables=_table_list(args.tables), target_state=args.state, progress=_progress)
    if r.status == "already completed":
        print(r.message)
        return EXIT_OK
    seconds = r.copy_seconds + r.verify_seconds
    replaced = f"; replaced {r.replaced_rows} rows the target held" if r.replaced_rows else ""
    print(f"moved {r.total_rows} rows of '{args.tenant}' ({len(r.tables)} tables), verified, in {seconds:.2f}s "
          f"({r.total_rows / max(seconds, 1e-9):,.0f} rows/s){replaced}"
          f"{'; source rows deleted' if r.deleted_source else '; source rows kept'} (move {r.move_id})")
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
    from tenancy.lifecycle.units import every_platform_stack

    platform = naming.stack_name(args.env)
    # The platform side first (in the cells layout: the global stack, identity shards, cells, pool shards).
    sides = [s for s in every_platform_stack(args.env) if s in ch.reasons]
    stacks = sides + sorted(s for s in ch.reasons if s not in sides)
    chosen = ci.select(stacks, ch, catalog, args.env, args.max_real)
    matrix = ci.matrix(chosen, args.max_jobs, platform)
    print(json.dumps({"environment": args.env, "platform": bool(sides), "stacks": stacks,
                      "real": chosen.real, "offlineOnly": chosen.offline_only, "jobs": len(matrix["include"]),
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
    from tenancy.operator.stacks import fleet_objects, resolve_commit

    settings = OperatorSettings.load(args.env).require_rollout()
    commit = resolve_commit(args.commit)
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

    applied = db.apply(args.dsn, progress=lambda m: print(m, file=sys.stderr))
    print(f"applied {', '.join(applied)}; isolation audit clean")
    return EXIT_OK


def cmd_validate(args) -> int:
    from stacks.config import offline_platform_config, require_catalog_fits
    from tenancy.catalog import load_catalog

    catalog = load_catalog(args.tenants)
    # Rules that need the environment (custom domains against its base domain, its platform project), and
    # whether its capacity holds every tenant and each pin (tenancy/fleet).
    require_catalog_fits(catalog, offline_platform_config(args.env))
    from tenancy.fleet import capacity, placement
    placement.place(catalog, capacity.load(args.env))
    models: dict[str, int] = {}
    for t in catalog.tenants:
        models[t.model.value] = models.get(t.model.value, 0) + 1
    counts = ", ".join(f"{n} {m}" for m, n in sorted(models.items()))
    print(f"{args.tenants}: valid: {len(catalog.tenants)} tenants ({counts}), {len(catalog.plans)} plans; "
          f"checked against environment {args.env}")
    return EXIT_OK


def cmd_schema(args) -> int:
    from tenancy.catalog import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
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
    from tenancy.catalog import load_catalog

    if args.workers is not None and args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return EXIT_INPUT
    planmod.prefetch_exports(args.env)   # computed beside the catalogue's parsing and placement
    catalog = _with_deployed(load_catalog(args.tenants), args)
    from tenancy.progress import Meter

    meter = Meter(sys.stderr)
    result = planmod.plan(catalog, args.env, tenants=args.tenant, changed_since=args.changed_since,
                          workers=args.workers, progress=meter.say, meter=meter, out=args.out)
    path = result.plan_file
    if args.json:
        print(json.dumps({
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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PULUMI_ERROR_OUTPUT_STRING", "1")
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
