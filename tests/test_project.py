"""Project files: Pulumi.yaml against the official schema, stack configs, the committed catalogue schema."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from tenancy.catalog import json_schema
from tenancy.envconfig import PlatformConfig, known_environments, load_stack_config, project_defaults
from tenancy.errors import ConfigError
from tests.conftest import ROOT

SHARED_SCHEMA = ROOT.parent / "shared" / "schemas" / "pulumi-project.schema.json"
VENDORED_SCHEMA = ROOT / "schemas" / "pulumi-project.schema.json"


def project_schema() -> dict:
    path = SHARED_SCHEMA if SHARED_SCHEMA.exists() else VENDORED_SCHEMA
    return json.loads(path.read_text())


def test_pulumi_yaml_is_valid_against_the_project_schema():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    jsonschema.validate(project, project_schema())
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert project["stackConfigDir"] == "stacks"
    keys = set(project["config"])
    assert {"tenancy:gcpProject", "tenancy:region", "tenancy:baseDomain", "tenancy:environment", "tenancy:appChart"} <= keys
    # Every key has a default: tenant stacks have no config file and Pulumi requires defaultless keys everywhere.
    assert all("default" in decl for decl in project["config"].values())


def test_vendored_schema_matches_the_shared_one():
    if not SHARED_SCHEMA.exists():
        pytest.skip("shared/ is not beside this checkout")
    assert json.loads(VENDORED_SCHEMA.read_text()) == json.loads(SHARED_SCHEMA.read_text())


def test_a_bad_project_file_fails_the_schema():
    with pytest.raises(jsonschema.ValidationError, match="'runtime' is a required property"):
        jsonschema.validate({"name": "x"}, project_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "runtime": "python", "config": {"k": {"type": "float"}}}, project_schema())


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_sample_stack_configs_are_complete(env):
    assert env in known_environments()
    config = load_stack_config(env)
    declared = set(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])
    assert {k for k in config if k.startswith("tenancy:")} <= declared, "stack uses a key the project does not declare"
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("tenancy:")}
    cfg = PlatformConfig.validate({"gcp_project": raw["gcpProject"], "base_domain": raw["baseDomain"],
                                   "acme_email": raw["acmeEmail"], "environment": raw["environment"]}, env)
    assert cfg.environment == env and cfg.gcp_project.startswith("tenancy-")


def test_platform_config_errors_name_the_file_key_and_fix():
    with pytest.raises(ConfigError) as exc:
        PlatformConfig.validate({"environment": "prod", "master_cidr": "10.0.0.0/24"}, "dev")
    msg = str(exc.value)
    assert "stacks/Pulumi.dev.yaml: tenancy:gcpProject is required for the platform stack; set it with " \
           "`pulumi config set tenancy:gcpProject <value> -s dev`" in msg
    assert "stacks/Pulumi.dev.yaml: tenancy:environment is 'prod' but the stack is 'dev'" in msg
    assert "tenancy:masterCidr must be a /28" in msg


def test_unknown_environment_is_reported():
    with pytest.raises(ConfigError, match=r"stacks/Pulumi.qa.yaml not found: environment 'qa' has no platform stack config; "
                                          r"known environments: dev, prod"):
        load_stack_config("qa")
    assert project_defaults()["region"] == "europe-west1"


def test_committed_catalogue_schema_is_current():
    committed = json.loads((ROOT / "schemas" / "tenants.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), "run `make schema`"


def test_catalogue_schema_validates_the_sample_and_rejects_typos():
    schema = json.loads((ROOT / "schemas" / "tenants.schema.json").read_text())
    jsonschema.validate(yaml.safe_load((ROOT / "tenants.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        jsonschema.validate({"version": 1, "tenants": [{"id": "acme", "name": "A", "plan": "free", "admin_email": "a@b.co",
                                          "subdomian": "x"}]}, schema)


def test_schema_check_command(tmp_path):
    out = tmp_path / "s.json"
    run = lambda *a: subprocess.run([sys.executable, "-m", "tenancy", "schema", *a], capture_output=True, text=True, cwd=ROOT)
    assert run("--out", str(out)).returncode == 0
    assert run("--out", str(out), "--check").returncode == 0
    out.write_text("{}")
    stale = run("--out", str(out), "--check")
    assert stale.returncode == 1 and "is out of date" in stale.stderr


def test_entry_point_is_thin():
    main = (ROOT / "__main__.py").read_text()
    code = [l for l in main.splitlines() if l.strip() and not l.startswith(('"""', "#"))]
    assert code == ["import stacks", "stacks.main()"]
