# Declarations of the rate deck image (fastpath/deck_image.pyx) for other Cython modules:
#
#     from fastpath.deck_image cimport DeckImage, RateRec
#
#     cdef RateRec rec
#     if image.match(digits, length, &rec):      # noexcept nogil
#         ...                                    # rec.rate_per_min, rec.prefix_len, ...
#         trunks = image.record_strings(&rec)    # with the GIL: list[str] (odeck) / str (tdeck)
#
# The structs below are also the on-disk layout (native byte order and alignment; the header records
# sizeof() of each so that an image written by a different build is refused, not misread).

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

# One deck row without its prefix. Money is integer micros. `strip` is 0 in an origination deck.
# str_offset/str_length locate, in the image's string pool, the forced trunks joined by ',' (odeck)
# or the prepend digits (tdeck); str_length 0 means [] / ''.
ctypedef struct RateRec:
    int64_t connect_fee
    int64_t rate_per_min
    int32_t included_seconds
    int32_t initial_increment
    int32_t increment
    int32_t priority
    int32_t strip
    uint8_t prefix_len
    uint32_t str_offset
    uint32_t str_length

# The key of a prefix: int('1' + prefix) (the leading 1 keeps '4' and '04' apart; 0 never is one).
ctypedef struct Slot:
    uint64_t key
    uint32_t index                # the entry's own position (a cross-check: anything else is a corrupt image)
    uint32_t reserved

# One prefix: its key and its record, one 64-byte cache line, at the position its key hashes to.
ctypedef struct Entry:
    Slot slot
    RateRec rec

# One bucket of the direct level, for the numbers whose first level_digits digits are the bucket's number.
ctypedef struct LevelEntry:
    uint32_t lengths              # bit n: a prefix of n digits may match (n > level_digits: some prefix of n
                                  # digits starts with these digits; n <= level_digits: the longest prefix of
                                  # these digits, exactly, whose entry is short_entry)
    uint32_t short_entry          # 1 + position of that longest short prefix; 0 = none

ctypedef struct ImageHeader:
    char magic[8]
    uint32_t format_version
    uint32_t kind                 # 1 odeck, 2 tdeck
    uint32_t header_size          # sizeof(ImageHeader)
    uint32_t record_size          # sizeof(RateRec)
    uint32_t slot_size            # sizeof(Slot)
    uint32_t length_mask          # bit n set: some prefix has n digits (1..18)
    uint64_t count                # entries (prefixes)
    uint64_t slot_count           # range of the perfect hash before remapping, >= count
    uint64_t table_offset         # Entry[count]
    uint64_t records_offset       # table_offset + sizeof(Slot): the RateRec of entry 0 (stride sizeof(Entry))
    uint64_t strings_offset
    uint64_t strings_size
    uint64_t file_size
    uint32_t byte_order           # 0x01020304 as written
    uint32_t level_digits         # D: the direct level has 10**D buckets
    uint64_t level_offset         # LevelEntry[10**level_digits]
    uint64_t pilot_offset         # uint16_t[pilot_count]
    uint64_t pilot_count
    uint64_t remap_offset         # uint32_t[slot_count - count]
    uint64_t hash_seed
    uint32_t entry_size           # sizeof(Entry)
    uint32_t level_entry_size     # sizeof(LevelEntry)


cdef class DeckImage:
    cdef const char* _base        # the read-only MAP_SHARED mapping, NULL once closed
    cdef size_t _size
    cdef const Entry* _entries    # NULL once closed
    cdef const LevelEntry* _level
    cdef const uint16_t* _pilots
    cdef const uint32_t* _remap
    cdef const char* _strings
    cdef uint64_t _count
    cdef uint64_t _slot_count
    cdef uint64_t _pilot_count
    cdef uint64_t _hash_seed
    cdef uint64_t _level_base     # 10**level_digits
    cdef uint64_t _strings_size
    cdef uint32_t _level_digits
    cdef uint32_t _length_mask
    cdef uint32_t _kind
    cdef readonly str path

    cdef bint match(self, const char* digits, Py_ssize_t length, RateRec* out) noexcept nogil
    cdef object record_strings(self, const RateRec* rec)
    cdef tuple record_tuple(self, const RateRec* rec)
