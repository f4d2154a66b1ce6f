"""Operating tenants: deploys, tier moves, suspend/resume and offboarding, each safe to re-run, interrupt
and race against the live application.

    record.py     desired (tenants.yaml) versus deployed (the platform stack's record); one-tenant changes
    deploy.py     preview/up of many stacks, with the stateful-delete guard
    registry.py   each database's tenant registry: register, freeze (draining in-flight writers), unfreeze
    destroy.py    destroying a tenant stack only when every stateful resource is saved or explicitly discarded
    moves.py      tier moves between pooled and namespace/dedicated, journalled and resumable
    tenant_ops.py suspend, resume, offboard
"""

from __future__ import annotations

from tenancy.errors import OperationError, Refused

__all__ = ["OperationError", "Refused"]
