"""Readable twin of deck_image.digest64: XXH64 with seed 0, as published (github.com/Cyan4973/xxHash,
doc/xxhash_spec.md), in plain Python. Slow on purpose; tests check that the compiled one gives the same values."""

from __future__ import annotations

P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63,
                      0x27D4EB2F165667C5)
MASK = 2**64 - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & MASK


def _round(acc: int, lane: int) -> int:
    return _rotl((acc + lane * P2) & MASK, 31) * P1 & MASK


def _merge(acc: int, lane: int) -> int:
    return ((acc ^ _round(0, lane)) * P1 + P4) & MASK


def _word(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at:at + size], "little")  # little-endian on every machine


def xxh64(data: bytes | bytearray | memoryview) -> int:
    data = bytes(data)
    at, length = 0, len(data)
    if length >= 32:
        lanes = [(P1 + P2) & MASK, P2, 0, (-P1) & MASK]
        while at + 32 <= length:  # stripes of four 8-byte lanes
            lanes = [_round(lane, _word(data, at + 8 * n, 8)) for n, lane in enumerate(lanes)]
            at += 32
        h = sum(_rotl(lane, r) for lane, r in zip(lanes, (1, 7, 12, 18), strict=True)) & MASK
        for lane in lanes:
            h = _merge(h, lane)
    else:
        h = P5
    h = (h + length) & MASK
    while at + 8 <= length:
        h = (_rotl(h ^ _round(0, _word(data, at, 8)), 27) * P1 + P4) & MASK
        at += 8
    if at + 4 <= length:
        h = (_rotl(h ^ (_word(data, at, 4) * P1 & MASK), 23) * P2 + P3) & MASK
        at += 4
    while at < length:
        h = _rotl(h ^ (data[at] * P5 & MASK), 11) * P1 & MASK
        at += 1
    h = (h ^ (h >> 33)) * P2 & MASK
    h = (h ^ (h >> 29)) * P3 & MASK
    return h ^ (h >> 32)
