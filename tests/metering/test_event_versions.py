"""The usage event's stream format is versioned (metering/event.py): entries queued by a release
before versions existed still drain, exactly; an entry of a version this release does not know
goes to the dead-letter stream instead of being guessed at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.metering.event import USAGE_EVENT_VERSION, VERSION_KEY
from sluicegate.metering.stream import (
    EVENT_FIELD,
    dead_letter_key,
    decode_event,
    encode_event,
    stream_key,
)
from sluicegate.runtime import Runtime
from tests.factories import make_tenant
from tests.metering.books import read_books
from tests.metering.test_drain import append_all, drain_of, drain_until_empty, events, pg_runtime

__all__ = ["pg_runtime"]  # the fixture, shared with test_drain.py


def _unversioned(event: dict[str, Any]) -> bytes:
    """An entry as releases before versions wrote it: the event's JSON alone."""
    return orjson.dumps(event)


async def test_entries_queued_before_versions_drain_beside_versioned_ones(
    pg_runtime: Runtime,
) -> None:
    runtime = pg_runtime
    assert runtime.redis is not None
    tenant = await make_tenant(runtime)
    batch = events(tenant, 6)
    stream = stream_key(runtime.settings.redis_prefix, tenant.org_id)
    await append_all(runtime, tenant, batch[:3])
    for event in batch[3:]:
        await runtime.redis.xadd(stream, {EVENT_FIELD: _unversioned(event)})

    drain = drain_of(runtime)
    await drain_until_empty(drain)

    assert (drain.stats.stored, drain.stats.dead) == (6, 0)
    async with runtime.sessions() as session:
        books = await read_books(session, tenant.org_id)
    books.assert_consistent()
    assert books.request_ids == {event["request_id"] for event in batch}
    assert books.cost_nusd == sum(event["cost_nusd"] for event in batch)


async def test_an_entry_of_an_unknown_version_goes_to_the_dead_letter_stream(
    pg_runtime: Runtime,
) -> None:
    runtime = pg_runtime
    assert runtime.redis is not None
    tenant = await make_tenant(runtime)
    (good, newer) = events(tenant, 2)
    stream = stream_key(runtime.settings.redis_prefix, tenant.org_id)
    await append_all(runtime, tenant, [good])
    future = {VERSION_KEY: USAGE_EVENT_VERSION + 1, **newer, "created_at": "2026-03-29T00:00:00Z"}
    await runtime.redis.xadd(stream, {EVENT_FIELD: orjson.dumps(future)})

    drain = drain_of(runtime)
    await drain_until_empty(drain)

    assert (drain.stats.stored, drain.stats.dead) == (1, 1)
    dead = await runtime.redis.xrange(dead_letter_key(runtime.settings.redis_prefix))
    assert [orjson.loads(fields[EVENT_FIELD])[VERSION_KEY] for _, fields in dead] == [
        USAGE_EVENT_VERSION + 1
    ]


_TEXT = st.text(min_size=1, max_size=40)
_OPTIONAL_TEXT = st.none() | _TEXT
_COUNT = st.integers(min_value=0, max_value=2**31 - 1)
# What the proxy records of how a request was served (metering/event.py), or None.
_ROUTING = st.none() | st.fixed_dictionaries(
    {"deployment": _TEXT, "attempts": st.integers(1, 10), "fallback": st.booleans()},
    optional={"fallback_model": _TEXT},
)


@given(
    event=st.fixed_dictionaries(
        {
            "request_id": _TEXT,
            "created_at": st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2100, 1, 1),
                timezones=st.just(UTC),
            ),
            "org_id": _TEXT,
            "group_id": _TEXT,
            "key_id": _TEXT,
            "user_id": _TEXT,
            "requested_model": _TEXT,
            "served_model": _OPTIONAL_TEXT,
            "provider": _OPTIONAL_TEXT,
            "app": _OPTIONAL_TEXT,
            "prompt_tokens": _COUNT,
            "completion_tokens": _COUNT,
            "cached_tokens": _COUNT,
            "cost_nusd": st.integers(min_value=0, max_value=2**63 - 1),
            "latency_ms": _COUNT,
            "ttft_ms": st.none() | _COUNT,
            "status_code": st.integers(min_value=100, max_value=599),
            "error_type": _OPTIONAL_TEXT,
            "stream": st.booleans(),
            "usage_estimated": st.booleans(),
            "routing": _ROUTING,
        }
    )
)
def test_an_event_reads_back_as_it_was_written(event: dict[str, Any]) -> None:
    assert decode_event(encode_event(event)) == event  # type: ignore[arg-type]
    # And as a release before versions wrote it.
    legacy = orjson.dumps(event)
    assert decode_event(legacy) == event


def test_every_entry_names_its_version_first() -> None:
    (event,) = [
        {
            "request_id": "req_1",
            "created_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=1),
        }
    ]
    assert encode_event(event).startswith(b'{"v":1,"request_id"')  # type: ignore[arg-type]
