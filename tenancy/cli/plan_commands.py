"""The commands that read the catalogue and the code and change nothing deployed: validate, schema, plan,
policy-check, affected, pr-comment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tenancy.cli.common import EXIT_FAIL, EXIT_INPUT, EXIT_OK, checked_catalog, to_json, with_deployed


def cmd_validate(args) -> int:
    # The file, the rules that need the environment (custom domains against its base domain, its platform
    # project), and whether its capacity holds every tenant and each pin (tenancy/fleet): all in one run.
    catalog, _ = checked_catalog(args)
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
    from tenancy import plancache

    catalog, placed = plancache.checked_catalog(args.tenants, args.env, args.deployed_record,
                                                lambda: checked_catalog(args, deployed=True))
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
    # The platform side first: the global stack, identity shards, cells, pool shards.
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
        placed = fleet.place(with_deployed(head, args), capacity.load(args.env))
    except fleet.PlacementError as exc:   # shown in the comment: the change cannot be deployed as it is
        refused = str(exc)
    affected = json.loads(Path(args.affected).read_text()) if args.affected else None
    kw = dict(base_label=label, affected=affected, details_url=args.details_url, placement=placed,
              placement_refused=refused)
    if args.full_out:
        Path(args.full_out).write_text(prcomment.render(base, head, changes, args.env, plan, full=True, **kw))
    sys.stdout.write(prcomment.render(base, head, changes, args.env, plan, **kw))
    return EXIT_OK
