"""The shared rate deck image (fastpath/deck_image.pyx) against its reference twin (fastpath/reference/lpm.py).

Everything runs on real files in temporary directories; the ImageCache tests use real fork and spawn
processes racing for the same image.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import random
import struct
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath import deck_image
from fastpath import snapshot_format as fmt
from fastpath.reference import image as reference_image
from fastpath.reference import lpm as reference_lpm
from fastpath.reference.xxh64 import xxh64

IMPLEMENTATIONS = [pytest.param(deck_image, id="cython"), pytest.param(reference_lpm, id="reference")]
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
TRUNK = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=","), min_size=1, max_size=12)
ALPHABETS = ["0123456789", "420", "4"]  # small alphabets make nested prefixes (4, 44, 442, 4420) likely


def record_strategy(kind: str):
    if kind == "odeck":
        return st.tuples(INT64, INT32, INT64, INT32, INT32, st.lists(TRUNK, max_size=4), INT32)
    return st.tuples(INT64, INT32, INT64, INT32, INT32, INT32, st.text(max_size=8).filter(
        lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)), INT32)


@st.composite
def decks(draw, kind: str) -> list[list]:
    alphabet = draw(st.sampled_from(ALPHABETS))
    bases = draw(st.lists(st.text(alphabet, min_size=1, max_size=18), max_size=12))
    prefixes: set[str] = set()
    for base in bases:
        lengths = draw(st.sets(st.integers(1, len(base)), min_size=1))
        prefixes.update(base[:n] for n in lengths)
    ordered = draw(st.permutations(sorted(prefixes)))
    return [[prefix, *draw(record_strategy(kind))] for prefix in ordered]


@st.composite
def numbers_for(draw, rows: list[list]) -> list:
    prefixes = [row[0] for row in rows] or ["4"]
    digit_tail = st.text("0123456789", max_size=12)
    one = st.one_of(
        st.builds(lambda p, t: p + t, st.sampled_from(prefixes), digit_tail),
        st.text("0123456789", max_size=24),
        st.builds(lambda p, junk, t: p + junk + t, st.sampled_from(prefixes),
                  st.sampled_from(["a", "+", " ", "#", "*", "٤", "é", "\x00", "\ud800"]), digit_tail),
        st.text(max_size=20),
        st.builds(lambda p, t: (p + t).encode(), st.sampled_from(prefixes), digit_tail),
    )
    return draw(st.lists(one, min_size=1, max_size=30))


def reference_table(kind: str, rows: list[list]) -> dict[str, tuple]:
    return reference_lpm.check_rows(kind, rows)


def expected(table: dict[str, tuple], number) -> tuple | None:
    if isinstance(number, bytes):
        number = number.decode("ascii", "replace")
    return reference_lpm.longest_match(table, number)


def odeck_row(prefix: str, rate: int = 1000, trunks: list[str] | None = None) -> list:
    return [prefix, 0, 0, rate, 60, 60, trunks or [], 0]


# ------------------------------------------------------------------------------------------- differential

@pytest.mark.parametrize("kind", ["odeck", "tdeck"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_image_agrees_with_reference(tmp_path, kind, data):
    rows = data.draw(decks(kind))
    path = str(tmp_path / f"{uuid.uuid4().hex}.img")
    assert deck_image.build_image(path, kind, rows) == len(rows)
    table = reference_table(kind, rows)
    with deck_image.DeckImage(path) as image:
        assert len(image) == len(rows) and image.kind == kind
        for row in rows:  # every record round-trips exactly
            assert image.longest_match(row[0]) == (row[0], tuple(row[1:]))
        for number in data.draw(numbers_for(rows)):
            assert image.longest_match(number) == expected(table, number), number
    with open(path, "rb") as f:  # the readable decoder of the layout reads the same rows out of the bytes
        assert reference_image.decode(f.read()) == (kind, sorted(rows))


@pytest.mark.parametrize("kind", ["odeck", "tdeck"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_reference_image_file_agrees(tmp_path, kind, data):
    """The reference's own file round trip gives what its dict gives (it is the bench's dict deck)."""
    rows = data.draw(decks(kind))
    path = str(tmp_path / f"{uuid.uuid4().hex}.json")
    reference_lpm.build_image(path, kind, rows)
    deck = reference_lpm.DeckImage(path)
    table = reference_table(kind, rows)
    for number in data.draw(numbers_for(rows)):
        assert deck.longest_match(number) == expected(table, number)


def test_columns_match_snapshot_format():
    """The image's row layouts are snapshot_format.COLUMNS (the record is the row without the prefix)."""
    assert len(fmt.COLUMNS["odeck"]) == 8 and fmt.COLUMNS["odeck"][6] == "forced_trunks"
    assert len(fmt.COLUMNS["tdeck"]) == 9 and fmt.COLUMNS["tdeck"][6:8] == ("strip", "prepend")


# ------------------------------------------------------------------------------------------- edges

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_round_trip_of_both_kinds(tmp_path, impl):
    big = 2**63 - 1
    odeck = [["44", big, 2**31 - 1, big - 1, 1, 1, [], -(2**31)],
             ["4420", 0, 0, 0, 0, 0, ["t-1", "t-2", "trunk-ü"], 7]]
    tdeck = [["1", -(2**63), 30, 5, 30, 6, 2, "", 1], ["12", 1, 2, 3, 4, 5, 32, "0044", -1]]
    impl.build_image(str(tmp_path / "o"), "odeck", odeck)
    impl.build_image(str(tmp_path / "t"), "tdeck", tdeck)
    o, t = impl.DeckImage(str(tmp_path / "o")), impl.DeckImage(str(tmp_path / "t"))
    assert o.longest_match("4419") == ("44", (big, 2**31 - 1, big - 1, 1, 1, [], -(2**31)))
    assert o.longest_match("44201") == ("4420", (0, 0, 0, 0, 0, ["t-1", "t-2", "trunk-ü"], 7))
    assert t.longest_match("19") == ("1", (-(2**63), 30, 5, 30, 6, 2, "", 1))
    assert t.longest_match("123") == ("12", (1, 2, 3, 4, 5, 32, "0044", -1))
    o.longest_match("44201")[1][5].append("mutated")  # records are copies
    assert o.longest_match("44201")[1][5] == ["t-1", "t-2", "trunk-ü"]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_empty_deck(tmp_path, impl):
    path = str(tmp_path / "empty.img")
    assert impl.build_image(path, "tdeck", []) == 0
    image = impl.DeckImage(path)
    assert len(image) == 0
    assert image.longest_match("4420123456") is None
    assert image.longest_match("") is None


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_eighteen_digits_and_longer_numbers(tmp_path, impl):
    p18 = "123456789012345678"
    rows = [odeck_row(p18, 18), odeck_row(p18[:17], 17), odeck_row("1", 1), odeck_row("0", 0),
            odeck_row("00", 2)]
    path = str(tmp_path / "deck.img")
    impl.build_image(path, "odeck", rows)
    image = impl.DeckImage(path)
    assert image.longest_match(p18)[0] == p18
    assert image.longest_match(p18 + "9999")[0] == p18  # numbers longer than 18 digits
    assert image.longest_match(p18[:17] + "0")[0] == p18[:17]
    assert image.longest_match("19")[0] == "1"
    assert image.longest_match("000")[0] == "00"  # leading zeros are digits: "0" and "00" are different keys
    assert image.longest_match("09")[0] == "0"
    assert image.longest_match("2") is None


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_only_the_leading_digits_count(tmp_path, impl):
    path = str(tmp_path / "deck.img")
    impl.build_image(path, "odeck", [odeck_row("4"), odeck_row("44"), odeck_row("442"), odeck_row("4420")])
    image = impl.DeckImage(path)
    assert image.longest_match("4420555")[0] == "4420"
    assert image.longest_match("44a20")[0] == "44"
    assert image.longest_match("4 420")[0] == "4"
    assert image.longest_match("442٠")[0] == "442"  # Arabic-Indic zero is not an ASCII digit
    assert image.longest_match("+4420") is None
    assert image.longest_match("") is None
    assert image.longest_match(b"44201")[0] == "4420"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("kind", "rows"), [
    ("odeck", [odeck_row("44"), odeck_row("44")]),                          # duplicate
    ("odeck", [odeck_row("1234567890123456789")]),                          # 19 digits
    ("odeck", [odeck_row("")]),
    ("odeck", [odeck_row("44x")]),
    ("odeck", [odeck_row("٤٤")]),
    ("odeck", [[44, 0, 0, 1, 60, 60, [], 0]]),
    ("odeck", [odeck_row("44", rate=2**63)]),                               # overflows int64
    ("odeck", [["44", 0, 2**31, 1, 60, 60, [], 0]]),                        # overflows int32
    ("odeck", [["44", 0, 0, 1.5, 60, 60, [], 0]]),
    ("odeck", [odeck_row("44", trunks=["a,b"])]),
    ("odeck", [odeck_row("44", trunks=[""])]),
    ("odeck", [["44", 0, 0, 1, 60, 60, "t1", 0]]),
    ("odeck", [["44", 0, 0, 1, 60, 60, []]]),                               # short row
    ("tdeck", [odeck_row("44")]),                                           # odeck row in a tdeck
    ("tdeck", [["44", 0, 0, 1, 60, 60, 0, 44, 0]]),                         # prepend not a str
    ("ideck", []),
])
def test_bad_rows_leave_the_old_image(tmp_path, impl, kind, rows):
    path = str(tmp_path / "deck.img")
    impl.build_image(path, "odeck", [odeck_row("1")])
    with pytest.raises(ValueError, match=r"row|kind"):
        impl.build_image(path, kind, rows)
    assert os.listdir(tmp_path) == ["deck.img"]  # no tmp file left behind
    assert impl.DeckImage(path).longest_match("12")[0] == "1"


# ------------------------------------------------------------------------------------------- files

def _good_image(tmp_path) -> tuple[str, bytes]:
    path = str(tmp_path / "deck.img")
    deck_image.build_image(path, "odeck", [odeck_row(str(p), trunks=["t1"]) for p in range(100, 400)])
    with open(path, "rb") as f:
        return path, f.read()


def _patched(data: bytes, offset: int, fmt_: str, value: int) -> bytes:
    return data[:offset] + struct.pack(fmt_, value) + data[offset + struct.calcsize(fmt_):]


@pytest.mark.parametrize(("name", "corrupt"), [
    ("empty", lambda d: b""),
    ("short", lambda d: d[:100]),
    ("truncated", lambda d: d[:-1]),
    ("truncated-half", lambda d: d[: len(d) // 2]),
    ("extended", lambda d: d + b"\0"),
    ("magic", lambda d: b"XXDECKIM" + d[8:]),
    ("format-version", lambda d: _patched(d, 8, "=I", 99)),
    ("kind", lambda d: _patched(d, 12, "=I", 7)),
    ("record-size", lambda d: _patched(d, 20, "=I", 40)),
    ("length-mask", lambda d: _patched(d, 28, "=I", 1 << 25)),
    ("count", lambda d: _patched(d, 32, "=Q", 10**6)),
    ("slot-count", lambda d: _patched(d, 40, "=Q", 3)),
    ("records-offset", lambda d: _patched(d, 56, "=Q", 64)),
    ("table-offset-wraps", lambda d: _patched(d, 48, "=Q", 2**64 - 64)),
    ("garbage", lambda d: bytes(range(256)) * (len(d) // 256 + 1)),
])
def test_a_bad_file_raises_value_error(tmp_path, name, corrupt):
    path, data = _good_image(tmp_path)
    with open(path, "wb") as f:
        f.write(corrupt(data))
    with pytest.raises(ValueError, match=r"deck\.img"):
        deck_image.DeckImage(path)


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        deck_image.DeckImage(str(tmp_path / "nothing.img"))


def test_a_corrupt_table_or_pool_cannot_read_out_of_bounds(tmp_path):
    """Record indexes and string ranges are checked at lookup time, so a bit flip gives no answer, not a crash."""
    path = str(tmp_path / "deck.img")
    deck_image.build_image(path, "odeck", [odeck_row("44", trunks=["t1"])])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    (records_offset,) = struct.unpack_from("=Q", data, 56)
    slot = next(o for o in range(128, records_offset, 16) if struct.unpack_from("=Q", data, o)[0] == 144)
    bad_index = bytearray(data)
    struct.pack_into("=I", bad_index, slot + 8, 5)
    with open(path, "wb") as f:
        f.write(bad_index)
    assert deck_image.DeckImage(path).longest_match("44") is None
    bad_string = bytearray(data)
    struct.pack_into("=I", bad_string, records_offset + 40, 1000)  # RateRec.str_offset
    with open(path, "wb") as f:
        f.write(bad_string)
    with pytest.raises(ValueError, match="outside the pool"):
        deck_image.DeckImage(path).longest_match("44")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_atomic_replace_keeps_the_old_mapping_readable(tmp_path, impl):
    path = str(tmp_path / "deck.img")
    impl.build_image(path, "odeck", [odeck_row("44", 1), odeck_row("4420", 2)])
    old = impl.DeckImage(path)
    impl.build_image(path, "odeck", [odeck_row("44", 10), odeck_row("33", 30)])
    new = impl.DeckImage(path)
    assert old.longest_match("44201") == ("4420", (0, 0, 2, 60, 60, [], 0))
    assert new.longest_match("44201") == ("44", (0, 0, 10, 60, 60, [], 0))
    assert new.longest_match("331")[0] == "33" and old.longest_match("331") is None
    os.unlink(path)
    assert old.longest_match("4") is None and old.longest_match("441")[1][2] == 1
    assert os.listdir(tmp_path) == []


def test_close_unmaps_and_later_lookups_fail(tmp_path):
    path = str(tmp_path / "deck.img")
    deck_image.build_image(path, "odeck", [odeck_row("44")])
    image = deck_image.DeckImage(path)
    assert image.size == os.path.getsize(path) and not image.closed
    image.close()
    image.close()
    assert image.closed and image.size == 0
    with pytest.raises(ValueError, match="closed"):
        image.longest_match("44")
    with deck_image.DeckImage(path) as again:
        assert again.longest_match("441")[0] == "44"
    assert again.closed
    image.__init__(path)  # re-opening an instance maps again
    assert image.longest_match("44")[0] == "44"


def test_pickles_by_path_and_counts_matches(tmp_path):
    path = str(tmp_path / "deck.img")
    deck_image.build_image(path, "tdeck", [["44", 0, 0, 1, 60, 60, 2, "9", 0]])
    image = pickle.loads(pickle.dumps(deck_image.DeckImage(path)))
    assert image.longest_match("4499") == ("44", (0, 0, 1, 60, 60, 2, "9", 0))
    assert image.count_matches([b"4499", b"4", b"44", b"x44"]) == 2
    with pytest.raises(TypeError):
        image.longest_match(4499)


def test_lookups_are_fast_enough_to_matter(tmp_path):
    """A smoke check, not the bench: the C path must beat the dict loop clearly even on a small deck."""
    rows = [odeck_row(str(p)) for p in range(10_000, 30_000)]
    path = str(tmp_path / "deck.img")
    deck_image.build_image(path, "odeck", rows)
    image = deck_image.DeckImage(path)
    table = reference_lpm.check_rows("odeck", rows)
    numbers = [f"{n}987654321" for n in range(10_000, 30_000)]
    encoded = [n.encode() for n in numbers]
    started = time.perf_counter()
    assert image.count_matches(encoded) == len(numbers)
    image_seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert all(reference_lpm.longest_match(table, n) for n in numbers)
    reference_seconds = time.perf_counter() - started
    assert image_seconds * 3 < reference_seconds


# ------------------------------------------------------------------------------------------- ImageCache

FAMILY = "odeck:gold.v2"
NUMBERS = ["4420712345", "44", "4", "33123", "1", "", "x44"]
ROWS_V1 = [odeck_row("4", 1), odeck_row("44", 2), odeck_row("4420", 3, ["t1"])]
ROWS_V2 = [odeck_row("4", 10), odeck_row("33", 30)]


def load_image_counted(impl, marker_dir: str, rows: list[list], delay: float = 0.0) -> bytes:
    """load_image for the cache: leaves one marker file per call, so the test can count builds."""
    with open(os.path.join(marker_dir, f"build-{os.getpid()}-{uuid.uuid4().hex}"), "w"):
        pass
    time.sleep(delay)  # widen the race window
    return impl.encode_image("odeck", rows)


def cache_worker(impl_name: str, directory: str, marker_dir: str, barrier, results, version: int,
                 rows: list[list]) -> None:
    impl = {"cython": deck_image, "reference": reference_lpm}[impl_name]
    cache = impl.ImageCache(directory)
    barrier.wait(timeout=30)
    image = cache.get(FAMILY, version, "odeck", functools.partial(load_image_counted, impl, marker_dir, rows, 0.3))
    results.put((os.getpid(), [image.longest_match(n) for n in NUMBERS]))


def builds(marker_dir) -> int:
    return sum(name.startswith("build-") for name in os.listdir(marker_dir))


@pytest.mark.parametrize("impl_name", ["cython", "reference"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_build_an_image_once(tmp_path, method, impl_name):
    ctx = multiprocessing.get_context(method)
    directory, markers = tmp_path / "images", tmp_path / "markers"
    markers.mkdir()
    barrier, results = ctx.Barrier(3), ctx.Queue()
    workers = [ctx.Process(target=cache_worker,
                           args=(impl_name, str(directory), str(markers), barrier, results, 7, ROWS_V1))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert builds(markers) == 1
    assert len({pid for pid, _ in answers}) == 3
    table = reference_lpm.check_rows("odeck", ROWS_V1)
    assert all(lookups == [expected(table, n) for n in NUMBERS] for _, lookups in answers)
    boot = reference_lpm.ImageCache(str(directory)).directory  # both implementations use the same one
    assert sorted(os.listdir(boot)) == ["odeck%3Agold%2Ev2.7.img", "odeck%3Agold%2Ev2.lock"]


def test_a_new_version_unlinks_the_old_file_while_old_mappings_answer(tmp_path):
    directory, markers = tmp_path / "images", tmp_path / "markers"
    markers.mkdir()
    cache = deck_image.ImageCache(str(directory))
    neighbour = deck_image.ImageCache(str(directory)).get(  # a family whose name extends ours: left alone
        FAMILY + "x", 1, "odeck", lambda: deck_image.encode_image("odeck", ROWS_V2))
    v1 = cache.get(FAMILY, 1, "odeck", functools.partial(load_image_counted, deck_image, str(markers), ROWS_V1))
    assert cache.get(FAMILY, 1, "odeck", lambda: pytest.fail("mapped already")) is v1
    boot = Path(cache.directory)
    (boot / "odeck%3Agold%2Ev2.1.img.tmp-999999").write_bytes(b"left by a crashed build")

    # Another process of the node moves the family to version 2.
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(1), ctx.Queue()
    child = ctx.Process(target=cache_worker,
                        args=("cython", str(directory), str(markers), barrier, results, 2, ROWS_V2))
    child.start()
    _, child_lookups = results.get(timeout=60)
    child.join(timeout=30)
    assert builds(markers) == 2
    assert sorted(os.listdir(boot)) == [
        "odeck%3Agold%2Ev2.2.img", "odeck%3Agold%2Ev2.lock", "odeck%3Agold%2Ev2x.1.img", "odeck%3Agold%2Ev2x.lock"]
    # Our old mapping still answers from version 1; asking for version 2 maps the child's build.
    assert v1.longest_match("4420712345") == ("4420", (0, 0, 3, 60, 60, ["t1"], 0))
    v2 = cache.get(FAMILY, 2, "odeck", lambda: pytest.fail("the child built it"))
    assert [v2.longest_match(n) for n in NUMBERS] == child_lookups
    assert v2.longest_match("4420712345") == ("4", (0, 0, 10, 60, 60, [], 0))
    assert v1.longest_match("44")[0] == "44" and cache.builds == 1
    assert neighbour.longest_match("331")[0] == "33"


def test_cache_rebuilds_a_corrupt_file_and_checks_arguments(tmp_path):
    cache = deck_image.ImageCache(str(tmp_path))
    path = cache.path_for("tdeck:carrier/1", 3)
    assert os.path.basename(path) == "tdeck%3Acarrier%2F1.3.img"
    with open(path, "wb") as f:
        f.write(b"not an image")
    image = cache.get("tdeck:carrier/1", 3, "tdeck",
                      lambda: deck_image.encode_image("tdeck", [["1", 0, 0, 5, 1, 1, 0, "", 0]]))
    assert image.longest_match("12")[1][2] == 5 and cache.builds == 1
    with pytest.raises(ValueError):
        cache.get("tdeck:x", -1, "tdeck", list)
    with pytest.raises(ValueError):
        cache.get("tdeck:x", 1, "zdeck", list)
    with pytest.raises(ValueError):
        cache.get("", 1, "tdeck", list)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_the_cache_keeps_nothing_that_is_not_an_image_of_the_kind(tmp_path, impl):
    cache = impl.ImageCache(str(tmp_path))
    with pytest.raises(ValueError):
        cache.get("odeck:x", 1, "odeck", lambda: b"not an image")
    with pytest.raises(ValueError, match="tdeck"):
        cache.get("odeck:x", 1, "odeck", lambda: impl.encode_image("tdeck", [["1", 0, 0, 5, 1, 1, 0, "", 0]]))
    assert [n for n in os.listdir(cache.directory) if ".img" in n] == [] and cache.builds == 0

    def fails_halfway():
        yield impl.encode_image("odeck", [odeck_row("44")])[:100]
        raise ValueError("the source broke")

    with pytest.raises(ValueError, match="the source broke"):
        cache.get("odeck:x", 1, "odeck", fails_halfway)
    assert [n for n in os.listdir(cache.directory) if ".img" in n] == []


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_images_of_an_earlier_boot_are_never_opened(tmp_path, impl):
    """Images are not fsynced (a cache of Redis), so a crash may leave one torn: the next boot starts afresh."""
    earlier = tmp_path / "boot-00000000-0000-0000-0000-000000000000"
    earlier.mkdir()
    impl.build_image(str(earlier / "odeck%3Agold.1.img"), "odeck", [odeck_row("44", 1)])
    cache = impl.ImageCache(str(tmp_path))
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert cache.directory == str(tmp_path / f"boot-{f.read().strip()}")
    assert os.listdir(tmp_path) == [os.path.basename(cache.directory)]
    image = cache.get("odeck:gold", 1, "odeck", lambda: impl.encode_image("odeck", [odeck_row("44", 2)]))
    assert image.longest_match("441")[1][2] == 2 and cache.builds == 1


def test_rows_added_in_batches_make_the_same_image():
    rows = nested_rows(5_000, seed=3)
    builder = deck_image.DeckBuilder("odeck")
    for start in range(0, len(rows), 1_234):
        builder.add(rows[start:start + 1_234])
    assert len(builder) == len(rows)
    assert builder.finish() == deck_image.encode_image("odeck", rows)
    with pytest.raises(ValueError, match="finished"):
        builder.add([odeck_row("1")])
    assert deck_image.DeckBuilder("tdeck").finish() == deck_image.encode_image("tdeck", [])


@pytest.mark.parametrize(("batches", "message"), [
    ([[odeck_row("44"), odeck_row("1")], [odeck_row("2"), odeck_row("44")]], r"^row 3: prefix '44' already on row 0"),
    ([[odeck_row("44")], [odeck_row("1"), ["5", 0, 0, 1.5, 1, 1, [], 0]]], r"^row 2: rate_per_min"),
    ([[odeck_row("7")], [odeck_row("7"), odeck_row("x")]], r"^row 1: prefix '7' already on row 0"),
])
def test_rows_are_numbered_across_batches(batches, message):
    builder = deck_image.DeckBuilder("odeck")
    with pytest.raises(ValueError, match=message):  # from add() or from finish(), whichever meets it
        for batch in batches:
            builder.add(batch)
        builder.finish()
    with pytest.raises(ValueError, match="failed"):
        builder.finish()


# ------------------------------------------------------------------------------------------- chunk digest

@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cut=st.integers(0, 300))
def test_the_chunk_digest_is_xxh64_as_its_reference_computes_it(data, cut):
    assert deck_image.digest64(data) == xxh64(data)
    assert deck_image.digest64(memoryview(data)[cut:]) == xxh64(data[cut:])


def test_the_chunk_digest_has_the_published_xxh64_values():
    vectors = {b"": 0xEF46DB3751D8E999, b"a": 0xD24EC4F1A98C6E5B, b"abc": 0x44BC2CF5AD770999,
               b"Nobody inspects the spammish repetition": 0xFBCEA83C8A378BF1}
    for data, digest in vectors.items():
        assert deck_image.digest64(data) == digest == xxh64(data)
    big = random.Random(1).randbytes(1 << 16)
    assert deck_image.digest64(bytearray(big)) == xxh64(big)


# ------------------------------------------------------------------------------------------- the layout (format 2)
#
# ImageHeader: the fields below, native order; then Entry[count] (Slot + RateRec, 64 bytes each) at table_offset,
# LevelEntry[10**D] (lengths, short_entry), uint16 pilots, uint32 remap, string pool (see deck_image.pyx).

HEADER = struct.Struct("=8s6I7Q2I5Q2I")
HEADER_FIELDS = ("magic", "format_version", "kind", "header_size", "record_size", "slot_size", "length_mask", "count",
                 "slot_count", "table_offset", "records_offset", "strings_offset", "strings_size", "file_size",
                 "byte_order", "level_digits", "level_offset", "pilot_offset", "pilot_count", "remap_offset",
                 "hash_seed", "entry_size", "level_entry_size")
FIELD_OFFSETS = {"level_digits": 92, "level_offset": 96, "pilot_offset": 104, "pilot_count": 112, "remap_offset": 120,
                 "entry_size": 136, "slot_count": 40}


def read_header(path: str) -> dict:
    with open(path, "rb") as f:
        return dict(zip(HEADER_FIELDS, HEADER.unpack(f.read(HEADER.size)), strict=True))


def nested_rows(count: int, seed: int) -> list[list]:
    """A deck of `count` nested prefixes (1 to 14 digits, a few short ones spanning many level buckets)."""
    rnd = random.Random(seed)
    prefixes = ["7", "70", "0", "00", "3", "34", "349"]
    seen = set(prefixes)
    while len(prefixes) < count:
        parent = prefixes[int(len(prefixes) * rnd.random() ** 3)] if rnd.random() < 0.9 else ""
        child = parent + "".join(rnd.choices("0123456789", k=rnd.choice((1, 1, 2, 3))))
        if len(child) <= 14 and child not in seen:
            seen.add(child)
            prefixes.append(child)
    rnd.shuffle(prefixes)
    return [odeck_row(p, rate=i, trunks=["t"] if i % 7 == 0 else None) for i, p in enumerate(prefixes[:count])]


def numbers_near(rows: list[list], count: int, seed: int) -> list[str]:
    """Deck prefixes plus random tails, their truncations (fewer digits than the level), and random numbers."""
    rnd = random.Random(seed)
    numbers = []
    for _ in range(count):
        prefix = rows[rnd.randrange(len(rows))][0]
        numbers.append(prefix + "".join(rnd.choices("0123456789", k=rnd.randint(0, 8))))
        numbers.append(prefix[:rnd.randint(0, len(prefix))])
        numbers.append("".join(rnd.choices("0123456789", k=rnd.randint(1, 20))))
    return numbers


@pytest.mark.parametrize(("count", "digits"), [(60, 1), (999, 1), (1_000, 2), (5_000, 2), (40_000, 3), (120_000, 4)])
def test_large_nested_decks_agree_with_reference(tmp_path, count, digits):
    rows = nested_rows(count, seed=count)
    path = str(tmp_path / "deck.img")
    assert deck_image.build_image(path, "odeck", rows) == count
    header = read_header(path)
    assert header["level_digits"] == digits == deck_image._level_digits_for(count)
    table = reference_table("odeck", rows)
    with deck_image.DeckImage(path) as image:
        for row in rows[:20_000]:
            assert image.longest_match(row[0]) == (row[0], tuple(row[1:]))
        numbers = numbers_near(rows, 3_000, seed=count + 1)
        assert [image.longest_match(n) for n in numbers] == [expected(table, n) for n in numbers]
        encoded = [n.encode() for n in numbers]
        assert image.count_matches(encoded) == sum(expected(table, n) is not None for n in numbers)


def test_level_digits_grow_with_the_deck_and_stop_at_five():
    assert [deck_image._level_digits_for(n) for n in (0, 1, 999, 1_000, 9_999, 10_000, 99_999, 100_000, 999_999,
                                                      1_000_000, 10**7)] == [1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_entries_sit_at_their_perfect_hash_positions(tmp_path):
    """Every prefix has one 64-byte entry: its key, its own position as index, its record; the sections follow."""
    rows = nested_rows(3_000, seed=3)
    path = str(tmp_path / "deck.img")
    deck_image.build_image(path, "odeck", rows)
    header = read_header(path)
    with open(path, "rb") as f:
        data = f.read()
    count = header["count"]
    assert header["format_version"] == deck_image.FORMAT_VERSION == 2
    assert header["table_offset"] == 192 and header["records_offset"] == 192 + 16 and header["entry_size"] == 64
    assert count <= header["slot_count"] <= count + count // 32 + 1
    assert header["pilot_count"] == count // 4 + 1 and header["level_entry_size"] == 8
    assert header["level_offset"] == -(-(192 + 64 * count) // 64) * 64
    assert header["pilot_offset"] == -(-(header["level_offset"] + 8 * 10 ** header["level_digits"]) // 64) * 64
    assert header["file_size"] == len(data) == header["strings_offset"] + header["strings_size"]
    keys = set()
    for position in range(count):
        key, index, reserved = struct.unpack_from("=QII", data, 192 + 64 * position)
        assert index == position and reserved == 0
        keys.add(key)
    assert keys == {int("1" + row[0]) for row in rows}
    # The level: bucket v lists the lengths that can match a number starting with v's digits.
    digits = header["level_digits"]
    prefixes = {row[0] for row in rows}
    for bucket in random.Random(4).sample(range(10**digits), min(200, 10**digits)):
        head = str(bucket).zfill(digits)
        lengths, short_entry = struct.unpack_from("=II", data, header["level_offset"] + 8 * bucket)
        short = [n for n in range(1, digits + 1) if head[:n] in prefixes]
        longer = {len(p) for p in prefixes if len(p) > digits and p.startswith(head)}
        assert lengths == sum(1 << n for n in {*short[-1:], *longer})
        if short:
            key, = struct.unpack_from("=Q", data, 192 + 64 * (short_entry - 1))
            assert key == int("1" + head[:short[-1]])
        else:
            assert short_entry == 0


def _corrupted(path: str, patch) -> None:
    with open(path, "rb") as f:
        data = bytearray(f.read())
    patch(data, read_header(path))
    with open(path, "wb") as f:
        f.write(data)


def _fill(data: bytearray, offset: int, size: int, value: int, fmt_: str) -> None:
    step = struct.calcsize(fmt_)
    for at in range(offset, offset + size, step):
        struct.pack_into(fmt_, data, at, value)


@pytest.mark.parametrize("name", ["level-all-lengths", "level-short-out-of-range", "level-short-wrong-entry",
                                  "pilots", "remap", "entry-index"])
def test_corrupt_sections_give_no_answer_or_a_genuine_one(tmp_path, name):
    """Positions read from the file are range-checked and keys compared, so a corrupt level, pilot or remap can
    lose candidates (no answer, or a shorter prefix than the longest) but never reads out of bounds or returns
    a record under another prefix."""
    rows = nested_rows(5_000, seed=5)
    path = str(tmp_path / "deck.img")
    deck_image.build_image(path, "odeck", rows)
    header = read_header(path)
    assert header["slot_count"] > header["count"]  # the remap section is not empty
    level, levels = header["level_offset"], 8 * 10 ** header["level_digits"]
    patches = {
        "level-all-lengths": lambda d, h: _fill(d, level, levels, 0x7FFFE, "=I4x"),
        "level-short-out-of-range": lambda d, h: _fill(d, level + 4, levels - 4, 0xFFFFFFFF, "=I4x"),
        "level-short-wrong-entry": lambda d, h: _fill(d, level + 4, levels - 4, 7, "=I4x"),
        "pilots": lambda d, h: d.__setitem__(slice(h["pilot_offset"], h["remap_offset"]),
                                             random.Random(1).randbytes(h["remap_offset"] - h["pilot_offset"])),
        "remap": lambda d, h: _fill(d, h["remap_offset"], 4 * (h["slot_count"] - h["count"]), 0xFFFFFFFF, "=I"),
        "entry-index": lambda d, h: [struct.pack_into("=I", d, 192 + 64 * p + 8, (p + 1) % h["count"])
                                     for p in range(h["count"])],
    }
    _corrupted(path, patches[name])
    table = reference_table("odeck", rows)
    numbers = numbers_near(rows, 2_000, seed=6) + [row[0] for row in rows]
    with deck_image.DeckImage(path) as image:
        answers = [image.longest_match(n) for n in numbers]
    for number, answer in zip(numbers, answers, strict=True):
        assert answer is None or (number.startswith(answer[0]) and answer == (answer[0], table[answer[0]]))
    if name == "entry-index":
        assert answers == [None] * len(numbers)
    assert sum(a == expected(table, n) for n, a in zip(numbers, answers, strict=True)) > 0  # it still looks up


@pytest.mark.parametrize(("field", "value"), [
    ("level_digits", 0), ("level_digits", 7), ("level_offset", 1 << 40), ("pilot_offset", 64),
    ("pilot_count", 0), ("pilot_count", 10**6), ("remap_offset", 0), ("slot_count", 2 * 300 + 2),
    ("slot_count", 299), ("entry_size", 56),
])
def test_a_bad_layout_field_raises_value_error(tmp_path, field, value):
    path, data = _good_image(tmp_path)
    fmt_ = "=I" if field in ("level_digits", "entry_size") else "=Q"
    with open(path, "wb") as f:
        f.write(_patched(data, FIELD_OFFSETS[field], fmt_, value))
    with pytest.raises(ValueError, match=r"deck\.img"):
        deck_image.DeckImage(path)


def test_an_image_of_the_previous_format_is_rebuilt_by_the_cache(tmp_path):
    cache = deck_image.ImageCache(str(tmp_path))
    path = cache.path_for("odeck:old", 1)
    deck_image.build_image(path, "odeck", [odeck_row("44", 1)])
    with open(path, "r+b") as f:  # what a format-1 build left behind, as far as the header tells
        f.seek(8)
        f.write(struct.pack("=I", 1))
    with pytest.raises(ValueError, match="format version 1"):
        deck_image.DeckImage(path)
    image = cache.get("odeck:old", 1, "odeck", lambda: [deck_image.encode_image("odeck", [odeck_row("44", 2)])])
    assert cache.builds == 1 and image.longest_match("441")[1][2] == 2
    assert read_header(path)["format_version"] == 2


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(("rows", "row"), [
    ([odeck_row("1"), odeck_row("44"), odeck_row("2"), odeck_row("44"), odeck_row("3"), ["5", 0, 0, 1.5, 1, 1, [], 0]],
     3),                                                                     # the duplicate comes first
    ([odeck_row("1"), odeck_row("44"), ["5", 0, 0, 1.5, 1, 1, [], 0], odeck_row("44")], 2),   # the bad type does
    ([odeck_row("9"), odeck_row("44"), odeck_row("7"), odeck_row("7"), odeck_row("44")], 3),  # the first duplicate
    ([odeck_row("44"), ["44", 0, 0, 1.5, 1, 1, [], 0]], 1),                  # a row with both: its columns first
])
def test_the_first_bad_row_is_named(tmp_path, impl, rows, row):
    with pytest.raises(ValueError, match=rf"^row {row}\b"):
        impl.build_image(str(tmp_path / "deck.img"), "odeck", rows)


def test_the_perfect_hash_retries_with_a_wider_range(tmp_path, monkeypatch):
    rows = [odeck_row(str(p), rate=p) for p in range(10_000, 12_000)]
    path = str(tmp_path / "deck.img")
    monkeypatch.setattr(deck_image, "_pilot_limit", 64)  # too few pilots for a range of ~0.97 load
    deck_image.build_image(path, "odeck", rows)
    assert read_header(path)["slot_count"] == 2 * len(rows) + 1
    with deck_image.DeckImage(path) as image:
        assert all(image.longest_match(row[0] + "55") == (row[0], tuple(row[1:])) for row in rows)
        assert image.longest_match("9999") is None
    monkeypatch.setattr(deck_image, "_pilot_limit", 0)  # no pilot at all: the build fails, the old image stays
    with pytest.raises(ValueError, match="no perfect hash"):
        deck_image.build_image(path, "odeck", [odeck_row("1")])
    assert os.listdir(tmp_path) == ["deck.img"]
    assert deck_image.DeckImage(path).longest_match("10000")[0] == "10000"
