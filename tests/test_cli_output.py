"""What the command line prints for a person: JSON with readable text, no library warnings, refusals that say
why (operator manifests of a working tree that is not the commit, plans of tenants with nothing to plan)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, catalog_repo_at


def run_cli(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "tenancy", *args], capture_output=True, text=True, cwd=cwd, env=env)


GOOGLE_CLIENTS = """
import warnings
from tenancy import cli
{setup}
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore, storage
storage.Client(project="p", credentials=AnonymousCredentials())
firestore.Client(project="p", database="d")
warnings.warn("a warning of the program's own", FutureWarning)
"""


def test_google_python_version_warning_is_silenced_and_nothing_else():
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9"}     # a client, no connection
    env.pop("PYTHONWARNINGS", None)
    bare = subprocess.run([sys.executable, "-c", GOOGLE_CLIENTS.format(setup="")], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    assert bare.returncode == 0, bare.stderr
    assert "FutureWarning: You are using a Python version" in bare.stderr, "the warning the command line silences"
    quiet = subprocess.run([sys.executable, "-c", GOOGLE_CLIENTS.format(setup="cli.main(['schema', '--out', '/dev/null'])")],
                           capture_output=True, text=True, cwd=ROOT, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "You are using a" not in quiet.stderr
    assert "FutureWarning: a warning of the program's own" in quiet.stderr, "other warnings still show"


def test_printed_json_keeps_non_ascii_readable(tmp_path):
    path = catalog_repo_at(tmp_path)
    path.write_text(path.read_text().replace("    plan: free\n    admin_email: it@globex.example",
                                             "    plan: standard\n    admin_email: it@globex.example"))
    res = run_cli("affected", "--tenants", str(path), "--env", "dev", "--changed-since", "HEAD")
    assert res.returncode == 0, res.stderr
    assert "\\u" not in res.stdout and "→" in res.stdout
    data = json.loads(res.stdout)
    assert "new tenant stack: free (pooled) → standard (namespace)" in data["reasons"]["dev.globex"]
    schema = run_cli("schema")
    assert schema.returncode == 0 and "\\u" not in schema.stdout


def test_plan_of_an_offboarded_or_unknown_tenant_is_refused(tmp_path):
    out = tmp_path / "plan"
    gone = run_cli("plan", "--tenant", "umbrella", "--out", str(out))
    assert gone.returncode == 2 and gone.stdout == ""
    assert gone.stderr.splitlines() == [
        "error: tenant 'umbrella' is offboarded in tenants.yaml: it has no stack and no share of the platform's stacks, "
        "so there is nothing to plan for it; plan without --tenant, or name a tenant that is active or suspended"]
    unknown = run_cli("plan", "--tenant", "umbrela", "--out", str(out))
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines()[0] == "tenants.yaml: id: no tenant 'umbrela' in the catalogue; did you mean 'umbrella'?"
    assert not out.exists(), "nothing was planned"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository of its own for the program: a tenants.yaml in one commit."""
    from tenancy.operator import stacks

    path = catalog_repo_at(tmp_path)
    monkeypatch.setattr(stacks, "REPO", path.parent)
    return path


def test_operator_manifests_refuse_a_working_tree_that_is_not_the_commit(repo, capsys):
    from tenancy import cli

    sha = subprocess.run(["git", "-C", str(repo.parent), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    args = ["operator", "manifests", "--env", "prod", "--tenants", str(repo)]
    assert cli.main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr()
    assert out.err.splitlines() == [f"9 Stack object(s) at commit {sha[:12]}, each valid against the operator's CRD"]
    # the global stack, its identity shard, cell and pool shard, then the five tenants with stacks of their own
    assert [d["spec"]["stack"].rsplit("/", 1)[1] for d in yaml.safe_load_all(out.out) if d and d["kind"] == "Stack"] == [
        "prod", "prod.identity-1", "prod.cell-1", "prod.pool-1", "prod.pied-piper", "prod.stark", "prod.wayne",
        "prod.acme", "prod.cyberdyne"]
    repo.write_text(repo.read_text().replace("plan: free", "plan: basic", 1))
    (repo.parent / "notes.txt").write_text("new, not ignored\n")
    assert cli.main(args) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [
        f"error: the working tree differs from HEAD ({sha[:12]}) in 2 file(s): notes.txt, tenants.yaml; the objects "
        "would be rendered from the working tree but pin the commit: commit the changes (and push them), or pass "
        "--allow-dirty"]
    assert cli.main([*args, "--allow-dirty"]) == 0
    out = capsys.readouterr()
    assert out.err.splitlines()[0].startswith(f"warning: the working tree differs from HEAD ({sha[:12]}) in 2 file(s)")
    assert f"commit: {sha}" in out.out
    subprocess.run(["git", "-C", str(repo.parent), "add", "-A"], check=True)
    assert cli.main(args) == 2, "staged is not committed"
    assert "in 2 file(s): notes.txt, tenants.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["operator", "manifests", "--help"])
    assert "--allow-dirty" in capsys.readouterr().out


def test_kubeconfig_is_a_file_read_for_the_graphs_dump_job(tmp_path):
    """--kubeconfig names a file: its contents configure the client (a missing file is one line, exit 2)."""
    import argparse

    from tenancy.cli import common
    from tenancy.errors import ConfigError
    from tenancy.stores.graph import GraphError

    args = argparse.Namespace(dbs=[], skip=[], objects_root=None, kubeconfig=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"--kubeconfig .*nope: No such file or directory; give the path of a kubeconfig"):
        common.build_reach(args, {})
    good = tmp_path / "kubeconfig"
    good.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://10.0.0.1'}}]\n"
                    "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
                    "current-context: x\n")
    reach = common.build_reach(argparse.Namespace(dbs=[], skip=[], objects_root=None, kubeconfig=str(good)), {})
    assert reach.graph_runner.batch.api_client.configuration.host == "https://10.0.0.1"
    bad = tmp_path / "bad"
    bad.write_text("- not a mapping\n")
    with pytest.raises(GraphError, match="the kubeconfig is not usable"):
        common.build_reach(argparse.Namespace(dbs=[], skip=[], objects_root=None, kubeconfig=str(bad)), {})
