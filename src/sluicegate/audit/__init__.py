"""The audit trail's writing side: one event per admin mutation, recorded in the mutation's own
transaction and hash-chained per org so tampering shows; checkpoints and verification. Every
capability that changes something records here, so it sits below them all; reading the trail
through the API (who may see which events) is audit_trail/, above orgs."""
