"""Pull-request previews at fleet size: which affected stacks get a real `pulumi preview`, in how many jobs.

GitHub Actions runs at most 256 jobs per matrix, so stacks are batched: each job previews a list of stacks
(in parallel, through the Automation API: `tenancy preview --stack ...`). Every affected stack is planned
offline with the policy pack in any case; with `max_real`, a change that touches more stacks than that
(a shared component) previews a chosen set for real: the platform stack, every stack whose own catalogue
entry changed, and an even spread of the stacks touched only by code, at least one per model (and cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tenancy import naming
from tenancy.catalog import Catalog
from tenancy.changes import Changes

MAX_JOBS = 256          # GitHub Actions: jobs per matrix
CODE_REASON = "code changed:"


def batches(stacks: list[str], max_jobs: int = MAX_JOBS, platform: str | None = None) -> list[list[str]]:
    """Every stack exactly once, in at most `max_jobs` batches whose sizes differ by at most one. The
    platform stack, the slowest preview, has a job of its own when there is room for one."""
    if max_jobs < 1:
        raise ValueError("max_jobs must be at least 1")
    first: list[list[str]] = []
    rest = list(stacks)
    if platform in rest and len(rest) > 1 and max_jobs > 1:
        rest.remove(platform)
        first, max_jobs = [[platform]], max_jobs - 1
    jobs = min(max_jobs, len(rest))
    if jobs == 0:
        return first
    size, extra = divmod(len(rest), jobs)
    out, start = [], 0
    for i in range(jobs):
        end = start + size + (1 if i < extra else 0)
        out.append(rest[start:end])
        start = end
    return first + out


@dataclass
class Selection:
    real: list[str]             # previewed with `pulumi preview`
    offline_only: list[str]     # planned offline (policy pack) only
    new: list[str] = field(default_factory=list)   # of those, stacks the change creates


def new_stacks(stacks: list[str], changes: Changes) -> list[str]:
    """The stacks a change creates (a tenant added, or given a stack of its own by a new plan or state). A preview
    selects existing stacks and never creates one (the preview account only reads the state backend), so these are
    planned offline only."""
    return [s for s in stacks if any(r == "tenant added" or r.startswith("new tenant stack")
                                     for r in changes.reasons.get(s, []))]


def select(stacks: list[str], changes: Changes, catalog: Catalog, env: str, max_real: int | None,
           group_of: Callable[[str], str] | None = None) -> Selection:
    """Which of `stacks` get a real preview when at most `max_real` may (None: all); new stacks never do."""
    new = new_stacks(stacks, changes)
    if new:
        chosen = _select([s for s in stacks if s not in new], changes, catalog, env, max_real, group_of)
        return Selection(chosen.real, [s for s in stacks if s not in chosen.real], new)
    return _select(stacks, changes, catalog, env, max_real, group_of)


def _select(stacks: list[str], changes: Changes, catalog: Catalog, env: str, max_real: int | None,
            group_of: Callable[[str], str] | None) -> Selection:
    if max_real is None or len(stacks) <= max_real:
        return Selection(list(stacks), [])
    platform = naming.stack_name(env)
    group_of = group_of or _model_of(catalog)
    own = [s for s in stacks if s == platform or any(not r.startswith(CODE_REASON) for r in changes.reasons.get(s, []))]
    chosen = set(own[:max_real])
    code_only = [s for s in stacks if s not in chosen]
    room = max_real - len(chosen)
    if room > 0 and code_only:
        groups: dict[str, list[str]] = {}
        for s in code_only:
            groups.setdefault(group_of(s), []).append(s)
        firsts = [members[0] for _, members in sorted(groups.items())][:room]      # one of each group first
        chosen.update(firsts)
        left = [s for s in code_only if s not in chosen]
        room = max_real - len(chosen)
        if room > 0 and left:
            step = len(left) / room
            chosen.update(left[int(i * step)] for i in range(room))              # then an even spread
    return Selection([s for s in stacks if s in chosen], [s for s in stacks if s not in chosen])


def _model_of(catalog: Catalog) -> Callable[[str], str]:
    models = {t.id: t.model.value for t in catalog.tenants}

    def group(stack: str) -> str:
        kind, _, tid = naming.stack_kind(stack)
        if kind != naming.TENANT_STACK:
            return "platform" if kind == naming.ENV_STACK else kind
        return models.get(tid, "unknown")

    return group


def matrix(selection: Selection, max_jobs: int, platform: str) -> dict:
    """The `strategy.matrix` of the preview job: `{"include": [{"batch": 1, "stacks": [...]}, ...]}`."""
    return {"include": [{"batch": i + 1, "stacks": b} for i, b in enumerate(batches(selection.real, max_jobs, platform))]}
