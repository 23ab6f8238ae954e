"""Reading the audit trail through the admin API: listing and filtering events by who may see
them (orgs' authorize), export, and verifying a chain. Recording is audit/."""
