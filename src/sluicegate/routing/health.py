"""Deployment health: a deployment that fails `allowed_fails` times within a window is cooled
down (left out of routing) for a while, longer when the upstream's Retry-After says so; after the
cooldown one request probes it (half-open): success brings it back, failure cools it again.

Every process reads health from memory, so a healthy request pays no I/O for it. What changes
health is shared: with Redis, failures are counted in Redis across workers and replicas (one
script call per failure), the probe after a cooldown is claimed there (SET NX), and every
cooldown and recovery is announced over the invalidation bus so all processes apply it.
Embedded, the same happens in this one process. Should Redis fail, each process counts its own.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from sluicegate.core.clock import Clock
from sluicegate.core.invalidation import InvalidationBus
from sluicegate.core.metrics import ROUTING_COOLDOWNS

# The topic of health changes on the invalidation bus; payload {"d": deployment, "u": until ms}
# (0: healthy again).
HEALTH_TOPIC = "routing_health"

log = logging.getLogger("sluicegate.routing")

# KEYS: failures counter, cooldown marker. ARGV: window ms, allowed fails, cooldown ms, now ms.
# Counts one failure in a window that starts at the first; at the limit, sets the cooldown and
# starts a new window. Returns the cooldown's end in ms, or 0.
_FAILURE_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if count >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  local until_ms = tonumber(ARGV[4]) + tonumber(ARGV[3])
  redis.call('SET', KEYS[2], until_ms, 'PX', ARGV[3])
  return until_ms
end
return 0
"""


@dataclass(frozen=True, slots=True)
class HealthRules:
    allowed_fails: int = 3
    window_seconds: float = 60.0
    cooldown_seconds: float = 30.0
    # An upstream's Retry-After lengthens a cooldown up to this; a longer one is not believed.
    max_cooldown_seconds: float = 600.0
    # A probe that neither succeeded nor failed within this gives the probe to another request.
    probe_timeout_seconds: float = 60.0


class HealthBoard:
    """This process's view of every deployment's health, and the way to change it."""

    def __init__(
        self,
        rules: HealthRules,
        clock: Clock,
        bus: InvalidationBus,
        redis: Redis | None = None,
        prefix: str = "sg",
    ) -> None:
        self.rules = rules
        self._clock = clock
        self._bus = bus
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_FAILURE_SCRIPT) if redis is not None else None
        # deployment -> end of its cooldown, epoch ms; present until a request succeeds on it.
        self._cool: dict[str, int] = {}
        self._fails: dict[str, deque[int]] = {}  # in-process failure times (no Redis)
        self._probes: dict[str, int] = {}  # deployment -> probe claimed until, epoch ms

    @property
    def all_healthy(self) -> bool:
        """True when no deployment is cooling down or waiting for its probe: the hot path's
        check, one attribute read."""
        return not self._cool

    def now_ms(self) -> int:
        return int(self._clock.now().timestamp() * 1000)

    def cooling_until(self, deployment: str, now_ms: int) -> int | None:
        """The end of the deployment's cooldown while it lasts, else None (healthy, or ready
        for its probe)."""
        until = self._cool.get(deployment)
        return until if until is not None and until > now_ms else None

    def on_probation(self, deployment: str) -> bool:
        """Cooled down before and not yet shown to work again: its next request is a probe."""
        return deployment in self._cool

    async def claim_probe(self, deployment: str, now_ms: int) -> bool:
        """True for the one request (across processes, with Redis) that probes the deployment
        after its cooldown; others route around it until the probe ends."""
        timeout_ms = int(self.rules.probe_timeout_seconds * 1000)
        if self._probes.get(deployment, 0) > now_ms:
            return False
        self._probes[deployment] = now_ms + timeout_ms
        if self._redis is None:
            return True
        try:
            key = f"{self._prefix}:routing:probe:{deployment}"
            return bool(await self._redis.set(key, 1, nx=True, px=timeout_ms))
        except (RedisError, OSError):
            return True  # alone, each process probes for itself

    async def succeeded(self, deployment: str) -> None:
        """A request was answered by the deployment. Only a recovery costs anything."""
        self._fails.pop(deployment, None)
        if deployment not in self._cool:
            return
        self._probes.pop(deployment, None)
        if self._redis is not None:
            try:
                await self._redis.delete(
                    f"{self._prefix}:routing:cool:{deployment}",
                    f"{self._prefix}:routing:probe:{deployment}",
                )
            except (RedisError, OSError):
                log.warning("could not clear a cooldown in Redis", extra={"deployment": deployment})
        await self._announce(deployment, 0)

    async def failed(self, deployment: str, retry_after: float | None = None) -> bool:
        """Count a failure of the deployment; True when it (now) cools down. A failed probe
        cools it again at once; a Retry-After longer than the cooldown lengthens it."""
        rules, now = self.rules, self.now_ms()
        cooldown_ms = int(rules.cooldown_seconds * 1000)
        if retry_after is not None and retry_after > rules.cooldown_seconds:
            cooldown_ms = int(min(retry_after, rules.max_cooldown_seconds) * 1000)
        probe_failed = deployment in self._cool and self.cooling_until(deployment, now) is None
        if probe_failed:
            self._probes.pop(deployment, None)
            until = await self._cool_in_redis(deployment, 1, cooldown_ms, now)
        else:
            until = await self._count(deployment, cooldown_ms, now)
        if not until:
            return False
        await self._announce(deployment, until)
        return True

    async def _count(self, deployment: str, cooldown_ms: int, now: int) -> int:
        rules = self.rules
        if self._redis is not None:
            until = await self._cool_in_redis(deployment, rules.allowed_fails, cooldown_ms, now)
            if until >= 0:
                return until
        window_ms = int(rules.window_seconds * 1000)
        times = self._fails.setdefault(deployment, deque())
        times.append(now)
        while times and times[0] <= now - window_ms:
            times.popleft()
        if len(times) < rules.allowed_fails:
            return 0
        times.clear()
        return now + cooldown_ms

    async def _cool_in_redis(
        self, deployment: str, allowed: int, cooldown_ms: int, now: int
    ) -> int:
        """The cooldown's end when this failure starts one, 0 when not, -1 when Redis failed
        (then a failed probe still cools the deployment in this process)."""
        if self._script is None:
            return now + cooldown_ms if allowed <= 1 else -1
        window_ms = int(self.rules.window_seconds * 1000)
        keys = [
            f"{self._prefix}:routing:fails:{deployment}",
            f"{self._prefix}:routing:cool:{deployment}",
        ]
        try:
            answer = await self._script(keys=keys, args=[window_ms, allowed, cooldown_ms, now])
        except (RedisError, OSError):
            log.warning("could not count a failure in Redis", extra={"deployment": deployment})
            return now + cooldown_ms if allowed <= 1 else -1
        return int(answer)

    async def _announce(self, deployment: str, until_ms: int) -> None:
        if until_ms:
            ROUTING_COOLDOWNS.labels(deployment).inc()
        payload = orjson.dumps({"d": deployment, "u": until_ms}).decode()
        # The bus applies it here at once, and in every other process through Redis.
        await self._bus.publish(HEALTH_TOPIC, payload)

    async def on_message(self, topic: str, payload: str) -> None:
        """The invalidation bus handler: apply a cooldown or recovery announced anywhere."""
        if topic != HEALTH_TOPIC:
            return
        try:
            message = orjson.loads(payload)
            deployment, until = str(message["d"]), int(message["u"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignored a malformed health message")
            return
        if until:
            self._cool[deployment] = max(until, self._cool.get(deployment, 0))
            self._probes.pop(deployment, None)
        else:
            self._cool.pop(deployment, None)
            self._probes.pop(deployment, None)


def retry_after_seconds(value: str | None) -> float | None:
    """An upstream's Retry-After in seconds (delta-seconds only; a date is not believed)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
