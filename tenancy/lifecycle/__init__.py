"""What every operation is built from: deploys and the deployed record, destroys, archives, and a tenant's data
paired across its stores. The operations themselves (tier moves, suspend/resume, offboard, restore) are in
tenancy/operations/, on the one protocol.

    record.py       desired (tenants.yaml) versus deployed (the deployed record); one-tenant changes
    deploy.py       preview/up of many stacks, in waves (waves.py), with the stateful-delete guard
    destroy.py      destroying a tenant stack only when every stateful resource is saved or explicitly discarded
    archives.py     where exports go (a local directory or gs://), checked before anything is written
    online.py       the online move of PostgreSQL rows (replication) paired with the other stores' passes
    tenant_data/    a tenant's stores as handles, paired across a move, exported and verified
"""

from __future__ import annotations

from tenancy.errors import OperationError, Refused

__all__ = ["OperationError", "Refused"]
