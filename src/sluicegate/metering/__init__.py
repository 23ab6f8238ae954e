"""Usage: the usage event (event.py), the durable stream and its drain, the buffered writer,
the rollups, the ledger's table and its usage debits (ledger.py), partitions, retention and
reconciling what is derived with the usage rows."""
