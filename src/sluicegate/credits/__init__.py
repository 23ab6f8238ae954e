"""The credit pool: top-ups, adjustments, the balance (the guard's live counter, else the
ledger's sum) and the ledger's listing and export. The ledger's table lives in metering/ledger.py,
beside the usage rows its usage debits are written with."""
