"""Label Studio's brush RLE, bit for bit as label-studio-converter's ``brush.encode_rle``
(thi.ng rle-pack), vectorised; and a boolean mask as that RLE."""

from __future__ import annotations

import numpy as np

__all__ = ["encode_rle", "mask_to_rle"]

_RLE_SIZES = (3, 4, 8, 16)  # bits of a run length, selected by a 2-bit index
_WORD = 8  # bits per value


def _runs(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, values) of the maximal runs of a flat array."""
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], np.flatnonzero(arr[1:] != arr[:-1]) + 1))
    lengths = np.diff(np.concatenate((starts, [arr.size])))
    return lengths.astype(np.int64), arr[starts].astype(np.int64)


def _rle(n: int, lengths: np.ndarray, values: np.ndarray, chunk: int = 1 << 16) -> list[int]:
    """Pack ``n`` values given as runs; bounded memory (runs go out ``chunk`` at a time)."""
    header = f"{n:032b}{_WORD - 1:05b}" + "".join(f"{s - 1:04b}" for s in _RLE_SIZES)
    carry = np.frombuffer(header.encode(), dtype=np.uint8) - ord("0")
    sizes = np.asarray(_RLE_SIZES, dtype=np.int64)
    pieces = (lengths - 1) // 2**16 + 1  # a run over 2**16 goes out in pieces of 2**16
    values = np.repeat(values, pieces)
    runs = np.full(int(pieces.sum()), 2**16, dtype=np.int64)
    runs[np.cumsum(pieces) - 1] = lengths - 2**16 * (pieces - 1)
    packed: list[np.ndarray] = []
    for lo in range(0, runs.size, chunk):
        run, val = runs[lo:lo + chunk], values[lo:lo + chunk]
        idx = np.searchsorted([8, 16, 256], run, side="left")  # run-length size index
        width = sizes[idx]
        total = 1 + 2 + width + _WORD
        code = ((run > 1).astype(np.int64) << (total - 1)) | (idx << (width + _WORD)) \
            | ((run - 1) << _WORD) | val
        shift = total[:, None] - 1 - np.arange(int(total.max()))[None, :]
        bits = ((code[:, None] >> np.maximum(shift, 0)) & 1)[shift >= 0].astype(np.uint8)
        bits = np.concatenate((carry, bits))
        whole = bits.size - bits.size % 8
        packed.append(np.packbits(bits[:whole]))
        carry = bits[whole:]
    pad = 8 - carry.size % 8  # 1..8 zero bits, as the converter pads
    packed.append(np.packbits(np.concatenate((carry, np.zeros(pad, dtype=np.uint8)))))
    return np.concatenate(packed).tolist()


def encode_rle(values: np.ndarray) -> list[int]:
    """Label Studio's RLE of a flat uint8 array (thi.ng rle-pack, word size 8, run-length
    sizes 3/4/8/16 bits), bit for bit as label-studio-converter's ``encode_rle``.

    Header: 32-bit count, word size - 1 (5 bits), each run-length size - 1 (4 bits). Then
    per run: 1 bit repeat flag, 2 bits size index, length - 1, the 8-bit value (single
    values are literal runs of length 1). Runs longer than 2**16 are split; the bits are
    padded with 1 to 8 zero bits, as the converter does.
    """
    arr = np.asarray(values, dtype=np.uint8).ravel()
    return _rle(arr.size, *_runs(arr))


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """A boolean (H, W) mask as Label Studio's brush RLE: RGBA values, 255 where set
    (the converter's ``mask2rle``, without building the 4x array)."""
    flat = np.asarray(mask, dtype=bool).ravel()
    lengths, values = _runs(flat.view(np.uint8))
    return _rle(4 * flat.size, 4 * lengths, values * 255)
