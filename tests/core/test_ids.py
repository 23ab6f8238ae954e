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


def test_a_value_of_the_right_length_but_foreign_characters_is_no_id() -> None:
    body = new_id("key").partition("_")[2]
    assert has_prefix(f"key_{body}", "key")
    for foreign in ("\x00", "I", "u", "/", "%"):
        assert not has_prefix(f"key_{foreign}{body[1:]}", "key")
