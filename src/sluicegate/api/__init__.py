"""The admin REST API's shared HTTP plumbing: dependencies (the unit of work, the clock, the
settings, list parameters), fields, pages, the error shape and body limits. It imports no
capability: each capability keeps its own routes (orgs/routes.py, keys/routes.py, ...), and
sluicegate/admin_api.py (wiring) mounts them all under /api/v1.
"""
