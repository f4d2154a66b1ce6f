"""One stack's program run offline: the program of stacks/ under the recording runtime (tenancy/recorder.py), with
no cloud credentials and no Pulumi CLI. `tenancy plan` runs every stack of a plan this way, and the offline engine
(tenancy/engine.py) the stacks it previews and updates; neither imports the other.
"""

from __future__ import annotations

import time
from typing import Any

from tenancy import envconfig
from tenancy.catalog import Catalog
from tenancy.errors import PlanError, TenancyError
from tenancy.recorder import RunResult, run_program


def run_stack(stack: str, catalog: Catalog, config: dict[str, Any],
              stack_outputs: dict[str, tuple[dict, list[str]]], tenant_facing_only: bool = False) -> tuple[RunResult, float]:
    """(what the program of `stack` declared and exported, the seconds it took). `config`: the stack's config (the
    platform stack's is `envconfig.load_stack_config(env)`; unit and tenant stacks have none of their own);
    `stack_outputs`: the other stacks' outputs its StackReferences read."""
    import stacks

    start = time.perf_counter()
    try:
        result = run_program(stacks.program(stack, catalog, tenant_facing_only), project=envconfig.project_name(),
                             stack=stack, config=config, stack_outputs=stack_outputs)
    except TenancyError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a stack program's own failure, reported with its stack
        raise PlanError(f"stack '{stack}': the program failed: {type(exc).__name__}: {exc}") from exc
    return result, time.perf_counter() - start
