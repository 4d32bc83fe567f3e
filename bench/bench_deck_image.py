"""Bench: the shared rate deck image (fastpath/deck_image) against a per-process dict deck, in the same run.

    .venv/bin/python bench/bench_deck_image.py [--rows 1000000] [--processes 4] [--lookups 100000]
                                               [--compare MODULE] [--skip-memory]
    .venv/bin/pytest bench/bench_deck_image.py -o addopts= --benchmark-only     # pytest-benchmark view

The deck is generated from a fixed seed: prefixes of 2 to 12 digits grown as a tree (so 44, 4420, 442079
nest like a real A-Z deck), numbers are a deck prefix plus random digits (10 to 14 digits in all), one in
ten random. Redis database 13 (namespace bench-deck, emptied after) holds the deck's snapshot. Measures:
1. the load a fast-path process waits for when a new deck version appears, from Redis to a usable
   DeckImage (ProjectionFeed.image_chunks into ImageCache.get, then a lookup), against a raw read of the
   same bytes from Redis (LRANGE in the same slices, nothing else), medians of interleaved rounds; goal:
   load <= 2.0x the raw read. For comparison, the snapshot format it replaced (JSON rows, decoded and built
   into an image by each node). Then the publisher's side: laying the image out (build_image, with its
   fsync) and opening it, against building a plain dict deck (prefix -> record tuple) from the same rows.
2. lookup latency, median ns per lookup over batches of 1,000: DeckImage.longest_match (a Python call
   that returns the record), the C path alone (match(), what the Cython decision core calls), and the
   reference dict loop; for the numbers above and for random 11-digit numbers (which mostly match a
   short prefix only). --compare MODULE measures another build of the image (an importable module with
   the same API, e.g. the previous format compiled under another name) in the same run, interleaved:
       mkdir -p /tmp/old/old && git show HEAD:fastpath/deck_image.pyx > /tmp/old/old/deck_image_old.pyx
       git show HEAD:fastpath/deck_image.pxd > /tmp/old/old/deck_image_old.pxd && touch /tmp/old/old/__init__.py
       (cd /tmp/old && cythonize -i old/deck_image_old.pyx)
       PYTHONPATH=/tmp/old .venv/bin/python bench/bench_deck_image.py --compare old.deck_image_old
3. private memory of N processes that each look up 100k numbers, all alive together, against a
   baseline process that only imports the module; fork (from a parent that opened the deck first, as
   Kamailio's mod_init would) and spawn; the same for a dict deck. Each process's PSS is printed
   (bench/_memory.py pss_kib, which bench_kamailio.py uses too).
This machine is shared and noisy: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo_path  # noqa: F401  (this checkout's packages, not the installed ones)
import pytest
from _memory import private_kib, pss_kib

from fastpath import deck_image
from fastpath.reference import lpm as reference_lpm

SEED = 20_240_501
DIGITS = "0123456789"
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------- data

def generate_rows(count: int, seed: int = SEED) -> list[list]:
    """An origination deck of `count` distinct nested prefixes, 2 to 12 digits."""
    rnd = random.Random(seed)
    seen: set[str] = set()
    order: list[str] = []
    while len(order) < min(count, 250):  # country-code-like roots
        root = str(rnd.randint(1, 9)) + "".join(rnd.choices(DIGITS, k=rnd.choice((1, 1, 2))))
        if root not in seen:
            seen.add(root)
            order.append(root)
    while len(order) < count:
        parent = order[int(len(order) * rnd.random() ** 3)]  # older prefixes (shorter) get more children
        if len(parent) >= 12:
            continue
        step = min(rnd.choice((1, 1, 1, 2, 2, 3)), 12 - len(parent))
        child = parent + "".join(rnd.choices(DIGITS, k=step))
        if child not in seen:
            seen.add(child)
            order.append(child)
    trunks = [[], [], [], [], [], [], [], [], [], [], [], [], [], [], [], [], [], [], ["trunk-a"],
              ["trunk-b", "trunk-c"]]
    return [[prefix, rnd.choice((0, 0, 10_000)), rnd.choice((0, 0, 0, 30)), rnd.randrange(1_000, 500_000),
             rnd.choice((1, 30, 60)), rnd.choice((1, 6, 60)), rnd.choice(trunks), rnd.randrange(3)]
            for prefix in order]


def generate_numbers(rows: list[list], count: int, seed: int = SEED + 1) -> list[str]:
    rnd = random.Random(seed)
    numbers = []
    for _ in range(count):
        if rnd.random() < 0.1:
            numbers.append("".join(rnd.choices(DIGITS, k=11)))
        else:
            prefix = rows[rnd.randrange(len(rows))][0]
            numbers.append(prefix + "".join(rnd.choices(DIGITS, k=max(0, rnd.randint(10, 14) - len(prefix)))))
    return numbers


def image_layout(path: str) -> dict[str, int]:
    """A few header fields of a deck image (format 2, see fastpath/deck_image.pyx)."""
    with open(path, "rb") as f:
        header = f.read(144)
    count, slot_count = struct.unpack_from("=QQ", header, 32)
    (level_digits,) = struct.unpack_from("=I", header, 92)
    (pilot_count,) = struct.unpack_from("=Q", header, 112)
    return {"count": count, "slot_count": slot_count, "level_digits": level_digits, "pilot_count": pilot_count}


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def ns_per_lookup(run_batch, batches: list, passes: int = 3) -> tuple[float, float]:
    """(median, p90) ns per lookup over batches; run_batch(batch) looks up every number of the batch."""
    samples = []
    for _ in range(passes):
        for batch in batches:
            started = time.perf_counter_ns()
            run_batch(batch)
            samples.append((time.perf_counter_ns() - started) / len(batch))
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


def python_batch(lookup):
    def run(batch):
        for number in batch:
            lookup(number)
    return run


# ------------------------------------------------------------------------------------------- memory

def _kb(path: str, field: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_of(pid: int, image_path: str | None) -> dict[str, float]:
    """MB figures of a live process: Private_Clean + Private_Dirty, Pss, and the image mapping's share."""
    figures = {
        "private": private_kib(pid) / 1024,
        "pss": pss_kib(pid) / 1024,
        "page_tables": _kb(f"/proc/{pid}/status", "VmPTE") / 1024,
        "image_rss": 0.0,
        "image_private": 0.0,
    }
    if image_path:
        inside = False
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split()
                if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                    inside = len(head) >= 6 and head[5] == image_path
                elif inside and head[0] == "Rss:":
                    figures["image_rss"] += int(head[1]) / 1024
                elif inside and head[0] in ("Private_Clean:", "Private_Dirty:"):
                    figures["image_private"] += int(head[1]) / 1024
    return figures


def child_main(spec: dict) -> None:
    """A measured process. spawn: one worker. fork: a parent that forks spec['processes'] workers.

    Each worker does its lookups, writes 'ready <pid>' on stdout and blocks until stdin closes, so that
    all of them are alive (and share the image's pages) while the bench reads their /proc files.
    """
    deck = None

    def open_deck():
        if spec["what"] == "image":
            return deck_image.DeckImage(spec["image"])
        if spec["what"] == "dict":
            return reference_lpm.DeckImage(spec["json"])
        return None

    def work(slot: int):
        used = deck if deck is not None else open_deck()
        if used is not None:
            per = spec["lookups"]
            with open(spec["numbers"]) as numbers:
                for index, line in enumerate(numbers):
                    if index >= (slot + 1) * per:
                        break
                    if index >= slot * per:
                        used.longest_match(line[:-1])
        os.write(1, f"ready {os.getpid()}\n".encode())
        os.read(0, 1)  # EOF when the bench is done measuring
        return used

    if spec["start"] == "spawn":
        keep = work(spec["slot"])
        del keep
        return
    deck = open_deck()  # like mod_init: loaded once before the workers fork
    children = []
    for slot in range(spec["processes"]):
        pid = os.fork()
        if pid == 0:
            try:
                work(slot)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def measure_processes(start: str, what: str, processes: int, files: dict) -> list[dict[str, float]]:
    spec = {"start": start, "what": what, "processes": processes, **files}
    command = [sys.executable, __file__, "--child"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if start == "spawn":
        launched = [subprocess.Popen([*command, json.dumps({**spec, "slot": slot})], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env) for slot in range(processes)]
        pids = [int(p.stdout.readline().split()[1]) for p in launched]
    else:
        launched = [subprocess.Popen([*command, json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)]
        pids = [int(launched[0].stdout.readline().split()[1]) for _ in range(processes)]
    try:
        return [memory_of(pid, files["image"] if what == "image" else None) for pid in pids]
    finally:
        for p in launched:
            p.stdin.close()
        for p in launched:
            if p.wait(timeout=120) != 0:
                raise RuntimeError(f"measured process failed: {p.args}")


# ------------------------------------------------------------------------------------------- script

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="where the image goes (default: a temporary directory)")
    parser.add_argument("--compare", default=None, metavar="MODULE",
                        help="another build of fastpath.deck_image to measure in the same run (sections 1 and 2)")
    parser.add_argument("--skip-memory", action="store_true", help="leave out section 3 (processes)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return

    workdir = tempfile.mkdtemp(prefix="deck-bench-", dir=args.dir)
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir: str) -> None:
    gen_s, rows = timed(lambda: generate_rows(args.rows))
    lengths = sorted(len(r[0]) for r in rows)
    print(f"deck: {len(rows):,} prefixes, lengths {lengths[0]}-{lengths[-1]} (median {lengths[len(lengths) // 2]}),"
          f" generated in {gen_s:.1f} s; image in {workdir}")
    image_path = os.path.join(workdir, "odeck%3Abench.1.img")
    json_path = os.path.join(workdir, "odeck-bench.json")

    # 1. load from Redis; build and open
    from _deck_load import load_section  # here: the measured processes of section 3 need no Redis client

    print()
    load_section(rows, workdir)
    build_s, count = timed(lambda: deck_image.build_image(image_path, "odeck", rows))
    assert count == len(rows)
    open_s, image = timed(lambda: deck_image.DeckImage(image_path))
    dict_s, _ = timed(lambda: {row[0]: (*row[1:6], list(row[6]), row[7]) for row in rows})
    table = reference_lpm.check_rows("odeck", rows)
    print(f"{'build_image (check, hash, write, fsync)':44} {build_s:9.3f}   {'dict deck from the same rows':34} "
          f"{dict_s:8.3f} {build_s / dict_s:6.2f}x")
    print(f"{'DeckImage open (mmap + header check)':44} {open_s:9.6f}   {'dict deck from the same rows':34} "
          f"{dict_s:8.3f} {open_s / dict_s:6.4f}x")
    print(f"image file: {os.path.getsize(image_path) / 1e6:.1f} MB ({os.path.getsize(image_path) / len(rows):.0f}"
          f" bytes/prefix)")

    level = image_layout(image_path)
    print(f"layout: {level['count']:,} entries of 64 bytes, perfect hash range {level['slot_count']:,}, "
          f"{level['pilot_count']:,} pilots, level of {level['level_digits']} digits "
          f"({8 * 10 ** level['level_digits'] / 1e6:.1f} MB)")
    other = None
    if args.compare:
        other_module = importlib.import_module(args.compare)
        other_path = os.path.join(workdir, "compare.img")
        other_build_s, _ = timed(lambda: other_module.build_image(other_path, "odeck", rows))
        other = other_module.DeckImage(other_path)
        print(f"compare: {args.compare} builds in {other_build_s:.3f} s, image {other.size / 1e6:.1f} MB")

    # 2. lookups
    numbers = generate_numbers(rows, args.lookups)
    rnd = random.Random(SEED + 3)
    randoms = ["".join(rnd.choices(DIGITS, k=11)) for _ in range(args.lookups)]
    for number in numbers[:2000] + randoms[:2000]:
        assert image.longest_match(number) == reference_lpm.longest_match(table, number), number
        assert other is None or other.longest_match(number) == image.longest_match(number), number
    fresh = deck_image.DeckImage(image_path)
    cold, _ = ns_per_lookup(python_batch(fresh.longest_match), [numbers[i:i + 1000] for i in range(0, 20_000, 1000)],
                            passes=1)
    fresh.close()
    for title, chosen in [("numbers near deck prefixes", numbers), ("random 11-digit numbers", randoms)]:
        batches = [chosen[i:i + 1000] for i in range(0, len(chosen), 1000)]
        byte_batches = [[n.encode() for n in batch] for batch in batches]
        images = [("this", image)] + ([("compare", other)] if other is not None else [])
        figures = {}
        for _ in range(3):  # interleaved, so that both builds see the same noise
            for name, measured in images:
                for what, run_batch, used in [("py", python_batch(measured.longest_match), batches),
                                              ("c", measured.count_matches, byte_batches)]:
                    figures.setdefault((name, what), []).append(ns_per_lookup(run_batch, used, passes=1))
        ref_ns, ref_p90 = ns_per_lookup(python_batch(lambda n: reference_lpm.longest_match(table, n)), batches)
        matched = sum(image.count_matches(b) for b in byte_batches)
        print()
        print(f"2. lookup, {title} ({len(chosen):,}, {matched / len(chosen):.0%} match)  median ns    p90 ns  "
              f"reference / this")
        rows_out = []
        for name, _ in images:
            suffix = "" if name == "this" else " [compare]"
            for what, label in [("py", "DeckImage.longest_match (returns record)"),
                                ("c", "DeckImage.match (C path, no objects)")]:
                samples = figures[name, what]
                rows_out.append((label + suffix, statistics.median(s[0] for s in samples),
                                 statistics.median(s[1] for s in samples)))
        rows_out.append(("reference dict LPM (baseline)", ref_ns, ref_p90))
        for label, ns, p90 in rows_out:
            print(f"   {label:44} {ns:8.0f}  {p90:8.0f}  {ref_ns / ns:8.1f}x")
    print(f"   first pass on a fresh mapping (page faults): {cold:.0f} ns median")
    image.close()
    if other is not None:
        other.close()
    table.clear()
    if args.skip_memory:
        return

    # 3. memory per process
    numbers_path = os.path.join(workdir, "numbers.txt")
    rnd = random.Random(SEED + 2)
    with open(numbers_path, "w") as f:
        for number in generate_numbers(rows, args.lookups * args.processes, seed=rnd.randrange(2**32)):
            f.write(number + "\n")
    reference_lpm.build_image(json_path, "odeck", rows)
    rows.clear()  # the parent's copy plays no part in what follows
    files = {"image": image_path, "json": json_path, "numbers": numbers_path, "lookups": args.lookups}
    print()
    print(f"3. memory, {args.processes} processes alive together, {args.lookups:,} lookups each (MB per process)")
    print(f"   {'':16} {'private':>8} {'extra':>8} {'pss':>8} {'image rss':>10} {'image private':>14} "
          f"{'page tables':>12}")
    results = {}
    pss_lines = []
    for start in ("fork", "spawn"):
        base = statistics.mean(m["private"] for m in measure_processes(start, "baseline", args.processes, files))
        for what in ("image", "dict"):
            figures = measure_processes(start, what, args.processes, files)
            private = statistics.mean(m["private"] for m in figures)
            results[start, what] = private - base
            pss_lines.append(f"   PSS per process, {start} {what}: "
                             + ", ".join(f"{m['pss']:.1f}" for m in figures) + " MB")
            print(f"   {start + ' ' + what:16} {private:8.1f} {private - base + 0.0:8.1f} "
                  f"{statistics.mean(m['pss'] for m in figures):8.1f} "
                  f"{statistics.mean(m['image_rss'] for m in figures):10.1f} "
                  f"{statistics.mean(m['image_private'] for m in figures):14.1f} "
                  f"{statistics.mean(m['page_tables'] for m in figures):12.2f}")
        print(f"   {start + ' baseline':16} {base:8.1f} {0:8.1f}   (imports the module, does nothing)")
    for start in ("fork", "spawn"):
        image_extra, dict_extra = results[start, "image"] + 0.0, results[start, "dict"] + 0.0
        print(f"   {start}: extra private per process {image_extra:.1f} MB with the image (goal <= 10), "
              f"{dict_extra:.1f} MB with a dict deck ({dict_extra - image_extra:.0f} MB saved per process)")
    print("   (the image's pages are page cache, counted once per node: Shared_Clean while several processes map"
          " them)")
    print(f"   {args.rows:,}-prefix deck, {args.processes} processes alive together (PSS from /proc/<pid>/smaps_rollup:"
          " a page shared by N processes counts 1/N in each)")
    for line in pss_lines:
        print(line)


# ------------------------------------------------------------------------------------------- pytest-benchmark

BENCH_ROWS = int(os.environ.get("TOLLGATE_BENCH_ROWS", "1000000"))


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    rows = generate_rows(BENCH_ROWS)
    path = str(tmp_path_factory.mktemp("deck") / "deck.img")
    deck_image.build_image(path, "odeck", rows)
    table = reference_lpm.check_rows("odeck", rows)
    numbers = generate_numbers(rows, 20_000)  # enough that the deck is not all in the CPU caches
    expected = sum(reference_lpm.longest_match(table, n) is not None for n in numbers)
    rnd = random.Random(SEED + 3)
    randoms = ["".join(rnd.choices(DIGITS, k=11)) for _ in range(20_000)]
    with deck_image.DeckImage(path) as image:
        yield {"path": path, "rows": rows, "table": table, "image": image, "numbers": numbers,
               "expected": expected, "randoms": [n.encode() for n in randoms],
               "randoms_expected": sum(reference_lpm.longest_match(table, n) is not None for n in randoms)}


@pytest.mark.parametrize("implementation", ["cython", "cython-c-path", "reference"])
def test_lookup_20k_numbers(benchmark, deck, implementation):
    numbers, table, image = deck["numbers"], deck["table"], deck["image"]
    if implementation == "cython":
        def run():
            return sum(image.longest_match(n) is not None for n in numbers)
    elif implementation == "cython-c-path":
        encoded = [n.encode() for n in numbers]

        def run():
            return image.count_matches(encoded)
    else:
        def run():
            return sum(reference_lpm.longest_match(table, n) is not None for n in numbers)
    assert benchmark(run) == deck["expected"]


def test_lookup_20k_random_numbers_c_path(benchmark, deck):
    image = deck["image"]
    assert benchmark(image.count_matches, deck["randoms"]) == deck["randoms_expected"]


def test_build_image(benchmark, deck, tmp_path):
    path = str(tmp_path / "rebuilt.img")
    assert benchmark.pedantic(deck_image.build_image, (path, "odeck", deck["rows"]), rounds=3) == BENCH_ROWS


def test_open_image(benchmark, deck):
    def run():
        with deck_image.DeckImage(deck["path"]) as image:
            return len(image)
    assert benchmark(run) == BENCH_ROWS


if __name__ == "__main__":
    main()
