"""Imports every capability's tables so `Base.metadata` is complete (migrations, tests)."""

from sluicegate.alerts import models as alerts_models
from sluicegate.audit import models as audit_models
from sluicegate.core.db import Base
from sluicegate.guard import models as guard_models
from sluicegate.identity import models as identity_models
from sluicegate.keys import models as keys_models
from sluicegate.metering import ledger as ledger_models
from sluicegate.metering import models as metering_models
from sluicegate.orgs import models as orgs_models
from sluicegate.routing import models as routing_models

metadata = Base.metadata

__all__ = [
    "alerts_models",
    "audit_models",
    "guard_models",
    "identity_models",
    "keys_models",
    "ledger_models",
    "metadata",
    "metering_models",
    "orgs_models",
    "routing_models",
]
