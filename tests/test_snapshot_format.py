"""The projection's snapshot format (fastpath/snapshot_format.py): a header, then chunks checked by length and digest.

Decks travel as their image (the bytes every fast-path process maps), base families as JSON rows. A reader refuses
a snapshot it cannot trust (unknown format, another image layout, a corrupt, short or extra chunk) and a fast path
keeps its last good world. Real Redis and real files throughout.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.projection import write_snapshot
from fastpath import deck_image, runtime
from fastpath import snapshot_format as fmt
from fastpath.feed import ProjectionFeed, SnapshotGone
from fastpath.reference import lpm as reference_lpm
from tests.conftest import REDIS_URL
from tests.test_deck_image import decks, expected, nested_rows, numbers_for, odeck_row


@pytest.fixture
def keys(redis_client) -> Iterator[fmt.Keys]:
    """A namespace of the test's own, emptied afterwards (conftest's REDIS_NAMESPACE, imported from here, would be
    another random one than the session's: pytest loads conftest.py as a module of its own)."""
    keys = fmt.Keys(f"tgtestfmt{secrets.token_hex(4)}")
    yield keys
    for key in redis_client.scan_iter(f"{keys.namespace}:*", count=1000):
        redis_client.delete(key)


@pytest.fixture
def feed(redis_client, keys) -> ProjectionFeed:
    return ProjectionFeed(redis_client, keys.namespace)


def publish(client: redis.Redis, keys: fmt.Keys, family: str, rows: list) -> int:
    """Write a snapshot as the publisher does, then make it live as the swap script does (pointer, then feed)."""
    version = int(client.incr(keys.version_seq))
    write_snapshot(client, keys.snapshot(family, version), family, [rows])
    client.hset(keys.pointer, family, version)
    client.xadd(keys.feed, {"family": family, "version": version})
    return version


def load_image(cache: deck_image.ImageCache, feed: ProjectionFeed, family: str, version: int):
    return cache.get(family, version, fmt.kind_of(family), lambda: feed.image_chunks(family, version))


def image_files(cache: deck_image.ImageCache) -> list[str]:
    return [name for name in os.listdir(cache.directory) if ".img" in name]


def tdeck_rows(count: int) -> list[list]:
    return [[str(4_400_000 + i), i, i % 60, 10_000 + i, 60, 6, i % 33, str(i % 10**6), i % 3] for i in range(count)]


# ------------------------------------------------------------------------------------------- round trips

def test_a_deck_snapshot_is_the_image_itself(redis_client, keys, feed, tmp_path):
    rows = nested_rows(3_000, seed=5)
    family = "odeck:gold"
    version = publish(redis_client, keys, family, rows)
    stored = redis_client.lrange(keys.snapshot(family, version), 0, -1)
    header = json.loads(stored[0])
    assert (header["format"], header["version"], header["family"], header["encoding"], header["rows"]) == (
        "tollgate-snapshot", fmt.FORMAT_VERSION, family, "deck-image", len(rows))
    assert header["image"] == deck_image.IMAGE_LAYOUT
    # Nothing but the image follows the header: a reader writes the chunks out as they come.
    assert b"".join(stored[1:]) == deck_image.encode_image("odeck", rows)
    assert [length for length, _ in header["chunks"]] == [len(chunk) for chunk in stored[1:]]

    cache = deck_image.ImageCache(str(tmp_path))
    image = load_image(cache, feed, family, version)
    assert all(image.longest_match(row[0]) == (row[0], tuple(row[1:])) for row in rows)
    assert feed.read(family, version).rows == sorted(rows)


def test_a_deck_of_several_chunks_round_trips(redis_client, keys, feed, tmp_path):
    rows = tdeck_rows(40_000)  # 64 bytes a prefix: three chunks of CHUNK_BYTES
    version = publish(redis_client, keys, "tdeck:big", rows)
    assert redis_client.llen(keys.snapshot("tdeck:big", version)) == 1 + 3
    image = load_image(deck_image.ImageCache(str(tmp_path)), feed, "tdeck:big", version)
    assert len(image) == len(rows)
    assert image.longest_match("440123456") == ("4401234", tuple(rows[1234][1:]))
    snapshot = feed.read("tdeck:big", version)
    assert snapshot.rows == rows and next(snapshot.records())["prepend"] == "0"


def test_an_empty_deck_and_an_empty_family_still_have_a_snapshot(redis_client, keys, feed, tmp_path):
    deck_version = publish(redis_client, keys, "odeck:none", [])
    base_version = publish(redis_client, keys, "callerids", [])
    image = load_image(deck_image.ImageCache(str(tmp_path)), feed, "odeck:none", deck_version)
    assert len(image) == 0 and image.longest_match("44") is None
    assert feed.read("callerids", base_version).rows == []
    assert set(feed.load()) == {"odeck:none", "callerids"}


def test_base_families_are_json_rows_under_a_checked_header(redis_client, keys, feed):
    rows = [[f"10000000{i:02d}", "CUSTOMER", "ACTIVE", False, None, "PREPAID", 0, i, 0, None, False, False, 0,
             False, "retail", None, 0, ""] for i in range(12)]
    version = publish(redis_client, keys, "accounts", rows)
    key = keys.snapshot("accounts", version)
    header = json.loads(redis_client.lindex(key, 0))
    assert header["encoding"] == "json-rows" and header["rows"] == 12 and "image" not in header
    assert feed.read("accounts", version).rows == rows
    # A changed digit is still valid JSON: only the digest tells.
    chunk = redis_client.lindex(key, 1)
    redis_client.lset(key, 1, chunk.replace(b'"1000000003"', b'"1000000093"'))
    with pytest.raises(fmt.SnapshotError, match=r"chunk 1 .*digest"):
        feed.read("accounts", version)


def test_the_image_cache_streams_a_deck_into_a_file(redis_client, keys, feed, tmp_path):
    """The chunks go to the file as they arrive; other processes then map the file the cache renamed into place."""
    rows = tdeck_rows(20_000)
    version = publish(redis_client, keys, "tdeck:stream", rows)
    cache = deck_image.ImageCache(str(tmp_path))
    image = load_image(cache, feed, "tdeck:stream", version)
    assert image.path == cache.path_for("tdeck:stream", version)
    with open(cache.path_for("tdeck:stream", version), "rb") as f:
        assert f.read() == deck_image.encode_image("tdeck", rows)
    assert image_files(cache) == [os.path.basename(cache.path_for("tdeck:stream", version))]
    peer = deck_image.ImageCache(str(tmp_path))
    assert peer.get("tdeck:stream", version, "tdeck", lambda: pytest.fail("built already")).longest_match(
        "4400007") == ("4400007", tuple(rows[7][1:]))


# ------------------------------------------------------------------------------------------- refusals

def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


def _header_with(client: redis.Redis, key: str, **changes) -> None:
    header = json.loads(client.lindex(key, 0)) | changes
    client.lset(key, 0, json.dumps(header))


def _as_format_1(client: redis.Redis, key: str) -> None:
    """What the previous publisher wrote: no header, an empty JSON chunk, then JSON chunks of rows."""
    client.delete(key)
    client.rpush(key, b"[]", json.dumps(tdeck_rows(3)).encode())


CORRUPTIONS = {
    "a flipped byte": (lambda c, k: c.lset(k, 2, _flip(c.lindex(k, 2), 1000)), "chunk 2 .*digest"),
    "a short chunk": (lambda c, k: c.lset(k, 2, c.lindex(k, 2)[:-1]), "chunk 2 .*bytes"),
    "a long chunk": (lambda c, k: c.lset(k, 3, c.lindex(k, 3) + b"\0"), "chunk 3 .*bytes"),
    "a missing chunk": (lambda c, k: c.rpop(k), "truncated"),
    "an extra chunk": (lambda c, k: c.rpush(k, b"\0" * 64), "more chunks"),
    "chunks swapped": (lambda c, k: c.lset(k, 1, c.lindex(k, 2)), "chunk 1 .*digest"),
    "no header": (lambda c, k: c.lset(k, 0, c.lindex(k, 1)), "header"),
    "a header that is not an object": (lambda c, k: c.lset(k, 0, b"[1, 2]"), "header"),
    "format 1": (_as_format_1, "format 1"),
    "an unknown format version": (lambda c, k: _header_with(c, k, version=99), "format version 99"),
    "another kind of snapshot": (lambda c, k: _header_with(c, k, format="something-else"), "something-else"),
    "another family": (lambda c, k: _header_with(c, k, family="tdeck:other"), "tdeck:other"),
    "another image layout": (lambda c, k: _header_with(c, k, image="deck image 9"), "deck image 9"),
    "JSON rows where an image belongs": (lambda c, k: _header_with(c, k, encoding="json-rows"), "json-rows"),
    "an oversized chunk": (lambda c, k: _header_with(c, k, chunks=[[fmt.CHUNK_BYTES + 1, 0]] * 3), "bytes"),
    "a row count that disagrees": (lambda c, k: _header_with(c, k, rows=1), "rows"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_deck_snapshot_that_cannot_be_trusted_is_refused(redis_client, keys, feed, tmp_path, corruption):
    rows = tdeck_rows(40_000)
    version = publish(redis_client, keys, "tdeck:bad", rows)
    corrupt, message = CORRUPTIONS[corruption]
    corrupt(redis_client, keys.snapshot("tdeck:bad", version))
    cache = deck_image.ImageCache(str(tmp_path))
    with pytest.raises(fmt.SnapshotError, match=message):
        load_image(cache, feed, "tdeck:bad", version)
    assert image_files(cache) == []  # neither the image nor its temporary file
    with pytest.raises(fmt.SnapshotError, match=message):
        feed.read("tdeck:bad", version)


def test_a_retired_snapshot_is_gone_not_corrupt(redis_client, keys, feed, tmp_path):
    version = publish(redis_client, keys, "odeck:old", [odeck_row("44")])
    redis_client.delete(keys.snapshot("odeck:old", version))
    with pytest.raises(SnapshotGone):
        load_image(deck_image.ImageCache(str(tmp_path)), feed, "odeck:old", version)
    with pytest.raises(SnapshotGone):
        feed.read("odeck:old", version)


def test_the_writer_refuses_rows_that_do_not_fit_the_format(redis_client, keys):
    key = keys.snapshot("odeck:refused", 1)
    with pytest.raises(ValueError, match="row 1: forced trunk 'a,b'"):
        write_snapshot(redis_client, key, "odeck:refused", [[odeck_row("1")], [odeck_row("2", trunks=["a,b"])]])
    with pytest.raises(ValueError, match="row 0: prepend"):
        write_snapshot(redis_client, key, "tdeck:refused", [[["1", 0, 0, 1, 1, 1, 0, 7, 0]]])
    with pytest.raises(ValueError, match="family"):
        write_snapshot(redis_client, key, "zdeck:refused", [[]])
    assert not redis_client.exists(key)  # nothing half-written


# ------------------------------------------------------------------------------------------- fast path

def _until(predicate, fast: runtime.FastPath, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fast.refresh()
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


def test_a_refused_snapshot_keeps_the_last_good_world(redis_client, keys, tmp_path, caplog):
    publish(redis_client, keys, "odeck:gold", [odeck_row("44", 100)])
    client = runtime.redis_client(REDIS_URL)
    fast = runtime.FastPath(client, str(tmp_path), keys.namespace, poll_seconds=0.0)
    fast.load()
    deck = fast.world.origination_decks["gold"]
    caplog.set_level(logging.ERROR, logger="fastpath.runtime")

    bad = publish(redis_client, keys, "odeck:gold", [odeck_row("44", 200)])
    _header_with(redis_client, keys.snapshot("odeck:gold", bad), version=3)  # a newer publisher's format
    assert fast.refresh() is False
    assert fast.versions["odeck:gold"] == bad - 1 and fast.world.origination_decks["gold"] is deck
    assert deck.longest_match("4420")[1][2] == 100
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "format version 3" in refused[0]

    good = publish(redis_client, keys, "odeck:gold", [odeck_row("44", 300)])
    _until(lambda: fast.versions["odeck:gold"] == good, fast)
    assert fast.world.origination_decks["gold"].longest_match("4420")[1][2] == 300
    client.close()


def test_a_first_load_refuses_a_snapshot_it_cannot_trust(redis_client, keys, tmp_path):
    version = publish(redis_client, keys, "odeck:gold", [odeck_row("44", 100)])
    _as_format_1(redis_client, keys.snapshot("odeck:gold", version))
    fast = runtime.FastPath(runtime.redis_client(REDIS_URL), str(tmp_path), keys.namespace)
    with pytest.raises(fmt.SnapshotError, match="format 1"):
        fast.load()
    assert not fast.loaded and fast.world.origination_decks == {}


# ------------------------------------------------------------------------------------------- properties

@pytest.mark.parametrize("kind", ["odeck", "tdeck"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_valid_deck_survives_the_projection(redis_client, keys, feed, kind, data):
    rows = data.draw(decks(kind))
    batches = data.draw(st.integers(1, 4))
    family = f"{kind}:{uuid.uuid4().hex[:8]}"
    version = int(redis_client.incr(keys.version_seq))
    write_snapshot(redis_client, keys.snapshot(family, version), family,
                   [rows[i::batches] for i in range(batches)])  # the order of rows does not matter to the image
    table = reference_lpm.check_rows(kind, rows)
    with tempfile.TemporaryDirectory() as directory:
        image = load_image(deck_image.ImageCache(directory), feed, family, version)
        for row in rows:
            assert image.longest_match(row[0]) == (row[0], tuple(row[1:]))
        for number in data.draw(numbers_for(rows)):
            assert image.longest_match(number) == expected(table, number), number
        image.close()
    assert feed.read(family, version).rows == sorted(rows)
