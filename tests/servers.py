"""Throwaway Firestore and Cloud Storage API servers for tests: tenancy/localservers.py (shared with `make demo`)."""

from tenancy.localservers import ROOT, ApiServer, ServerUnavailable, free_port, start_firestore, start_gcs  # noqa: F401
