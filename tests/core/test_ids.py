import time

from sluicegate.core.ids import has_prefix, new_id


def test_ids_carry_their_prefix_and_are_unique() -> None:
    ids = {new_id("org") for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(has_prefix(value, "org") for value in ids)
    assert not has_prefix(next(iter(ids)), "usr")


def test_ids_sort_by_creation_time() -> None:
    first = new_id("req")
    time.sleep(0.002)
    second = new_id("req")
    assert first < second
