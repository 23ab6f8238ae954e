"""Sluicegate: a self-hosted multi-tenant LLM gateway."""

__version__ = "0.1.0"
