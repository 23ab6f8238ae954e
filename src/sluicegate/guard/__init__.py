"""Guardrails: counters (Redis or in-process), reserve/settle, budgets, rate limits, policies."""
