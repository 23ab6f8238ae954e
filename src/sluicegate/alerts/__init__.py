"""Alerts (DESIGN §8): rules that subscribe to events for a scope, channels (signed webhooks,
Slack, Discord, email), the durable outbox an alert and its deliveries are written to in the
transaction of their cause (outbox.py; raised from the domain events keys, orgs and metering
announce, see lifecycle.py and sluicegate/handlers.py), the periodic evaluator (balance low,
anomalies, guardrail blocks, expired keys), the delivery worker with retries and backoff, and
the alert log."""
