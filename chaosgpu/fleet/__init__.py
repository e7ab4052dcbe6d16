"""Activities on the fleet as a whole: its fault ledgers (rollbacks, leftover checks)."""
