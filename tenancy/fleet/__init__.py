"""The fleet: how many tenants an environment can hold, and where each tenant lives.

    capacity.py   the environment's cells, pool shards and tenant-data projects with their capacities
                  (`tenancy:` keys of stacks/Pulumi.<env>.yaml)
    placement.py  each tenant's cell, pool shard and data project: sticky once deployed, pinned by the
                  operator, otherwise the lowest-numbered unit with room; a full environment is refused
    report.py     placement as the plan summary, plan.json and the pull-request comment show it

Moving a placed tenant (`tenancy place`) and migrating an environment's state (`tenancy migrate`) are
operations: tenancy/operations/relocate.py and migrate.py.
"""
