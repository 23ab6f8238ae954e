"""The audit trail: one event per admin mutation, hash-chained per org so tampering shows."""
