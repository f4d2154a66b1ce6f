"""Preview batching and the choice of real previews (tenancy/ci.py)."""

from __future__ import annotations

import pytest

from tenancy import ci
from tenancy.catalog import load_catalog
from tenancy.changes import Changes
from tests.conftest import ROOT


@pytest.mark.parametrize("n,max_jobs", [(1, 256), (2, 256), (255, 256), (256, 256), (257, 256), (1000, 256), (10_000, 256),
                                        (5, 1), (7, 3)])
def test_batches_cover_every_stack_once_within_the_job_limit(n, max_jobs):
    stacks = ["dev"] + [f"dev.t{i}" for i in range(n - 1)]
    out = ci.batches(stacks, max_jobs, "dev")
    assert 1 <= len(out) <= max_jobs
    assert [s for b in out for s in b] == stacks, "in order, each exactly once"
    assert all(out), "no empty job"
    if n > 1 and max_jobs > 1:
        assert out[0] == ["dev"]
        sizes = [len(b) for b in out[1:]]
        assert max(sizes) - min(sizes) <= 1


def test_real_previews_prefer_the_platform_own_changes_then_one_per_model():
    catalog = load_catalog(ROOT / "tenants.yaml")
    stacks = ["dev", "dev.pied-piper", "dev.stark", "dev.wayne", "dev.acme", "dev.cyberdyne"]
    ch = Changes()
    for s in stacks:
        ch.add(s, "code changed: components/storage.py")
    ch.add("dev.wayne", "changed: limits")
    sel = ci.select(stacks, ch, catalog, "dev", max_real=4)
    assert sel.real == ["dev", "dev.pied-piper", "dev.wayne", "dev.acme"]
    assert sel.offline_only == ["dev.stark", "dev.cyberdyne"]
    assert ci.select(stacks, ch, catalog, "dev", max_real=None).offline_only == []
    assert ci.matrix(sel, 2, "dev") == {"include": [{"batch": 1, "stacks": ["dev"]},
                                                    {"batch": 2, "stacks": ["dev.pied-piper", "dev.wayne", "dev.acme"]}]}


def test_stacks_a_change_creates_are_planned_offline_only_and_the_comment_says_so():
    """A preview selects existing stacks (the preview account only reads the state backend): a new tenant's stack,
    or one a tenant gets by leaving the pool, is previewed offline only."""
    from tenancy import prcomment

    catalog = load_catalog(ROOT / "tenants.yaml")
    ch = Changes()
    ch.add("dev", "tenant added: newco")
    ch.add("dev.stark", "changed: limits")
    ch.add("dev.globex", "new tenant stack: free (pooled) → standard (namespace)")
    ch.add("dev.newco", "tenant added")
    stacks = ["dev", "dev.stark", "dev.globex", "dev.newco"]
    sel = ci.select(stacks, ch, catalog, "dev", max_real=None)
    assert (sel.real, sel.offline_only, sel.new) == (["dev", "dev.stark"], ["dev.globex", "dev.newco"],
                                                     ["dev.globex", "dev.newco"])
    sel = ci.select(stacks, ch, catalog, "dev", max_real=1)
    assert (sel.real, sel.offline_only) == (["dev"], ["dev.stark", "dev.globex", "dev.newco"])
    affected = {"real": sel.real, "offlineOnly": sel.offline_only, "new": sel.new, "jobs": 1}
    text = prcomment.render(catalog, catalog, ch, "dev", None, base_label="main", affected=affected)
    assert ("1 previewed for real (`pulumi preview` in 1 job(s)); 3 offline only: `dev.stark`, `dev.globex`, "
            "`dev.newco`; 2 of those are new stacks, previewed offline only: a preview never creates a stack (the "
            "preview account only reads the state).") in text
    assert "| `dev.newco` | tenant added | — | — | offline only (new stack) |" in text
