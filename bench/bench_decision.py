"""Bench: a full routing decision, compiled engine vs the reference, on a 1M-prefix deck; and deck load time.

    .venv/bin/python bench/bench_decision.py            # prints the table
    .venv/bin/pytest bench/bench_decision.py -o addopts= --benchmark-only   # pytest-benchmark view

Goals (issue 4): compiled >= 30x faster than the reference in the same run, compiled median < 3 us;
loading a 1M-row deck from Redis into a shared image <= 5 s (issue 12 holds that load to 2x a raw read of its
bytes: bench_deck_image.py). Decks are memory-mapped images for both
engines (the reference pays its dict-free LPM through the same image), so the ratio measures the decision
logic; a second line shows the reference with in-memory dict decks, its best case.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

import _repo_path  # noqa: F401  (this checkout's packages, not the installed ones)
import redis
from _deck_load import load_seconds, raw_read

from control.projection import write_snapshot
from fastpath import _core
from fastpath import snapshot_format as fmt
from fastpath.deck_image import DeckImage, build_image
from fastpath.model import Account, RateGroup, Trunk, World
from fastpath.reference import decision as reference
from fastpath.reference.lpm import DictDeck

PREFIXES = 1_000_000
NOW = 1_800_000_000
REDIS = "redis://127.0.0.1:6379/13"


def deck_rows(count: int, seed: int, kind: str) -> list[list]:
    rng = random.Random(seed)
    prefixes = set()
    while len(prefixes) < count:
        prefixes.add(str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=rng.randint(1, 10))))
    if kind == "odeck":
        return [[p, 0, 0, rng.randint(1_000, 90_000), 0, 0, [], 0] for p in prefixes]
    return [[p, 0, 0, rng.randint(500, 60_000), 0, 0, 0, "", rng.randint(0, 3)] for p in prefixes]


def build_world(directory: Path, dict_decks: bool) -> World:
    world = World()
    world.accounts = {
        f"{1_000_000_000 + i}": Account(f"{1_000_000_000 + i}", "CUSTOMER", "ACTIVE", False, None, "PREPAID", 0, 0, 0,
                                        None, False, i % 2 == 0, 0, False, "retail", None, 0)
        for i in range(10_000)
    }
    world.rate_groups = {"retail": RateGroup("retail", 10, "LCR", 1, 1, ("t1", "t2", "t3"), "ACTIVE")}
    world.trunks = {t: Trunk(t, "9000000001", True, (("127.0.0.1:5060", "udp"), ("127.0.0.1:5062", "udp")), 0, 0,
                             None, n, "ACTIVE") for n, t in enumerate(("t1", "t2", "t3"))}
    decks = {"odeck:retail": deck_rows(PREFIXES, 1, "odeck")}
    decks |= {f"tdeck:{t}": deck_rows(100_000, 2 + n, "tdeck") for n, t in enumerate(("t1", "t2", "t3"))}
    for family, rows in decks.items():
        kind = fmt.kind_of(family)
        if dict_decks:
            world.set_deck(family, DictDeck(kind, rows))
        else:
            path = directory / f"{family.replace(':', '_')}.img"
            build_image(str(path), kind, rows)
            world.set_deck(family, DeckImage(str(path)))
    return world


def calls(count: int) -> list[tuple]:
    rng = random.Random(7)
    return [(f"{1_000_000_000 + rng.randrange(10_000)}", "15550001111",
             str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=10)), 50_000_000, NOW)
            for _ in range(count)]


def median_ns(decide, batch: list[tuple], rounds: int = 5) -> float:
    """Median over rounds of the mean per-decision time of one pass over the batch."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for call in batch:
            decide(*call)
        samples.append((time.perf_counter_ns() - started) / len(batch))
    return statistics.median(samples)


def deck_load_seconds(rows: list[list], directory: Path) -> tuple[float, float]:
    """Publish a deck to Redis as the control service does, then time a process loading it as an image:
    (load seconds, raw read seconds of the same bytes)."""
    client = redis.Redis.from_url(REDIS)
    key = fmt.Keys("bench").snapshot("odeck:load", 1)
    write_snapshot(client, key, "odeck:load", [rows])
    try:
        raw_s = min(_timed(lambda: raw_read(client, key)) for _ in range(3))
        load_s = load_seconds(client, "bench", "odeck:load", 1, str(directory / "images"), rows[0][0])
    finally:
        client.delete(key)
        client.close()
    return load_s, raw_s


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        imaged = build_world(Path(directory), dict_decks=False)
        batch = calls(20_000)
        compiled = _core.Engine(imaged)
        ref = reference.Engine(imaged)
        agree = sum(compiled.decide(*c).as_tuple() == ref.decide(*c).as_tuple() for c in batch[:2_000])
        routed = sum(compiled.decide(*c).code == 200 for c in batch)
        compiled_ns = median_ns(compiled.decide, batch)
        reference_ns = median_ns(ref.decide, batch[:5_000])
        dict_ref_ns = median_ns(reference.Engine(build_world(Path(directory), dict_decks=True)).decide, batch[:5_000])
        load_s, raw_s = deck_load_seconds(deck_rows(PREFIXES, 1, "odeck"), Path(directory))
    print(f"world: 10,000 accounts, 1M-prefix origination deck, 3 trunks x 100k termination prefixes; "
          f"{routed / len(batch):.0%} of calls routed; engines agree on {agree}/2000")
    print(f"{'full decision':44} {'median ns':>10} {'vs compiled':>12}")
    print(f"{'compiled engine (fastpath._core)':44} {compiled_ns:10.0f} {1:11.1f}x")
    print(f"{'reference, same image decks':44} {reference_ns:10.0f} {reference_ns / compiled_ns:11.1f}x")
    print(f"{'reference, in-memory dict decks':44} {dict_ref_ns:10.0f} {dict_ref_ns / compiled_ns:11.1f}x")
    print(f"goal: compiled >= 30x faster than the reference with its own (dict) decks "
          f"({dict_ref_ns / compiled_ns:.1f}x; {reference_ns / compiled_ns:.1f}x when both use the images), "
          f"median < 3000 ns ({compiled_ns:.0f})")
    print(f"1M-row deck load from Redis into a usable image: {load_s:.3f} s (goal <= 5 s; a raw read of its bytes "
          f"{raw_s:.3f} s)")


# ---------------------------------------------------------------------------------------------- pytest-benchmark

def _world_and_batch(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("decks"), dict_decks=False), calls(2_000)


def test_bench_compiled_decision(benchmark, tmp_path_factory):
    world, batch = _world_and_batch(tmp_path_factory)
    engine = _core.Engine(world)
    benchmark(lambda: [engine.decide(*c) for c in batch])


def test_bench_reference_decision(benchmark, tmp_path_factory):
    world, batch = _world_and_batch(tmp_path_factory)
    engine = reference.Engine(world)
    benchmark(lambda: [engine.decide(*c) for c in batch])


if __name__ == "__main__":
    main()
