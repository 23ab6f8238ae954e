"""The admin REST API's shared HTTP plumbing: dependencies, fields, error shapes, the router.

Each capability keeps its own routes (orgs/routes.py, keys/routes.py, ...); api/router.py
mounts them all under /api/v1.
"""
