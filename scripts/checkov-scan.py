"""Checkov on what the program would deploy: the offline plan's Kubernetes manifests, its Google Cloud resources
(converted to Terraform's plan format, tenancy/tfplan.py) and the CI workflows.

Exits 0 when every finding is on the allow-list (policy/checkov-allowlist.yaml) and every allow-list entry of a
framework that was scanned still matches a finding; 1 on any other finding, a stale entry or a file Checkov
could not parse; 2 on bad input (missing Checkov, unreadable allow-list, a plan file that is not a plan). One
Checkov run covers every target (its start-up is most of the cost). Helm releases are not rendered offline, so
the charts' own manifests are not scanned here.

    .venv/bin/python scripts/checkov-scan.py                     # plan every environment, scan them and .github/workflows
    .venv/bin/python scripts/checkov-scan.py --manifests DIR     # scan an existing manifests directory instead
    .venv/bin/python scripts/checkov-scan.py --plan PLAN.json    # scan an existing plan's Google Cloud resources (repeatable)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
ALLOWLIST = ROOT / "policy" / "checkov-allowlist.yaml"
CHECK_ID = re.compile(r"^CKV2?_[A-Z0-9]+_\d+$")
MIN_REASON = 20  # characters: a reason is a sentence, not "n/a"
# Which framework's run can produce a check (its id's middle part); an entry is stale only if that framework ran.
FRAMEWORK_OF = {"K8S": "kubernetes", "GHA": "github_actions", "GCP": "terraform_plan"}


class BadInput(Exception):
    pass


@dataclass(frozen=True)
class Allowed:
    check: str
    resource: str
    reason: str

    def matches(self, finding: dict) -> bool:
        return finding["check_id"] == self.check and fnmatch.fnmatchcase(finding["resource"], self.resource)

    @property
    def framework(self) -> str | None:
        return FRAMEWORK_OF.get(self.check.split("_")[1])


def load_allowlist(path: Path) -> list[Allowed]:
    """Entries `{check, resource (glob, default *), reason}`; every entry must say why it does not apply."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"{path}: cannot read the allow-list: {exc}".replace("\n", " ")) from None
    entries = data.get("allow") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise BadInput(f"{path}: expected a mapping with an 'allow' list (use 'allow: []' for none)")
    out = []
    for i, e in enumerate(entries, 1):
        where = f"{path}: entry {i}"
        if not isinstance(e, dict) or set(e) - {"check", "resource", "reason"}:
            raise BadInput(f"{where}: keys are check, resource, reason")
        if not CHECK_ID.match(str(e.get("check", ""))):
            raise BadInput(f"{where}: check '{e.get('check')}' is not a Checkov check id such as CKV_K8S_16")
        reason = " ".join(str(e.get("reason") or "").split())
        if len(reason) < MIN_REASON:
            raise BadInput(f"{where} ({e['check']}): give a reason why the check does not apply (a sentence, "
                           f"at least {MIN_REASON} characters)")
        out.append(Allowed(e["check"], str(e.get("resource") or "*"), reason))
    return out


def environments() -> list[str]:
    """Every committed environment (stacks/Pulumi.<env>.yaml): what one enables (the operator in prod) the
    others may not."""
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))


def plan_into(envs: list[str], tmp: Path) -> tuple[Path, list[Path]]:
    """`tenancy plan` of each environment, side by side: (a directory of their manifests, one sub-directory per
    environment, and their plan.json files)."""
    tenancy = str(ROOT / ".venv" / "bin" / "tenancy")
    runs = {env: subprocess.Popen([tenancy, "plan", "--env", env, "--out", str(tmp / f"plan-{env}")], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for env in envs}
    manifests = tmp / "manifests"
    manifests.mkdir()
    for env, proc in runs.items():
        output, _ = proc.communicate()
        if proc.returncode != 0:
            sys.stderr.write(output)
            raise SystemExit(f"checkov-scan: `tenancy plan --env {env}` failed (exit {proc.returncode}); nothing scanned")
        (tmp / f"plan-{env}" / "manifests").rename(manifests / env)
    return manifests, [tmp / f"plan-{env}" / "plan.json" for env in envs]


def read_plan(path: Path) -> dict:
    from tenancy.policycheck import plan_problem

    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"--plan {path}: cannot read a plan: {exc}".replace("\n", " ")) from None
    problem = plan_problem(data)
    if problem:
        raise BadInput(f"--plan {path}: {problem}")
    return data


def convert_plans(plans: list[tuple[Path, dict]], out: Path) -> Path:
    """Each plan's Google Cloud resources in Terraform's plan format, one file per plan in `out`, named by its
    position and path (`1-plan-plan.tfplan.json`): that name is the file path of its findings."""
    from tenancy.tfplan import convert

    out.mkdir(parents=True)
    for i, (path, data) in enumerate(plans, 1):
        (out / f"{i}-{path.parent.name}-{path.stem}.tfplan.json").write_text(json.dumps(convert(data)))
    return out


def run_checkov(checkov: Path, manifests: Path | None, terraform: Path | None, workflows: Path | None,
                workdir: Path) -> list[dict]:
    """Checkov's JSON reports, one per framework."""
    targets, frameworks = [], []
    for path, framework in ((manifests, "kubernetes"), (terraform, "terraform_plan"), (workflows, "github_actions")):
        if path is not None:
            targets += ["-d", str(path)]
            frameworks.append(framework)
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}  # offline: no guideline download from the vendor's API
    res = subprocess.run([str(checkov), *targets, "--framework", *frameworks, "--quiet", "--compact",
                          "--skip-download", "-o", "json", "--output-file-path", str(workdir)],
                         capture_output=True, text=True, env=env, cwd=workdir)
    report = workdir / "results_json.json"
    if res.returncode not in (0, 1) or not report.exists():
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(f"checkov-scan: Checkov did not run cleanly (exit {res.returncode})")
    data = json.loads(report.read_text())
    return data if isinstance(data, list) else [data]


def evaluate(reports: list[dict], allowed: list[Allowed], expect: set[str]) -> tuple[list[str], int]:
    """Problems (findings not allowed, stale allow-list entries, unparsed files, frameworks that scanned nothing)
    and the number of findings the allow-list covers."""
    problems = []
    covered = 0
    by_type = {r.get("check_type"): r for r in reports}
    used: set[Allowed] = set()
    for kind in sorted(expect):
        report = by_type.get(kind)
        if report is None:
            problems.append(f"{kind}: Checkov returned no report (nothing was scanned)")
            continue
        for path in report["results"].get("parsing_errors", []) or []:
            problems.append(f"{kind}: Checkov could not parse {path}")
        if report["summary"].get("parsing_errors"):
            problems.append(f"{kind}: {report['summary']['parsing_errors']} file(s) not parsed")
        for f in report["results"]["failed_checks"]:
            hit = next((a for a in allowed if a.matches(f)), None)
            if hit:
                used.add(hit)
                covered += 1
                continue
            problems.append(f"{f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']})")
    for a in allowed:
        if a not in used and (a.framework is None or a.framework in expect):
            problems.append(f"allow-list entry {a.check} {a.resource} matches no finding: remove it")
    return problems, covered


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", action="append", default=[], metavar="ENV",
                   help="environment to plan (repeatable; default: every stacks/Pulumi.<env>.yaml)")
    p.add_argument("--manifests", type=Path, help="scan this manifests directory instead of planning")
    p.add_argument("--plan", type=Path, action="append", default=[], metavar="PLAN.json",
                   help="scan this plan's Google Cloud resources instead of planning (repeatable)")
    p.add_argument("--workflows", type=Path, default=ROOT / ".github" / "workflows",
                   help="workflow directory to scan (default .github/workflows)")
    p.add_argument("--no-workflows", action="store_true", help="scan the manifests only")
    p.add_argument("--allowlist", type=Path, default=ALLOWLIST)
    p.add_argument("--checkov", type=Path, default=Path(os.environ.get("CHECKOV") or CHECKOV))
    args = p.parse_args(argv)
    try:
        allowed = load_allowlist(args.allowlist)
        if not args.checkov.exists():
            raise BadInput(f"Checkov not found at {args.checkov}; run `make checkov` (installs 3.3.30 into .tools/checkov)")
        if args.manifests is not None and not args.manifests.is_dir():
            raise BadInput(f"--manifests {args.manifests}: not a directory")
        plans = [(path, read_plan(path)) for path in args.plan]
    except BadInput as exc:
        print(f"checkov-scan: {exc}", file=sys.stderr)
        return 2
    workflows = None if args.no_workflows else args.workflows
    with tempfile.TemporaryDirectory(prefix="checkov-scan-") as tmp:
        manifests = args.manifests
        if manifests is None and not plans:
            manifests, files = plan_into(args.env or environments(), Path(tmp))
            plans = [(f, json.loads(f.read_text())) for f in files]
        terraform = convert_plans(plans, Path(tmp) / "terraform") if plans else None
        reports = run_checkov(args.checkov, manifests.resolve() if manifests else None, terraform,
                              workflows.resolve() if workflows else None, Path(tmp))
    expect = ({"kubernetes"} if manifests else set()) | ({"terraform_plan"} if plans else set()) | \
        ({"github_actions"} if workflows else set())
    problems, covered = evaluate(reports, allowed, expect)
    passed = sum(r["summary"]["passed"] for r in reports)
    if problems:
        print(f"checkov-scan: {len(problems)} problem(s):")
        for line in problems:
            print(f"  {line}")
        return 1
    print(f"checkov-scan: {passed} check(s) passed, {covered} allow-listed finding(s) ({len(allowed)} entries), "
          "0 problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
