# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A rate deck as a compact read-only file that every process of the node maps and shares.

One image holds one origination ('odeck') or termination ('tdeck') deck. Layout (native byte order,
sections 64-byte aligned; the structs are declared in deck_image.pxd):

    ImageHeader (96 bytes, padded to 128)
    Slot[slot_count]        open addressing, linear probing, load factor <= 0.5;
                            key = int('1' + prefix) (the leading 1 keeps '4' and '04' apart, 0 = empty),
                            home slot = (key * 0x9E3779B97F4A7C15) >> hash_shift (Fibonacci hashing)
    RateRec[count]          the rows without their prefix, in snapshot order
    string pool             forced trunks joined by ',' (odeck) / prepend digits (tdeck), de-duplicated

A lookup takes the number's leading run of ASCII digits (at most 18), computes the key of every prefix
length that the header's length bitmask says is present, prefetches all their home slots at once, then
probes from the longest down: a handful of cache misses in parallel instead of in series.

The reference twin is fastpath/reference/lpm.py (a dict and a loop); tests/test_deck_image.py checks
that both agree.
"""

import errno as _errno
import fcntl
import os
import re

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeASCII, PyUnicode_DecodeUTF8
from libc.errno cimport errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memset
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, mmap, munmap

cdef extern from *:
    """
    #define TG_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 0)
    #define TG_HIGHEST_BIT(m) (31 - __builtin_clz((unsigned int)(m)))
    """
    void TG_PREFETCH(const void* p) nogil
    bint PyUnicode_IS_ASCII(object text)
    void* PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    int TG_HIGHEST_BIT(uint32_t m) nogil

cdef enum:
    MAX_DIGITS = 18

FORMAT_VERSION = 1
MAX_PREFIX_DIGITS = MAX_DIGITS

cdef const char* MAGIC = b"TGDECKIM"
cdef uint32_t _FORMAT_VERSION = 1
cdef uint32_t BYTE_ORDER = 0x01020304
cdef uint64_t HEADER_SPACE = 128
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL
cdef uint32_t KIND_ODECK = 1
cdef uint32_t KIND_TDECK = 2
cdef uint32_t ALL_LENGTHS = 0x7FFFE        # bits 1..18
cdef uint64_t MAX_ENTRIES = 0x7FFFFFFF

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


cdef inline uint64_t _home(uint64_t key, uint32_t shift) noexcept nogil:
    return (key * GOLDEN) >> shift


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


def build_image(path, str kind, list rows) -> int:
    """Write an image for kind 'odeck' or 'tdeck' from snapshot rows (positions = COLUMNS[kind]).

    Atomic: the image goes to path + '.tmp-<pid>', is fsynced, then renamed over path, so a reader sees
    the old image or the new one, never a part. Returns the number of entries. ValueError names the
    first bad row (duplicate prefix, prefix not 1..18 digits, wrong types or out-of-range numbers).
    """
    cdef uint32_t kind_code
    cdef bint odeck
    cdef Py_ssize_t ncols, n, i
    cdef uint64_t slot_count = 2, slot_mask, key, h, records_offset, strings_offset, pool_size = 0
    cdef uint32_t shift = 63, length_mask = 0
    cdef Slot* slots
    cdef RateRec* rec
    cdef RateRec* records
    cdef ImageHeader header
    cdef int plen

    path = os.fspath(path)
    if kind not in _KIND_CODES:
        raise ValueError(f"kind {kind!r} is not 'odeck' or 'tdeck'")
    kind_code = _KIND_CODES[kind]
    odeck = kind_code == KIND_ODECK
    ncols = _KIND_COLUMNS[kind]
    names = _ODECK_NAMES if odeck else _TDECK_NAMES
    n = len(rows)
    if <uint64_t>n > MAX_ENTRIES:
        raise ValueError(f"{n} rows: an image holds at most {MAX_ENTRIES}")
    while slot_count < 2 * <uint64_t>n:
        slot_count <<= 1
        shift -= 1
    slot_mask = slot_count - 1

    table = bytearray(slot_count * sizeof(Slot))       # zeroed: key 0 = empty, padding stays 0
    record_bytes = bytearray(n * sizeof(RateRec))
    slots = <Slot*>PyByteArray_AS_STRING(table)
    records = <RateRec*>PyByteArray_AS_STRING(record_bytes)
    pool = {"": (0, 0)}
    pieces = []

    for i in range(n):
        row = rows[i]
        if (type(row) is not list and type(row) is not tuple) or len(row) != ncols:
            raise ValueError(f"row {i}: {row!r} is not a {kind} row of {ncols} columns {names}")
        key = _prefix_key(row[0], i)
        plen = len(<str>row[0])
        rec = &records[i]
        rec.prefix_len = <uint8_t>plen
        rec.connect_fee = _int64(row[1], i, "connect_fee")
        rec.included_seconds = _int32(row[2], i, "included_seconds")
        rec.rate_per_min = _int64(row[3], i, "rate_per_min")
        rec.initial_increment = _int32(row[4], i, "initial_increment")
        rec.increment = _int32(row[5], i, "increment")
        if odeck:
            text = _odeck_text(row[6], i)
            rec.strip = 0
            rec.priority = _int32(row[7], i, "priority")
        else:
            rec.strip = _int32(row[6], i, "strip")
            text = _tdeck_text(row[7], i)
            rec.priority = _int32(row[8], i, "priority")
        located = pool.get(text)
        if located is None:
            encoded = (<str>text).encode("utf-8")
            located = (pool_size, len(encoded))
            pool_size += len(encoded)
            if pool_size > 0xFFFFFFFF:
                raise ValueError("the string pool exceeds 4 GiB")
            pool[text] = located
            pieces.append(encoded)
        rec.str_offset = located[0]
        rec.str_length = located[1]

        h = _home(key, shift)
        while slots[h].key != 0:
            if slots[h].key == key:
                raise ValueError(f"row {i}: prefix {row[0]!r} already on row {slots[h].index}")
            h = (h + 1) & slot_mask
        slots[h].key = key
        slots[h].index = <uint32_t>i
        length_mask |= (<uint32_t>1) << plen

    records_offset = _align64(HEADER_SPACE + slot_count * sizeof(Slot))
    strings_offset = _align64(records_offset + <uint64_t>n * sizeof(RateRec))
    memset(&header, 0, sizeof(ImageHeader))
    for i in range(8):
        header.magic[i] = MAGIC[i]
    header.format_version = _FORMAT_VERSION
    header.kind = kind_code
    header.header_size = sizeof(ImageHeader)
    header.record_size = sizeof(RateRec)
    header.slot_size = sizeof(Slot)
    header.length_mask = length_mask
    header.count = n
    header.slot_count = slot_count
    header.table_offset = HEADER_SPACE
    header.records_offset = records_offset
    header.strings_offset = strings_offset
    header.strings_size = pool_size
    header.file_size = strings_offset + pool_size
    header.byte_order = BYTE_ORDER
    header.hash_shift = shift
    header_bytes = (<char*>&header)[:sizeof(ImageHeader)]

    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            out.write(header_bytes)
            out.write(bytes(HEADER_SPACE - sizeof(ImageHeader)))
            out.write(table)
            out.write(bytes(records_offset - HEADER_SPACE - slot_count * sizeof(Slot)))
            out.write(record_bytes)
            out.write(bytes(strings_offset - records_offset - <uint64_t>n * sizeof(RateRec)))
            out.write(b"".join(pieces))
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(path)))
    return n


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
        self._slots = <const Slot*>(self._base + header.table_offset)
        self._records = <const RateRec*>(self._base + header.records_offset)
        self._strings = self._base + header.strings_offset
        self._count = header.count
        self._slot_mask = header.slot_count - 1
        self._strings_size = header.strings_size
        self._hash_shift = header.hash_shift
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
        self._slots = NULL
        self._records = NULL
        self._strings = NULL
        self._slot_mask = 0
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
        cdef uint64_t homes[MAX_DIGITS + 1]
        cdef uint64_t value = 0, power = 1, key, found, h, probes
        cdef Py_ssize_t n = 0
        cdef Py_ssize_t limit = length if length < MAX_DIGITS else MAX_DIGITS
        cdef uint32_t candidates, rest, shift = self._hash_shift
        cdef uint32_t index
        cdef int size
        cdef char c
        cdef const Slot* slots = self._slots
        cdef uint64_t slot_mask = self._slot_mask
        if slots == NULL:
            return False
        while n < limit:
            c = digits[n]
            if c < c'0' or c > c'9':
                break
            value = value * 10 + <uint64_t>(c - c'0')
            power *= 10
            n += 1
            keys[n] = power + value
        candidates = self._length_mask & ((<uint32_t>2 << n) - 2)    # lengths 1..n present in the deck
        rest = candidates
        while rest:
            size = TG_HIGHEST_BIT(rest)
            rest &= ~((<uint32_t>1) << size)
            homes[size] = _home(keys[size], shift)
            TG_PREFETCH(&slots[homes[size]])
        while candidates:
            size = TG_HIGHEST_BIT(candidates)
            candidates &= ~((<uint32_t>1) << size)
            key = keys[size]
            h = homes[size]
            probes = 0
            while probes <= slot_mask:      # bounded even on a corrupt table without an empty slot
                found = slots[h].key
                if found == key:
                    index = slots[h].index
                    if index >= self._count:
                        return False
                    out[0] = self._records[index]
                    return True
                if found == 0:
                    break
                h = (h + 1) & slot_mask
                probes += 1
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


cdef _check_header(const ImageHeader* header, uint64_t size, str path):
    """ValueError unless the header describes a well-formed image of exactly `size` bytes."""
    cdef uint64_t slot_count = header.slot_count
    cdef uint32_t log2 = 0
    if memcmp(header.magic, MAGIC, 8) != 0:
        raise ValueError(f"{path}: not a deck image (bad magic {bytes(header.magic[:8])!r})")
    if header.format_version != _FORMAT_VERSION:
        raise ValueError(f"{path}: image format version {header.format_version}, this build reads "
                         f"{_FORMAT_VERSION}")
    if (header.byte_order != BYTE_ORDER or header.header_size != sizeof(ImageHeader)
            or header.record_size != sizeof(RateRec) or header.slot_size != sizeof(Slot)):
        raise ValueError(f"{path}: image written by a build with another byte order or struct layout")
    if header.kind not in (KIND_ODECK, KIND_TDECK):
        raise ValueError(f"{path}: unknown deck kind {header.kind}")
    if header.file_size != size:
        raise ValueError(f"{path}: the header says {header.file_size} bytes, the file has {size} "
                         f"(truncated or overwritten)")
    if slot_count < 2 or slot_count & (slot_count - 1) or slot_count > size // sizeof(Slot):
        raise ValueError(f"{path}: bad slot count {slot_count}")
    while (<uint64_t>1 << log2) < slot_count:
        log2 += 1
    if (header.hash_shift != 64 - log2 or header.count > MAX_ENTRIES or header.count * 2 > slot_count
            or header.length_mask & ~ALL_LENGTHS or (header.count == 0) != (header.length_mask == 0)):
        raise ValueError(f"{path}: inconsistent header (count {header.count}, slots {slot_count}, "
                         f"shift {header.hash_shift}, lengths {header.length_mask:#x})")
    if (header.table_offset > size or header.records_offset > size or header.strings_offset > size
            or header.table_offset < HEADER_SPACE or header.table_offset % 64
            or header.records_offset < header.table_offset + slot_count * sizeof(Slot)
            or header.records_offset % 64
            or header.strings_offset < header.records_offset + header.count * sizeof(RateRec)
            or header.strings_size > size
            or header.strings_offset != size - header.strings_size):
        raise ValueError(f"{path}: sections out of place (table {header.table_offset}, records "
                         f"{header.records_offset}, strings {header.strings_offset}+{header.strings_size}, "
                         f"size {size})")


# ---------------------------------------------------------------------------------------------- cache

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def image_file_stem(str family) -> str:
    """'odeck:gold' -> 'odeck%3Agold': a reversible file name without '.', '/', ':' or anything else odd."""
    if not family:
        raise ValueError("empty family name")
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), family)


class ImageCache:
    """The images of one process, shared with every other process of the node through `directory`.

    get() maps directory/'<family>.<version>.img' when some process already built it; otherwise it takes
    an exclusive flock on directory/'<family>.lock', looks again (another process may have finished while
    this one waited), and only then builds from load_rows(). After a build, older versions of the family
    are unlinked: processes that still map them keep reading them (the mapping holds the inode), and the
    space goes back when the last one lets go. The process keeps the latest image of each family; an image
    it drops stays valid for whoever still holds it.
    """

    def __init__(self, str directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._images = {}       # family -> (version, DeckImage)
        self.builds = 0         # images this process built (the rest were mapped from a peer's build)

    def path_for(self, str family, version) -> str:
        return os.path.join(self.directory, f"{image_file_stem(family)}.{int(version)}.img")

    def get(self, str family, version, str kind, load_rows):
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
            image = self._build(family, version, kind, path, load_rows)
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

    def _build(self, str family, int version, str kind, str path, load_rows):
        stem = image_file_stem(family)
        fd = os.open(os.path.join(self.directory, f"{stem}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            image = self._open(path, kind)      # built by another process while we waited?
            if image is not None:
                return image
            rows = load_rows()
            build_image(path, kind, rows if type(rows) is list else list(rows))
            self.builds += 1
            image = DeckImage(path)
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
