"""The deck load a fast-path process waits for, from Redis to a usable image, against a raw read of the same bytes.

Used by bench_deck_image.py (generated rows) and bench_config.py (a deck published from PostgreSQL):

    from _deck_load import load_seconds, raw_read
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time

import redis

from control.projection import write_snapshot
from fastpath import deck_image
from fastpath import feed as feed_module
from fastpath import snapshot_format as fmt

REDIS = "redis://127.0.0.1:6379/13"
NAMESPACE = "bench-deck"
GOAL = 2.0  # load from Redis to a usable image, at most this many times a raw read of the same bytes


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def raw_read(client: redis.Redis, key: str) -> int:
    """The floor of any load: a snapshot's bytes from Redis, in the slices the reader asks for, kept; their size."""
    per = feed_module.CHUNKS_PER_READ
    part = kept = client.lrange(key, 0, per)  # the header and the first chunks, then slices of `per`
    asked = per + 1
    while len(part) == asked:
        part = client.lrange(key, len(kept), len(kept) + per - 1)
        kept, asked = kept + part, per
    return sum(len(chunk) for chunk in kept)


def load_seconds(client: redis.Redis, namespace: str, family: str, version: int, directory: str,
                 probe: str) -> float:
    """Seconds from a new version's announcement to its first answer: ImageCache.get from Redis, one lookup."""
    reader = feed_module.ProjectionFeed(client, namespace)
    cache = deck_image.ImageCache(directory)  # made when the process starts, not per version
    started = time.perf_counter()
    image = cache.get(family, version, fmt.kind_of(family), lambda: reader.image_chunks(family, version))
    assert image.longest_match(probe)[0] == probe
    seconds = time.perf_counter() - started
    image.close()
    return seconds


def measure(client: redis.Redis, namespace: str, family: str, version: int, probe: str, workdir: str,
            rounds: int = 7) -> tuple[list[float], list[float]]:
    """(load seconds, raw read seconds) of interleaved rounds, so that both see the same noise."""
    key = fmt.Keys(namespace).snapshot(family, version)
    loads, raws = [], []
    for round_ in range(rounds):
        raws.append(timed(lambda: raw_read(client, key))[0])
        directory = os.path.join(workdir, f"load-{round_}")
        loads.append(load_seconds(client, namespace, family, version, directory, probe))
        shutil.rmtree(directory)
    return loads, raws


def verdict(loads: list[float], raws: list[float]) -> str:
    load_s, raw_s = statistics.median(loads), statistics.median(raws)
    return (f"measured: load {load_s:.3f} s, raw read {raw_s:.3f} s (medians of {len(loads)}; load "
            f"{min(loads):.3f}-{max(loads):.3f} s, raw {min(raws):.3f}-{max(raws):.3f} s): {load_s / raw_s:.2f}x; "
            f"goal: ≤ {GOAL:.1f}x; met: {'yes' if load_s / raw_s <= GOAL else 'no'}")


def snapshot_bytes(client: redis.Redis, key: str) -> int:
    """The size of a snapshot's chunks, as its header lists them."""
    return sum(length for length, _ in json.loads(client.lindex(key, 0))["chunks"])


def format1_load(client: redis.Redis, rows: list[list], path: str) -> tuple[float, float, int]:
    """What each node paid with the format this one replaced: JSON chunks of rows, read, decoded and built into
    an image. (seconds, seconds of a raw read of its bytes, its bytes)."""
    key = f"{NAMESPACE}:format1"
    client.delete(key)
    for start in range(0, len(rows), fmt.CHUNK_ROWS):
        client.rpush(key, json.dumps(rows[start:start + fmt.CHUNK_ROWS], separators=(",", ":")).encode())
    started = time.perf_counter()
    decoded: list[list] = []
    for start in range(0, len(rows) // fmt.CHUNK_ROWS + 1, 20):
        for chunk in client.lrange(key, start, start + 19):
            decoded.extend(json.loads(chunk))
    deck_image.build_image(path, "odeck", decoded)
    with deck_image.DeckImage(path) as image:
        assert image.longest_match(rows[0][0]) is not None
    seconds = time.perf_counter() - started
    raw_s, size = timed(lambda: sum(len(c) for c in client.lrange(key, 0, -1)))
    client.delete(key)
    os.unlink(path)
    return seconds, raw_s, size


def load_section(rows: list[list], workdir: str) -> None:
    """Section 1 of bench_deck_image: the generated deck published to Redis database 13, then loaded."""
    client = redis.Redis.from_url(REDIS)
    family = "odeck:bench"
    key = fmt.Keys(NAMESPACE).snapshot(family, 1)
    batches = [rows[i:i + fmt.CHUNK_ROWS] for i in range(0, len(rows), fmt.CHUNK_ROWS)]
    try:
        publish_s, _ = timed(lambda: write_snapshot(client, key, family, batches))
        size = snapshot_bytes(client, key)
        loads, raws = measure(client, NAMESPACE, family, 1, rows[0][0], workdir)
        old_s, old_raw_s, old_size = format1_load(client, rows, os.path.join(workdir, "format1.img"))
    finally:
        client.delete(key, f"{NAMESPACE}:format1")
        client.close()
    load_s, raw_s = statistics.median(loads), statistics.median(raws)
    print(f"{'1. load from Redis to a usable image':58} {'seconds':>8}   {'baseline':30} {'seconds':>8} {'ratio':>7}")
    print(f"{'a new deck version: read, check, write, map, 1 lookup':58} {load_s:8.3f}   "
          f"{f'raw read of its {size / 1e6:.1f} MB':30} {raw_s:8.3f} {load_s / raw_s:6.2f}x")
    print(f"{'format 1 (JSON rows: read, decode, build_image, map)':58} {old_s:8.3f}   "
          f"{f'raw read of its {old_size / 1e6:.1f} MB':30} {old_raw_s:8.3f} {old_s / old_raw_s:6.1f}x")
    print(f"{'publisher: lay the image out, digest, write to Redis':58} {publish_s:8.3f}")
    print(verdict(loads, raws))
