"""textkit: small text utilities (the devswarm demo project)."""

# Public API: each module's main function is re-exported here.
