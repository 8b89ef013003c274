"""Orchestrated side effects: desired state from git (`source`, `trust`), the state store,
apply, the reconcile pass with its one error-to-outcome mapping (`converge`, `outcome`),
rollback commits (`pinning`) and the JSON views the CLI and API share."""
