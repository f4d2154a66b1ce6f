"""The fleet: how many tenants an environment can hold, and where each tenant lives.

    capacity.py   the environment's cells, pool shards and tenant-data projects with their capacities
                  (`tenancy:` keys of stacks/Pulumi.<env>.yaml)
    placement.py  each tenant's cell, pool shard and data project: sticky once deployed, pinned by the
                  operator, otherwise the lowest-numbered unit with room; a full environment is refused
    migrate.py    `tenancy migrate`: an environment deployed as one platform stack moves to the unit stacks
    relocate.py   `tenancy place`: moving one placed tenant, explicitly, only when no data is left behind
    report.py     placement as the plan summary, plan.json and the pull-request comment show it
"""
