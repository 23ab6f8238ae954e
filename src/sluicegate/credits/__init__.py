"""The credit pool: ledger, top-ups, balance."""
