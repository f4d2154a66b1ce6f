"""The tenancy CrossGuard policy pack. Rules live in `policy.rules`; `__main__.py` only assembles them."""
