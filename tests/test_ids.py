"""Ids: UUIDv7, sortable in the order they were made, even within one millisecond."""
from __future__ import annotations

from chatapp.ids import parse_id, uuid7


def test_ids_made_in_a_row_sort_in_that_order_and_stay_version_7():
    ids = [uuid7() for _ in range(5000)]  # thousands share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in ids)


def test_parse_id_refuses_what_is_not_a_uuid():
    made = uuid7()
    assert parse_id(str(made)) == made
    assert parse_id("nope") is None and parse_id(None) is None
