# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A rate deck as a compact read-only file that every process of the node maps and shares.

One image holds one origination ('odeck') or termination ('tdeck') deck. Layout (native byte order,
sections 64-byte aligned; the structs are declared in deck_image.pxd):

    ImageHeader (144 bytes, padded to 192)
    Entry[count]            one 64-byte line per prefix: Slot {key = int('1' + prefix), index = own position}
                            then its RateRec; records_offset = table_offset + sizeof(Slot) (stride 64)
    LevelEntry[10**D]       the direct level: one bucket per value of a number's first D digits
    uint16_t[pilot_count]   the pilots of the perfect hash (about one per 4 prefixes)
    uint32_t[slot_count - count]  the remap of the perfect hash (positions >= count -> free ones below)
    string pool             forced trunks joined by ',' (odeck) / prepend digits (tdeck), de-duplicated

The entries are placed by a minimal perfect hash of the keys (PTHash-like: h = mix(key + seed); the
bucket floor(h * pilot_count / 2**64) has a 16-bit pilot, chosen at build time so that the bucket's keys
land on free positions; position = floor(mix(h ^ pilot * golden) * slot_count / 2**64), and positions
>= count go through the remap), so the entry of a prefix is one computed position: no probing, and the
key and the record come in the same cache line.

A lookup takes the number's leading run of ASCII digits (at most 18). When it has at least D of them,
the bucket of its first D digits says which prefix lengths can match: the longest prefix of at most D
digits that does match (exactly, with its entry), and the longer lengths that some prefix under the
bucket has. Only those candidates are hashed; all their entries are prefetched at once, then compared
longest first: one round of cache misses in parallel, instead of probes and then a record. Numbers of
fewer than D digits try every length the deck has (header length_mask).

D grows with the deck (10**(D+1) <= count, 1 <= D <= 5): about ten or more prefixes per bucket and a
level of 8 * 10**D bytes (800 kB for a million prefixes), small enough to stay in the CPU caches.

Who does what: the control service's publisher lays the image out once per deck version (DeckBuilder,
fed the rows batch by batch) and puts its bytes in Redis (fastpath/snapshot_format.py); a fast-path process
streams those bytes into a file of its node's ImageCache and maps it (DeckImage). digest64 checks each
chunk on the way. build_image writes an image from rows directly, for tests, benches and tools.

The reference twin is fastpath/reference/lpm.py (a dict and a loop); tests/test_deck_image.py checks
that both agree. fastpath/reference/image.py reads the rows back out of an image's bytes with struct:
the layout's readable statement.
"""

import errno as _errno
import fcntl
import os
import re
import shutil
import sys

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from libc.errno cimport errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, mmap, munmap

cdef extern from *:
    """
    #include <stdint.h>
    #define TG_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 0)
    #define TG_HIGHEST_BIT(m) (31 - __builtin_clz((unsigned int)(m)))
    #define TG_LOWEST_BIT(m) (__builtin_ctz((unsigned int)(m)))
    /* splitmix64's finalizer: a bijection of 64-bit words that mixes every bit into every other. */
    static inline uint64_t tg_mix(uint64_t x) {
        x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27; x *= 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }
    /* floor(h * n / 2**64): a uniform h mapped onto [0, n) without a division. */
    static inline uint64_t tg_range(uint64_t h, uint64_t n) {
    #if defined(__SIZEOF_INT128__)
        return (uint64_t)(((unsigned __int128)h * n) >> 64);
    #else
        uint64_t a0 = (uint32_t)h, a1 = h >> 32, b0 = (uint32_t)n, b1 = n >> 32;
        uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
        uint64_t middle = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;
        return p11 + (p01 >> 32) + (p10 >> 32) + (middle >> 32);
    #endif
    }
    /* XXH64 with seed 0, as published (github.com/Cyan4973/xxHash, doc/xxhash_spec.md): words are read
       little-endian whatever the machine, so the digest of a chunk is the same everywhere. */
    #define TG_P1 0x9E3779B185EBCA87ULL
    #define TG_P2 0xC2B2AE3D27D4EB4FULL
    #define TG_P3 0x165667B19E3779F9ULL
    #define TG_P4 0x85EBCA77C2B2AE63ULL
    #define TG_P5 0x27D4EB2F165667C5ULL
    static inline uint64_t tg_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
    static inline uint64_t tg_read64(const unsigned char* p) {
        uint64_t v; memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    static inline uint64_t tg_read32(const unsigned char* p) {
        uint32_t v; memcpy(&v, p, 4);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        return v;
    }
    static inline uint64_t tg_xxround(uint64_t acc, uint64_t input) {
        return tg_rotl(acc + input * TG_P2, 31) * TG_P1;
    }
    static inline uint64_t tg_xxmerge(uint64_t acc, uint64_t lane) {
        return (acc ^ tg_xxround(0, lane)) * TG_P1 + TG_P4;
    }
    static uint64_t tg_xxh64(const unsigned char* p, size_t length) {
        const unsigned char* end = p + length;
        uint64_t h;
        if (length >= 32) {
            const unsigned char* limit = end - 32;
            uint64_t v1 = TG_P1 + TG_P2, v2 = TG_P2, v3 = 0, v4 = -TG_P1;
            do {
                v1 = tg_xxround(v1, tg_read64(p));
                v2 = tg_xxround(v2, tg_read64(p + 8));
                v3 = tg_xxround(v3, tg_read64(p + 16));
                v4 = tg_xxround(v4, tg_read64(p + 24));
                p += 32;
            } while (p <= limit);
            h = tg_rotl(v1, 1) + tg_rotl(v2, 7) + tg_rotl(v3, 12) + tg_rotl(v4, 18);
            h = tg_xxmerge(h, v1); h = tg_xxmerge(h, v2); h = tg_xxmerge(h, v3); h = tg_xxmerge(h, v4);
        } else {
            h = TG_P5;
        }
        h += (uint64_t)length;
        for (; p + 8 <= end; p += 8) h = tg_rotl(h ^ tg_xxround(0, tg_read64(p)), 27) * TG_P1 + TG_P4;
        if (p + 4 <= end) { h = tg_rotl(h ^ (tg_read32(p) * TG_P1), 23) * TG_P2 + TG_P3; p += 4; }
        for (; p < end; p++) h = tg_rotl(h ^ (*p * TG_P5), 11) * TG_P1;
        h ^= h >> 33; h *= TG_P2; h ^= h >> 29; h *= TG_P3; h ^= h >> 32;
        return h;
    }
    """
    void TG_PREFETCH(const void* p) nogil
    bint PyUnicode_IS_ASCII(object text)
    void* PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    int TG_HIGHEST_BIT(uint32_t m) nogil
    int TG_LOWEST_BIT(uint32_t m) nogil
    uint64_t tg_mix(uint64_t x) nogil
    uint64_t tg_range(uint64_t h, uint64_t n) nogil
    uint64_t tg_xxh64(const unsigned char* p, size_t length) nogil

cdef enum:
    MAX_DIGITS = 18
    MAX_LEVEL_DIGITS = 5          # what build_image picks at most (a level of 800 kB)
    READ_LEVEL_DIGITS = 6         # what an image may say (a bound on the level's size, 8 MB)
    PLACE_OK = 0
    PLACE_FAILED = 1              # some bucket found no pilot: retry with another seed / a wider range
    PLACE_DUPLICATE = 2           # two equal hashes, i.e. two equal keys
    PLACE_NO_MEMORY = 3

FORMAT_VERSION = 2
MAX_PREFIX_DIGITS = MAX_DIGITS
# The images this build writes and maps, named for the projection's snapshot header: a process whose build
# maps another layout refuses a deck before reading it (fastpath/snapshot_format.py).
IMAGE_LAYOUT = (f"deck image {FORMAT_VERSION}, {sys.byteorder}-endian, header {sizeof(ImageHeader)}, "
                f"entry {sizeof(Entry)}, record {sizeof(RateRec)}, level entry {sizeof(LevelEntry)}")

cdef const char* MAGIC = b"TGDECKIM"
cdef uint32_t _FORMAT_VERSION = 2
cdef uint32_t BYTE_ORDER = 0x01020304
cdef uint64_t HEADER_SPACE = 192
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL
cdef uint64_t SEED_BASE = 0x7467646B696D6732ULL     # "tgdkimg2"
cdef uint32_t KIND_ODECK = 1
cdef uint32_t KIND_TDECK = 2
cdef uint32_t ALL_LENGTHS = 0x7FFFE        # bits 1..18
cdef uint64_t MAX_ENTRIES = 0x7FFFFFFF
cdef uint32_t PILOT_LIMIT = 65536          # pilots are uint16
cdef uint64_t[MAX_DIGITS + 2] POW10
cdef int _n
POW10[0] = 1
for _n in range(1, MAX_DIGITS + 2):
    POW10[_n] = POW10[_n - 1] * 10

# Range of the perfect hash per build attempt, as count + count // divisor + 1: load ~0.97 first, then
# wider (easier) ranges should the pilot search ever fail (it has never been seen to at 0.97).
_RANGE_DIVISORS = (32, 32, 32, 8, 8, 1)
_pilot_limit = PILOT_LIMIT                 # tests lower it to exercise the retries

_KIND_CODES = {"odeck": 1, "tdeck": 2}
_KIND_NAMES = {1: "odeck", 2: "tdeck"}
# Snapshot columns (fastpath.snapshot_format.COLUMNS) per kind, including the prefix.
_KIND_COLUMNS = {"odeck": 8, "tdeck": 9}
_ODECK_NAMES = ("prefix", "connect_fee", "included_seconds", "rate_per_min", "initial_increment", "increment",
                "forced_trunks", "priority")
_TDECK_NAMES = ("prefix", "connect_fee", "included_seconds", "rate_per_min", "initial_increment", "increment",
                "strip", "prepend", "priority")


cdef inline uint64_t _align64(uint64_t offset) noexcept nogil:
    return (offset + 63) & ~(<uint64_t>63)


cdef inline uint64_t _slot_of(uint64_t h, uint16_t pilot, uint64_t slot_count) noexcept nogil:
    """The position in [0, slot_count) of the key hashed to h, under its bucket's pilot."""
    return tg_range(tg_mix(h ^ (<uint64_t>pilot * GOLDEN)), slot_count)


# ---------------------------------------------------------------------------------------------- build

cdef uint64_t _prefix_key(object prefix, Py_ssize_t row) except 0:
    """int('1' + prefix) for a 1..18 ASCII digit string; ValueError naming the row otherwise."""
    cdef const char* data
    cdef Py_ssize_t length, i
    cdef uint64_t key = 1
    if type(prefix) is not str:
        raise ValueError(f"row {row}: prefix {prefix!r} is not a string")
    data = PyUnicode_AsUTF8AndSize(prefix, &length)
    if length < 1 or length > MAX_DIGITS:
        raise ValueError(f"row {row}: prefix {prefix!r} must be 1 to {MAX_PREFIX_DIGITS} digits")
    for i in range(length):
        if data[i] < c'0' or data[i] > c'9':
            raise ValueError(f"row {row}: prefix {prefix!r} must be 1 to {MAX_PREFIX_DIGITS} digits")
        key = key * 10 + <uint64_t>(data[i] - c'0')
    return key


cdef int64_t _int64(object value, Py_ssize_t row, str column) except? -1:
    if type(value) is not int:
        raise ValueError(f"row {row}: {column} {value!r} is not an integer")
    try:
        return value
    except OverflowError:
        raise ValueError(f"row {row}: {column} {value!r} does not fit in 64 bits") from None


cdef int32_t _int32(object value, Py_ssize_t row, str column) except? -1:
    if type(value) is not int:
        raise ValueError(f"row {row}: {column} {value!r} is not an integer")
    try:
        return value
    except OverflowError:
        raise ValueError(f"row {row}: {column} {value!r} does not fit in 32 bits") from None


cdef str _odeck_text(object trunks, Py_ssize_t row):
    """['t1', 't2'] -> 't1,t2'; [] -> ''."""
    if type(trunks) is not list and type(trunks) is not tuple:
        raise ValueError(f"row {row}: forced_trunks {trunks!r} is not a list")
    if not trunks:
        return ""
    for trunk in trunks:
        if type(trunk) is not str or not trunk or "," in trunk:
            raise ValueError(f"row {row}: forced trunk {trunk!r} must be a non-empty string without ','")
    return ",".join(trunks)


cdef str _tdeck_text(object prepend, Py_ssize_t row):
    if type(prepend) is not str:
        raise ValueError(f"row {row}: prepend {prepend!r} is not a string")
    return prepend


cdef enum:
    BUILDER_OPEN = 0
    BUILDER_FINISHED = 1
    BUILDER_FAILED = 2


cdef class DeckBuilder:
    """Lays out the image of one deck from its rows, taken in batches (e.g. straight from a database cursor).

    add() checks each row as it comes: ValueError names the first bad row, rows counted across batches (a
    duplicate of an earlier row's prefix comes first, then the row's own columns). Only C data is kept: a key
    and a RateRec per row, each distinct text once in the string pool. finish() places the keys and returns
    the image, byte for byte the file DeckImage maps; the same rows in the same order make the same bytes.
    A builder that finished, or raised, is spent.
    """
    cdef uint64_t* _keys
    cdef RateRec* _records
    cdef Py_ssize_t _count
    cdef Py_ssize_t _capacity
    cdef uint32_t _kind_code
    cdef uint32_t _length_mask
    cdef uint64_t _pool_size
    cdef dict _pool
    cdef list _pieces
    cdef int _state
    cdef readonly str kind

    def __cinit__(self, str kind):
        if kind not in _KIND_CODES:
            raise ValueError(f"kind {kind!r} is not 'odeck' or 'tdeck'")
        self.kind = kind
        self._kind_code = _KIND_CODES[kind]
        self._pool = {"": (0, 0)}
        self._pieces = []

    def __dealloc__(self):
        self._release()

    def __len__(self):
        return self._count

    cdef void _release(self) noexcept:
        free(self._keys)
        free(self._records)
        self._keys = NULL
        self._records = NULL
        self._capacity = 0

    cdef int _check_open(self) except -1:
        if self._state == BUILDER_FINISHED:
            raise ValueError("the deck builder has finished: start another")
        if self._state == BUILDER_FAILED:
            raise ValueError("the deck builder failed on an earlier row: start another")
        return 0

    cdef int _reserve(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t wanted = self._count + more, capacity
        cdef void* grown
        if wanted <= self._capacity:
            return 0
        if <uint64_t>wanted > MAX_ENTRIES:
            raise ValueError(f"{wanted} rows: an image holds at most {MAX_ENTRIES}")
        capacity = max(wanted, 2 * self._capacity, 1024)
        grown = realloc(self._keys, capacity * sizeof(uint64_t))
        if grown == NULL:
            raise MemoryError(f"keys of {capacity} rows")
        self._keys = <uint64_t*>grown
        grown = realloc(self._records, capacity * sizeof(RateRec))
        if grown == NULL:
            raise MemoryError(f"records of {capacity} rows")
        self._records = <RateRec*>grown
        self._capacity = capacity
        return 0

    def add(self, rows):
        """Check and take a batch of rows: lists or tuples whose positions are snapshot_format.COLUMNS[kind]."""
        cdef Py_ssize_t n, j, i
        cdef Py_ssize_t ncols = _KIND_COLUMNS[self.kind]
        cdef bint odeck = self._kind_code == KIND_ODECK
        cdef RateRec* rec
        cdef int plen
        self._check_open()
        if type(rows) is not list:
            rows = list(rows)
        n = len(rows)
        i = self._count
        try:
            self._reserve(n)
            for j in range(n):
                row = rows[j]
                if (type(row) is not list and type(row) is not tuple) or len(row) != ncols:
                    raise ValueError(f"row {i}: {row!r} is not a {self.kind} row of {ncols} columns "
                                     f"{_ODECK_NAMES if odeck else _TDECK_NAMES}")
                self._keys[i] = _prefix_key(row[0], i)
                plen = len(<str>row[0])
                rec = &self._records[i]
                memset(rec, 0, sizeof(RateRec))   # the padding too: equal rows, equal bytes
                rec.prefix_len = <uint8_t>plen
                rec.connect_fee = _int64(row[1], i, "connect_fee")
                rec.included_seconds = _int32(row[2], i, "included_seconds")
                rec.rate_per_min = _int64(row[3], i, "rate_per_min")
                rec.initial_increment = _int32(row[4], i, "initial_increment")
                rec.increment = _int32(row[5], i, "increment")
                if odeck:
                    text = _odeck_text(row[6], i)
                    rec.priority = _int32(row[7], i, "priority")
                else:
                    rec.strip = _int32(row[6], i, "strip")
                    text = _tdeck_text(row[7], i)
                    rec.priority = _int32(row[8], i, "priority")
                rec.str_offset, rec.str_length = self._locate(text, i)
                self._length_mask |= (<uint32_t>1) << plen
                i += 1
        except ValueError:
            self._state = BUILDER_FAILED
            duplicate = _first_duplicate(self._keys, i)   # rows before the bad one, in row order
            if duplicate is not None:
                raise duplicate from None
            raise
        except BaseException:
            self._state = BUILDER_FAILED
            raise
        self._count = i

    cdef tuple _locate(self, str text, Py_ssize_t row):
        """(offset, length) of the text in the string pool, added the first time it is seen."""
        located = self._pool.get(text)
        if located is None:
            try:
                encoded = text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"row {row}: text {text!r} is not valid Unicode") from None
            located = (self._pool_size, len(encoded))
            self._pool_size += len(encoded)
            if self._pool_size > 0xFFFFFFFF:
                raise ValueError(f"row {row}: the string pool exceeds 4 GiB")
            self._pool[text] = located
            self._pieces.append(encoded)
        return located

    def finish(self):
        """Place the keys; return the image as a bytearray of exactly its file size."""
        self._check_open()
        try:
            image = self._layout()
        except BaseException:
            self._state = BUILDER_FAILED
            raise
        self._state = BUILDER_FINISHED
        self._release()
        self._pool = None
        self._pieces = None
        return image

    cdef object _layout(self):
        cdef Py_ssize_t n = self._count, i
        cdef uint64_t slot_count = 0, pilot_count = 0, seed = 0, level_count, offset
        cdef uint64_t level_offset, pilot_offset, remap_offset, strings_offset, file_size
        cdef uint32_t digits
        cdef uint32_t* positions
        cdef char* base
        cdef Entry* entries
        cdef Entry* entry
        cdef ImageHeader header

        position_bytes = bytearray(n * sizeof(uint32_t))
        positions = <uint32_t*>PyByteArray_AS_STRING(position_bytes)
        pilot_bytes, remap_bytes, seed, slot_count = _perfect_hash(self._keys, n, positions)
        pilot_count = len(pilot_bytes) // sizeof(uint16_t)

        digits = _level_digits_for(n)
        level_count = POW10[digits]
        level_offset = _align64(HEADER_SPACE + <uint64_t>n * sizeof(Entry))
        pilot_offset = _align64(level_offset + level_count * sizeof(LevelEntry))
        remap_offset = _align64(pilot_offset + pilot_count * sizeof(uint16_t))
        strings_offset = _align64(remap_offset + (slot_count - <uint64_t>n) * sizeof(uint32_t))
        file_size = strings_offset + self._pool_size

        memset(&header, 0, sizeof(ImageHeader))
        memcpy(header.magic, MAGIC, 8)
        header.format_version = _FORMAT_VERSION
        header.kind = self._kind_code
        header.header_size = sizeof(ImageHeader)
        header.record_size = sizeof(RateRec)
        header.slot_size = sizeof(Slot)
        header.length_mask = self._length_mask
        header.count = n
        header.slot_count = slot_count
        header.table_offset = HEADER_SPACE
        header.records_offset = HEADER_SPACE + sizeof(Slot)
        header.strings_offset = strings_offset
        header.strings_size = self._pool_size
        header.file_size = file_size
        header.byte_order = BYTE_ORDER
        header.level_digits = digits
        header.level_offset = level_offset
        header.pilot_offset = pilot_offset
        header.pilot_count = pilot_count
        header.remap_offset = remap_offset
        header.hash_seed = seed
        header.entry_size = sizeof(Entry)
        header.level_entry_size = sizeof(LevelEntry)

        image = bytearray(file_size)        # zeroed: gaps, Slot.reserved and padding stay 0
        base = PyByteArray_AS_STRING(image)
        memcpy(base, &header, sizeof(ImageHeader))
        entries = <Entry*>(base + HEADER_SPACE)
        for i in range(n):
            entry = &entries[positions[i]]
            entry.slot.key = self._keys[i]
            entry.slot.index = positions[i]
            entry.rec = self._records[i]
        _fill_level(<LevelEntry*>(base + level_offset), digits, self._keys, entries, positions, n)
        memcpy(base + pilot_offset, PyByteArray_AS_STRING(pilot_bytes), len(pilot_bytes))
        memcpy(base + remap_offset, PyByteArray_AS_STRING(remap_bytes), len(remap_bytes))
        offset = strings_offset
        for piece in self._pieces:
            memcpy(base + offset, PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece))
            offset += PyBytes_GET_SIZE(piece)
        return image


cdef tuple _perfect_hash(const uint64_t* keys, Py_ssize_t n, uint32_t* positions):
    """(pilots, remap, seed, slot_count) placing the n keys; positions[i] gets key i's entry position."""
    cdef uint64_t slot_count = 0, pilot_count, seed = 0
    cdef uint32_t limit
    cdef int status = PLACE_OK, attempt = 0
    cdef uint16_t* pilots
    cdef uint32_t* remap
    cdef uint64_t* hashes
    if n == 0:
        return bytearray(), bytearray(), 0, 0
    hash_bytes = bytearray(n * sizeof(uint64_t))
    hashes = <uint64_t*>PyByteArray_AS_STRING(hash_bytes)
    pilot_count = <uint64_t>n // 4 + 1
    for attempt in range(len(_RANGE_DIVISORS)):
        seed = tg_mix(SEED_BASE + <uint64_t>attempt)
        slot_count = <uint64_t>n + <uint64_t>n // <uint64_t>_RANGE_DIVISORS[attempt] + 1
        pilot_bytes = bytearray(pilot_count * sizeof(uint16_t))
        remap_bytes = bytearray((slot_count - <uint64_t>n) * sizeof(uint32_t))
        pilots = <uint16_t*>PyByteArray_AS_STRING(pilot_bytes)
        remap = <uint32_t*>PyByteArray_AS_STRING(remap_bytes)
        limit = _pilot_limit
        with nogil:
            status = _place_keys(keys, hashes, <uint64_t>n, seed, slot_count, pilot_count, pilots, remap,
                                 positions, limit)
        if status != PLACE_FAILED:
            break
    if status == PLACE_DUPLICATE:   # equal keys hash equally: name the first duplicate in row order
        raise _first_duplicate(keys, n)
    if status == PLACE_NO_MEMORY:
        raise MemoryError(f"placing {n} prefixes")
    if status != PLACE_OK:
        raise ValueError(f"{n} rows: no perfect hash found for the prefixes (tried {attempt + 1} seeds)")
    return pilot_bytes, remap_bytes, seed, slot_count


def encode_image(str kind, rows):
    """The image of a deck of kind 'odeck' or 'tdeck' from its rows (positions = COLUMNS[kind]), as a bytearray.

    What the publisher puts in Redis and a fast-path process writes to its image file. ValueError names the
    first bad row (duplicate prefix, prefix not 1..18 digits, wrong types or out-of-range numbers).
    """
    builder = DeckBuilder(kind)
    builder.add(rows)
    return builder.finish()


def build_image(path, str kind, rows) -> int:
    """Write an image for kind 'odeck' or 'tdeck' from rows (see encode_image); return the number of entries.

    Atomic and durable: the image goes to path + '.tmp-<pid>', is fsynced, then renamed over path, so a
    reader sees the old image or the new one, never a part, even after a crash.
    """
    builder = DeckBuilder(kind)
    builder.add(rows)
    image = builder.finish()
    _write_atomically(os.fspath(path), (image,), durable=True)
    return len(builder)


def _write_atomically(str path, chunks, bint durable):
    """Write the chunks to path + '.tmp-<pid>' and rename that over path (fsyncing first when durable)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        _fsync_directory(os.path.dirname(os.path.abspath(path)))


def digest64(const unsigned char[::1] data not None) -> int:
    """XXH64 (seed 0) of a buffer: the digest of each projection snapshot chunk (fastpath/snapshot_format).

    Several GB/s, so that checking a deck costs little next to reading it from Redis. The readable twin is
    fastpath/reference/xxh64.py; the values are the published XXH64 ones.
    """
    cdef uint64_t h
    cdef Py_ssize_t n = data.shape[0]
    if n == 0:
        return tg_xxh64(NULL, 0)
    with nogil:
        h = tg_xxh64(&data[0], <size_t>n)
    return h


def read_image_header(head, str where="image"):
    """(kind, count, file_size) that an image's first bytes declare; ValueError unless they begin an image of
    the format and layout this build maps (so a reader can refuse an image before it has all of it)."""
    cdef const unsigned char[::1] view = head
    cdef ImageHeader header
    if <size_t>view.shape[0] < sizeof(ImageHeader):
        raise ValueError(f"{where}: {view.shape[0]} bytes is too short for a deck image header")
    memcpy(&header, &view[0], sizeof(ImageHeader))
    _check_identity(&header, where)
    return _KIND_NAMES[header.kind], header.count, header.file_size


cpdef uint32_t _level_digits_for(Py_ssize_t count):
    """D, the digits of the direct level, for a deck of `count` prefixes: 10**(D+1) <= count, 1..5."""
    cdef uint32_t digits = 1
    while digits < MAX_LEVEL_DIGITS and <uint64_t>count >= POW10[digits + 2]:
        digits += 1
    return digits


cdef object _first_duplicate(const uint64_t* keys, Py_ssize_t before):
    """ValueError for the first row (in row order, below `before`) whose prefix an earlier row has; or None."""
    cdef Py_ssize_t i
    seen = {}
    for i in range(before):
        first = seen.setdefault(keys[i], i)
        if first != i:
            return ValueError(f"row {i}: prefix {str(keys[i])[1:]!r} already on row {first}")
    return None


cdef int _place_keys(const uint64_t* keys, uint64_t* hashes, uint64_t n, uint64_t seed, uint64_t slot_count,
                     uint64_t pilot_count, uint16_t* pilots, uint32_t* remap, uint32_t* positions,
                     uint32_t pilot_limit) noexcept nogil:
    """The perfect hash of n keys: a pilot per bucket, the remap, and positions[i] (in [0, n)) of key i.

    Buckets go largest first; each takes the first pilot that puts all its keys on free positions. The
    positions >= n that got taken are then remapped onto the free ones below n, in order.
    """
    cdef uint32_t* sizes = NULL             # keys per bucket
    cdef uint32_t* starts = NULL            # where each bucket's keys begin in `members`
    cdef uint32_t* members = NULL           # key numbers grouped by bucket
    cdef uint32_t* order = NULL             # buckets, largest first
    cdef uint32_t* by_size = NULL
    cdef uint64_t* trial = NULL
    cdef uint8_t* taken = NULL
    cdef uint64_t i, b, j, k, p, free_slot, largest = 0
    cdef Py_ssize_t size
    cdef uint32_t pilot, s
    cdef const uint32_t* bucket_keys
    cdef int status = PLACE_OK
    try:
        sizes = <uint32_t*>calloc(pilot_count, sizeof(uint32_t))
        starts = <uint32_t*>malloc((pilot_count + 1) * sizeof(uint32_t))
        members = <uint32_t*>malloc(n * sizeof(uint32_t))
        order = <uint32_t*>malloc(pilot_count * sizeof(uint32_t))
        taken = <uint8_t*>calloc(slot_count, 1)
        if sizes == NULL or starts == NULL or members == NULL or order == NULL or taken == NULL:
            return PLACE_NO_MEMORY
        for i in range(n):
            hashes[i] = tg_mix(keys[i] + seed)
            b = tg_range(hashes[i], pilot_count)
            positions[i] = <uint32_t>b          # the bucket, for now
            sizes[b] += 1
            if sizes[b] > largest:
                largest = sizes[b]
        starts[0] = 0
        for b in range(pilot_count):
            starts[b + 1] = starts[b] + sizes[b]
        for i in range(n):                      # counting sort by bucket; starts[b] ends at the next start
            b = positions[i]
            members[starts[b]] = <uint32_t>i
            starts[b] += 1
        for b in range(pilot_count):
            starts[b] -= sizes[b]
        by_size = <uint32_t*>calloc(largest + 2, sizeof(uint32_t))
        trial = <uint64_t*>malloc((largest + 1) * sizeof(uint64_t))
        if by_size == NULL or trial == NULL:
            return PLACE_NO_MEMORY
        for b in range(pilot_count):            # counting sort of the buckets by size, largest first
            by_size[sizes[b]] += 1
        k = 0
        for size in range(<Py_ssize_t>largest, -1, -1):
            p = by_size[size]
            by_size[size] = <uint32_t>k
            k += p
        for b in range(pilot_count):
            order[by_size[sizes[b]]] = <uint32_t>b
            by_size[sizes[b]] += 1

        for k in range(pilot_count):
            b = order[k]
            s = sizes[b]
            if s == 0:
                break
            bucket_keys = &members[starts[b]]
            for i in range(s):
                for j in range(i):
                    if hashes[bucket_keys[i]] == hashes[bucket_keys[j]]:
                        return PLACE_DUPLICATE
            for pilot in range(pilot_limit):
                i = 0
                while i < s:
                    p = _slot_of(hashes[bucket_keys[i]], <uint16_t>pilot, slot_count)
                    if taken[p]:
                        break
                    taken[p] = 1
                    trial[i] = p
                    i += 1
                if i == s:
                    pilots[b] = <uint16_t>pilot
                    for i in range(s):
                        positions[bucket_keys[i]] = <uint32_t>trial[i]
                    break
                while i > 0:
                    i -= 1
                    taken[trial[i]] = 0
            else:
                return PLACE_FAILED

        free_slot = 0
        for p in range(n, slot_count):
            if taken[p]:
                while taken[free_slot]:
                    free_slot += 1
                remap[p - n] = <uint32_t>free_slot
                free_slot += 1
        for i in range(n):
            if positions[i] >= n:
                positions[i] = remap[positions[i] - n]
        return status
    finally:
        free(sizes)
        free(starts)
        free(members)
        free(order)
        free(by_size)
        free(trial)
        free(taken)


cdef void _fill_level(LevelEntry* level, uint32_t digits, const uint64_t* keys, const Entry* entries,
                      const uint32_t* positions, Py_ssize_t count) noexcept nogil:
    """Bucket v (v = a number's first `digits` digits): the lengths > digits that some prefix under v has,
    and the longest prefix of at most `digits` digits that v starts with, with its entry."""
    cdef Py_ssize_t i
    cdef uint64_t key, value, span, b
    cdef uint32_t length, short_lengths = ((<uint32_t>2) << digits) - 2, current
    cdef LevelEntry* bucket
    for i in range(count):
        key = keys[i]
        length = entries[positions[i]].rec.prefix_len
        if length > digits:
            level[key // POW10[length - digits] - POW10[digits]].lengths |= (<uint32_t>1) << length
            continue
        value = key - POW10[length]            # the prefix's digits as a number
        span = POW10[digits - length]
        for b in range(value * span, (value + 1) * span):
            bucket = &level[b]
            current = bucket.lengths & short_lengths
            if current == 0 or <uint32_t>TG_HIGHEST_BIT(current) < length:
                bucket.lengths = (bucket.lengths & ~short_lengths) | ((<uint32_t>1) << length)
                bucket.short_entry = positions[i] + 1


def _fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- read

cdef class DeckImage:
    """A deck image mapped read-only and shared (MAP_SHARED): pages are the page cache's, not the process's.

    The mapping holds the file's inode, so it keeps answering after the file is replaced or unlinked.
    close() (or the last reference going away) unmaps it. Not for concurrent close() and lookups.
    """

    def __init__(self, path):
        cdef void* base
        cdef size_t size
        cdef const ImageHeader* header
        cdef int err
        if self._base != NULL:
            self.close()
        path = os.fspath(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SPACE:
                raise ValueError(f"{path}: {size} bytes is too short for a deck image (header alone is "
                                 f"{HEADER_SPACE})")
            base = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0)
            if base == MAP_FAILED:
                err = errno
                if err == _errno.ENOMEM:
                    raise MemoryError(f"{path}: cannot map {size} bytes")
                raise OSError(err, os.strerror(err), path)
        finally:
            os.close(fd)
        try:
            _check_header(<const ImageHeader*>base, size, path)
        except BaseException:
            munmap(base, size)
            raise
        header = <const ImageHeader*>base
        self._base = <const char*>base
        self._size = size
        self._entries = <const Entry*>(self._base + header.table_offset)
        self._level = <const LevelEntry*>(self._base + header.level_offset)
        self._pilots = <const uint16_t*>(self._base + header.pilot_offset)
        self._remap = <const uint32_t*>(self._base + header.remap_offset)
        self._strings = self._base + header.strings_offset
        self._count = header.count
        self._slot_count = header.slot_count
        self._pilot_count = header.pilot_count
        self._hash_seed = header.hash_seed
        self._level_digits = header.level_digits
        self._level_base = POW10[header.level_digits]
        self._strings_size = header.strings_size
        self._length_mask = header.length_mask
        self._kind = header.kind
        self.path = path

    def __dealloc__(self):
        if self._base != NULL:
            munmap(<void*>self._base, self._size)
            self._base = NULL

    def close(self):
        """Unmap. Idempotent; lookups afterwards raise ValueError (match() returns False)."""
        if self._base != NULL:
            munmap(<void*>self._base, self._size)
        self._base = NULL
        self._size = 0
        self._entries = NULL
        self._level = NULL
        self._pilots = NULL
        self._remap = NULL
        self._strings = NULL
        self._slot_count = 0
        self._pilot_count = 0
        self._strings_size = 0
        self._length_mask = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __reduce__(self):
        return DeckImage, (self.path,)

    def __len__(self):
        return self._count

    def __repr__(self):
        state = "closed" if self._base == NULL else f"{self._count} prefixes"
        return f"<DeckImage {self.kind} {self.path!r} {state}>"

    @property
    def kind(self):
        """'odeck' or 'tdeck'."""
        return _KIND_NAMES.get(self._kind)

    @property
    def closed(self):
        return self._base == NULL

    @property
    def size(self):
        """Bytes mapped (0 once closed)."""
        return self._size

    cdef bint match(self, const char* digits, Py_ssize_t length, RateRec* out) noexcept nogil:
        """Fill `out` with the record of the longest prefix of the leading digits; False when none."""
        cdef uint64_t keys[MAX_DIGITS + 1]
        cdef uint64_t where[MAX_DIGITS + 1]
        cdef uint64_t value = 0, power = 1, h, p
        cdef uint64_t count = self._count, slot_count = self._slot_count, pilot_count = self._pilot_count
        cdef uint64_t seed = self._hash_seed
        cdef Py_ssize_t n = 0
        cdef Py_ssize_t limit = length if length < MAX_DIGITS else MAX_DIGITS
        cdef uint32_t candidates, rest, short_lengths = 0, level_digits = self._level_digits
        cdef int size
        cdef char c
        cdef const Entry* entries = self._entries
        cdef const Entry* entry
        cdef LevelEntry bucket
        if entries == NULL or count == 0:
            return False
        while n < limit:
            c = digits[n]
            if c < c'0' or c > c'9':
                break
            value = value * 10 + <uint64_t>(c - c'0')
            power *= 10
            n += 1
            keys[n] = power + value
        if <uint32_t>n >= level_digits:
            bucket = self._level[keys[level_digits] - self._level_base]
            candidates = bucket.lengths & ((<uint32_t>2 << n) - 2)
            short_lengths = candidates & ((<uint32_t>2 << level_digits) - 2)
            rest = candidates & ~short_lengths
            if short_lengths:       # known to match: its entry needs no hashing
                size = TG_HIGHEST_BIT(short_lengths)
                p = <uint64_t>bucket.short_entry - 1
                if p >= count:      # only in a corrupt image: any entry in range is safe, its key is compared
                    p = 0
                where[size] = p
                TG_PREFETCH(&entries[p])
                candidates = rest | ((<uint32_t>1) << size)
        else:
            candidates = self._length_mask & ((<uint32_t>2 << n) - 2)  # lengths 1..n present in the deck
            rest = candidates
        while rest:
            size = TG_LOWEST_BIT(rest)
            rest &= rest - 1
            h = tg_mix(keys[size] + seed)
            p = _slot_of(h, self._pilots[tg_range(h, pilot_count)], slot_count)
            if p >= count:
                p = self._remap[p - count]
                if p >= count:
                    p = 0
            where[size] = p
            TG_PREFETCH(&entries[p])
        while candidates:
            size = TG_HIGHEST_BIT(candidates)
            candidates &= ~((<uint32_t>1) << size)
            entry = &entries[where[size]]
            if entry.slot.key == keys[size]:
                if entry.slot.index != where[size]:
                    return False
                out[0] = entry.rec
                return True
        return False

    cdef object record_strings(self, const RateRec* rec):
        """The forced trunks (odeck: list[str], [] when none) or the prepend digits (tdeck: str)."""
        cdef uint64_t end = <uint64_t>rec.str_offset + rec.str_length
        if self._base == NULL:
            raise ValueError("the deck image is closed")
        if rec.str_length == 0:
            return [] if self._kind == KIND_ODECK else ""
        if end > self._strings_size:
            raise ValueError(f"{self.path}: string [{rec.str_offset}, {end}) is outside the pool "
                             f"({self._strings_size} bytes): corrupt image")
        text = PyUnicode_DecodeUTF8(<char*>self._strings + rec.str_offset, rec.str_length, NULL)
        return text.split(",") if self._kind == KIND_ODECK else text

    cdef tuple record_tuple(self, const RateRec* rec):
        """The snapshot row without its prefix, same order and types."""
        if self._kind == KIND_ODECK:
            return (rec.connect_fee, rec.included_seconds, rec.rate_per_min, rec.initial_increment,
                    rec.increment, self.record_strings(rec), rec.priority)
        return (rec.connect_fee, rec.included_seconds, rec.rate_per_min, rec.initial_increment, rec.increment,
                rec.strip, self.record_strings(rec), rec.priority)

    def longest_match(self, number):
        """(prefix, record) of the longest prefix of the number's leading digits, or None.

        `number` is a str (or bytes); only its leading run of ASCII digits counts, at most 18 of them.
        """
        cdef const char* data
        cdef Py_ssize_t length
        cdef RateRec rec
        if self._base == NULL:
            raise ValueError("the deck image is closed")
        if type(number) is str and PyUnicode_IS_ASCII(number):    # the usual case: no copy, no encoding
            data = <const char*>PyUnicode_DATA(number)
            length = PyUnicode_GET_LENGTH(number)
        elif type(number) is bytes:
            data = PyBytes_AS_STRING(number)
            length = PyBytes_GET_SIZE(number)
        elif isinstance(number, str):       # non-ASCII (even lone surrogates): not digits, encoded as '?'
            encoded = (<str>number).encode("utf-8", "replace")
            data = PyBytes_AS_STRING(encoded)
            length = PyBytes_GET_SIZE(encoded)
        else:
            raise TypeError(f"number must be str or bytes, not {type(number).__name__}")
        if not self.match(data, length, &rec):
            return None
        prefix = PyUnicode_DecodeASCII(data, rec.prefix_len, NULL)
        return (prefix, self.record_tuple(&rec))

    def count_matches(self, list numbers):
        """How many of `numbers` (bytes) match: the C path alone, for benches and smoke checks."""
        cdef RateRec rec
        cdef Py_ssize_t matched = 0
        if self._base == NULL:
            raise ValueError("the deck image is closed")
        for number in numbers:
            if type(number) is not bytes:
                raise TypeError("count_matches takes a list of bytes")
            if self.match(PyBytes_AS_STRING(number), PyBytes_GET_SIZE(number), &rec):
                matched += 1
        return matched


cdef _check_identity(const ImageHeader* header, str path):
    """ValueError unless the header is a deck image's, of this format, byte order and struct layout."""
    if memcmp(header.magic, MAGIC, 8) != 0:
        raise ValueError(f"{path}: not a deck image (bad magic {bytes(header.magic[:8])!r})")
    if header.format_version != _FORMAT_VERSION:
        raise ValueError(f"{path}: image format version {header.format_version}, this build reads "
                         f"{_FORMAT_VERSION}")
    if (header.byte_order != BYTE_ORDER or header.header_size != sizeof(ImageHeader)
            or header.record_size != sizeof(RateRec) or header.slot_size != sizeof(Slot)
            or header.entry_size != sizeof(Entry) or header.level_entry_size != sizeof(LevelEntry)):
        raise ValueError(f"{path}: image written by a build with another byte order or struct layout")
    if header.kind not in (KIND_ODECK, KIND_TDECK):
        raise ValueError(f"{path}: unknown deck kind {header.kind}")


cdef _check_header(const ImageHeader* header, uint64_t size, str path):
    """ValueError unless the header describes a well-formed image of exactly `size` bytes.

    The layout follows from the counts (see DeckBuilder): every offset must be the one expected, so each
    section lies inside the file and none overlaps another. Arithmetic on Python ints: no wrap-around.
    """
    _check_identity(header, path)
    if header.file_size != size:
        raise ValueError(f"{path}: the header says {header.file_size} bytes, the file has {size} "
                         f"(truncated or overwritten)")
    count, slots, pilots, digits = header.count, header.slot_count, header.pilot_count, header.level_digits
    if (count > MAX_ENTRIES or header.length_mask & ~ALL_LENGTHS or (count == 0) != (header.length_mask == 0)
            or not count <= slots <= 2 * count + 1 or not (count + 3) // 4 <= pilots <= count + 1
            or (count == 0) != (pilots == 0) or not 1 <= digits <= READ_LEVEL_DIGITS):
        raise ValueError(f"{path}: inconsistent header (count {count}, slots {slots}, pilots {pilots}, "
                         f"level digits {digits}, lengths {header.length_mask:#x})")
    level = -(-(HEADER_SPACE + count * sizeof(Entry)) // 64) * 64
    pilot = -(-(level + 10 ** digits * sizeof(LevelEntry)) // 64) * 64
    remap = -(-(pilot + pilots * sizeof(uint16_t)) // 64) * 64
    strings = -(-(remap + (slots - count) * sizeof(uint32_t)) // 64) * 64
    expected = (HEADER_SPACE, HEADER_SPACE + sizeof(Slot), level, pilot, remap, strings, size - strings)
    found = (header.table_offset, header.records_offset, header.level_offset, header.pilot_offset,
             header.remap_offset, header.strings_offset, header.strings_size)
    if found != expected:
        raise ValueError(f"{path}: sections out of place (table {header.table_offset}, records "
                         f"{header.records_offset}, level {header.level_offset}, pilots {header.pilot_offset}, "
                         f"remap {header.remap_offset}, strings {header.strings_offset}+{header.strings_size}, "
                         f"size {size}; expected {expected})")


# ---------------------------------------------------------------------------------------------- cache

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_IMAGE_NAME = re.compile(r".+\.\d+\.img(\.tmp-\d+)?")


def image_file_stem(str family) -> str:
    """'odeck:gold' -> 'odeck%3Agold': a reversible file name without '.', '/', ':' or anything else odd."""
    if not family:
        raise ValueError("empty family name")
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), family)


def boot_directory(str directory) -> str:
    """directory/'boot-<this boot's id>', created; what earlier boots (or builds before them) left is removed.

    Images are a cache of Redis written without fsync: after a crash, one may have been renamed into place but
    never written out. No boot ever opens another boot's images, so none of them is ever trusted torn.
    """
    with open(_BOOT_ID) as f:
        current = f"boot-{f.read().strip()}"
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.startswith("boot-") and name != current:
            shutil.rmtree(path, ignore_errors=True)      # other processes of this boot may be at it too
        elif _IMAGE_NAME.fullmatch(name):                  # left by a build that predates boot directories
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    path = os.path.join(directory, current)
    os.makedirs(path, exist_ok=True)
    return path


def _as_chunks(content):
    """load_image() may give the whole image or an iterable of its pieces."""
    return (content,) if isinstance(content, (bytes, bytearray, memoryview)) else content


class ImageCache:
    """The images of one process, shared with every other process of the node through `directory`.

    Files live in boot_directory(directory). get() maps '<family>.<version>.img' there when some process
    already wrote it; otherwise it takes an exclusive flock on '<family>.lock', looks again (another process
    may have finished while this one waited), and only then writes what load_image() gives: the image's bytes,
    whole or in pieces (a generator reading them from Redis, say). The pieces stream to a temporary file that
    is renamed into place once complete; anything load_image() raises, or bytes that do not open as an image
    of the kind, leave no file behind. After a write, older versions of the family are unlinked: processes that
    still map them keep reading them (the mapping holds the inode), and the space goes back when the last one
    lets go. The process keeps the latest image of each family; an image it drops stays valid for whoever
    still holds it.
    """

    def __init__(self, str directory):
        self.directory = boot_directory(directory)
        self._images = {}       # family -> (version, DeckImage)
        self.builds = 0         # images this process wrote (the rest were mapped from a peer's)

    def path_for(self, str family, version) -> str:
        return os.path.join(self.directory, f"{image_file_stem(family)}.{int(version)}.img")

    def get(self, str family, version, str kind, load_image):
        cached = self._images.get(family)
        if cached is not None and cached[0] == version:
            return cached[1]
        if type(version) is not int or version < 0:
            raise ValueError(f"version {version!r} must be a non-negative int")
        if kind not in _KIND_CODES:
            raise ValueError(f"kind {kind!r} is not 'odeck' or 'tdeck'")
        path = self.path_for(family, version)
        image = self._open(path, kind)
        if image is None:
            image = self._build(family, version, kind, path, load_image)
        self._images[family] = (version, image)
        return image

    def forget(self, str family):
        """Drop this process's reference to the family's image (it unmaps once nobody else holds it)."""
        self._images.pop(family, None)

    @staticmethod
    def _open(str path, str kind):
        try:
            image = DeckImage(path)
        except (FileNotFoundError, ValueError):
            return None
        if image.kind != kind:
            image.close()
            return None
        return image

    def _build(self, str family, int version, str kind, str path, load_image):
        stem = image_file_stem(family)
        fd = os.open(os.path.join(self.directory, f"{stem}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            image = self._open(path, kind)      # written by another process while we waited?
            if image is not None:
                return image
            _write_atomically(path, _as_chunks(load_image()), durable=False)
            image = _open_written(path, kind)
            self.builds += 1
            self._remove_stale(stem, version)
            return image
        finally:
            os.close(fd)        # releases the flock

    def _remove_stale(self, str stem, int version):
        """Unlink older versions and leftovers of crashed builds (we hold the family's lock)."""
        pattern = re.compile(rf"{re.escape(stem)}\.(\d+)\.img(\.tmp-\d+)?")
        for name in os.listdir(self.directory):
            found = pattern.fullmatch(name)
            if found and (found.group(2) or int(found.group(1)) < version):
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass


def _open_written(str path, str kind):
    """The image just written at path; a file that is not an image of the kind is unlinked, and ValueError."""
    try:
        image = DeckImage(path)
    except ValueError:
        os.unlink(path)
        raise
    if image.kind != kind:
        found = image.kind
        image.close()
        os.unlink(path)
        raise ValueError(f"{path}: a {found} image where a {kind} deck belongs")
    return image
