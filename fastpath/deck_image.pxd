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

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

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

# A slot of the open-addressing table: key = int('1' + prefix) (0 = empty), index into the RateRec array.
ctypedef struct Slot:
    uint64_t key
    uint32_t index
    uint32_t reserved

ctypedef struct ImageHeader:
    char magic[8]
    uint32_t format_version
    uint32_t kind                 # 1 odeck, 2 tdeck
    uint32_t header_size
    uint32_t record_size          # sizeof(RateRec)
    uint32_t slot_size            # sizeof(Slot)
    uint32_t length_mask          # bit n set: some prefix has n digits (1..18)
    uint64_t count                # entries (RateRec array length)
    uint64_t slot_count           # power of two, >= 2 * count
    uint64_t table_offset
    uint64_t records_offset
    uint64_t strings_offset
    uint64_t strings_size
    uint64_t file_size
    uint32_t byte_order           # 0x01020304 as written
    uint32_t hash_shift           # 64 - log2(slot_count)


cdef class DeckImage:
    cdef const char* _base        # the read-only MAP_SHARED mapping, NULL once closed
    cdef size_t _size
    cdef const Slot* _slots
    cdef const RateRec* _records
    cdef const char* _strings
    cdef uint64_t _count
    cdef uint64_t _slot_mask
    cdef uint64_t _strings_size
    cdef uint32_t _hash_shift
    cdef uint32_t _length_mask
    cdef uint32_t _kind
    cdef readonly str path

    cdef bint match(self, const char* digits, Py_ssize_t length, RateRec* out) noexcept nogil
    cdef object record_strings(self, const RateRec* rec)
    cdef tuple record_tuple(self, const RateRec* rec)
