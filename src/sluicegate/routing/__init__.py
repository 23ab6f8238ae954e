"""Routing: which deployment serves a request, in which order the others are tried, and what an
organization's groups require of the providers their requests may reach.

The providers file declares deployments per model (providers/config.py); this package orders
them per request (strategies, health, per-request preferences, group overrides, compliance) and
keeps the admin API of per-group routing overrides. The proxy runs the attempts.
"""
