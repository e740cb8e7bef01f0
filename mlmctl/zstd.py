"""A streaming zstandard reader that notices truncation (`.jsonl.zst`, `.txt.zst`, `.csv.zst`).

`zstandard`'s own `stream_reader` ends quietly when the data stops in the middle of a frame
(tested with zstandard 0.25: a file cut to a third reads as a shorter, "complete" file), which
would pass a damaged download off as finished input. `ZstdReader` feeds a decompression object
small slices of the compressed file, frame after frame, and raises `ZstdDamaged` (an EOFError,
like gzip's truncation error) when the file ends inside a frame or the data is invalid.

    text = io.TextIOWrapper(io.BufferedReader(ZstdReader(open("a.jsonl.zst", "rb"))), "utf-8")

Memory: compressed input is fed 2 KiB at a time, so one slice expands to at most a few MB
even for data built to expand as much as zstd allows, and usually to ~10 KB.
"""

from __future__ import annotations

import io

_SLICE = 2048


class ZstdDamaged(EOFError):
    """The zstandard data is truncated or invalid."""


class ZstdReader(io.RawIOBase):
    """Decompressed bytes of a (multi-frame) zstandard stream; `raw` stays owned by the caller."""

    def __init__(self, raw) -> None:
        import zstandard

        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._error = zstandard.ZstdError
        self._obj = None  # the frame being decoded; None between frames
        self._pending = b""  # input read but not yet fed (the start of the next frame)
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while self._pos >= len(self._out):
            if not self._fill():
                return 0
        n = min(len(buf), len(self._out) - self._pos)
        buf[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def _fill(self) -> bool:
        """Decode the next slice of input into `_out`; False at a clean end of the stream."""
        data = self._pending or self._raw.read(_SLICE)
        self._pending = b""
        if not data:
            if self._obj is not None:
                raise ZstdDamaged("zstandard data ends inside a frame (truncated file)")
            return False
        if self._obj is None:
            self._obj = self._dctx.decompressobj()
        try:
            self._out = self._obj.decompress(data)
        except self._error as e:
            raise ZstdDamaged(f"invalid zstandard data ({e})") from None
        self._pos = 0
        if self._obj.eof:
            # A frame ended inside this slice; what follows it starts the next frame.
            self._pending = self._obj.unused_data
            self._obj = None
        return True
