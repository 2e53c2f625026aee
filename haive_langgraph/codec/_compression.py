"""zstd compression with bounded decompression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zstandard

from haive_langgraph.codec._base import RowContext
from haive_langgraph.codec._dictionary import ZSTD_DICTIONARY_1
from haive_langgraph.errors import ConfigurationError, CorruptDataError, DecompressionLimitError

DEFAULT_LEVEL = 3
DEFAULT_THRESHOLD = 64
DEFAULT_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024
MIN_LEVEL = -(1 << 17)  # zstd's fastest "negative" level (ZSTD_minCLevel)
MAX_LEVEL: int = zstandard.MAX_COMPRESSION_LEVEL
# Output chunk size of the streaming pass used for frames that do not declare
# their size: large enough to be fast, small enough to keep memory flat.
_STREAM_CHUNK = 1 << 20
# zstd's default window at levels up to 19 is at most 8 MiB; frames that
# declare their size use a window no larger than that size.
_MIN_WINDOW_LOG = 23
_MAX_WINDOW_LOG = 31


@dataclass(frozen=True, slots=True)
class Compression:
    """zstd settings of a codec.

    Attributes:
        enabled: Whether new frames are compressed. Compressed frames are
            always readable, whatever this says.
        level: zstd level (1 fast ... 22 small; negative levels are faster
            still). Default 3.
        threshold: Payloads longer than this many bytes are compressed
            (when that makes them smaller); shorter ones are stored as they
            are. Default 64.
        dictionary: Compress with haive's built-in zstd dictionary 1 (the
            field names and channel names every checkpoint body and chat
            message repeats): a 200-byte checkpoint body shrinks to about 60
            bytes, a 1 KB message by about 100 bytes more than without it.
            Frames so written are flagged ``0x04``. Default on.
        max_decompressed_size: Largest payload a compressed frame may expand
            to, in bytes (default 64 MiB). Larger frames are refused with
            :class:`DecompressionLimitError` before they are expanded.

    Raises:
        ConfigurationError: A value is out of range.
    """

    enabled: bool = True
    level: int = DEFAULT_LEVEL
    threshold: int = DEFAULT_THRESHOLD
    max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE
    dictionary: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not MIN_LEVEL <= self.level <= MAX_LEVEL:
            raise ConfigurationError(
                f"compression level {self.level!r} is out of range: "
                f"use 1 (fast) to {MAX_LEVEL} (small), or a negative level for speed"
            )
        if isinstance(self.threshold, bool) or self.threshold < 0:
            raise ConfigurationError(
                f"compression threshold {self.threshold!r} must be a byte count >= 0"
            )
        if isinstance(self.max_decompressed_size, bool) or self.max_decompressed_size < 1:
            raise ConfigurationError(
                f"max_decompressed_size {self.max_decompressed_size!r} must be a byte count >= 1"
            )


class Zstd:
    """Compresses and decompresses for one :class:`Compression` setting.

    zstd contexts are not safe to use from two threads at once, and building
    one costs about as much as compressing 1 KB (measured: 4.2 us to build a
    level-3 compressor, 5.9 us to compress 1 KB with a reused one, 11.6 us
    with a fresh one; with dictionary 1, 36 us for the first compression in
    a new context), so used contexts go back to a free list each call takes
    one from. They were kept per thread before, but LangGraph runs a graph's
    saves in a thread pool it makes anew at every invoke, so nearly every
    save built its contexts again.
    """

    __slots__ = ("_free", "_max_window", "settings")

    def __init__(self, settings: Compression) -> None:
        self.settings = settings
        # Idle contexts by kind; list.pop and list.append are atomic, so a
        # context is lent to one caller at a time without a lock.
        self._free: dict[str, list[Any]] = {
            "cctx": [],
            "cctx_checksum": [],
            "dctx": [],
            "dctx_dictionary": [],
        }
        # A window larger than the largest payload we accept is never needed;
        # capping it bounds the memory a hostile frame header can request.
        window_log = max(settings.max_decompressed_size - 1, 1).bit_length()
        self._max_window = 1 << min(max(window_log, _MIN_WINDOW_LOG), _MAX_WINDOW_LOG)

    def _compressor(self, name: str) -> zstandard.ZstdCompressor:
        try:
            cctx: zstandard.ZstdCompressor = self._free[name].pop()
        except IndexError:
            cctx = zstandard.ZstdCompressor(
                level=self.settings.level,
                dict_data=ZSTD_DICTIONARY_1 if self.settings.dictionary else None,
                write_content_size=True,
                write_checksum=name == "cctx_checksum",
                write_dict_id=False,  # the frame flag says which dictionary
            )
        return cctx

    def _decompressor(self, name: str) -> zstandard.ZstdDecompressor:
        try:
            dctx: zstandard.ZstdDecompressor = self._free[name].pop()
        except IndexError:
            dctx = zstandard.ZstdDecompressor(
                dict_data=ZSTD_DICTIONARY_1 if name == "dctx_dictionary" else None,
                max_window_size=self._max_window,
            )
        return dctx

    @property
    def uses_dictionary(self) -> bool:
        """Whether :meth:`compress` output needs dictionary 1 to expand (frame flag ``0x04``)."""
        return self.settings.dictionary

    def compress(self, payload: bytes, *, checksum: bool) -> bytes | None:
        """The compressed form of ``payload``, or ``None`` when it would not be smaller.

        Compressed with dictionary 1 when :attr:`uses_dictionary`.

        Args:
            payload: Bytes to compress.
            checksum: Add zstd's content checksum (used when no AEAD tag
                protects the frame).
        """
        if not self.settings.enabled or len(payload) <= self.settings.threshold:
            return None
        name = "cctx_checksum" if checksum else "cctx"
        cctx = self._compressor(name)
        try:
            compressed = cctx.compress(payload)
        finally:
            self._free[name].append(cctx)
        return compressed if len(compressed) < len(payload) else None

    def decompress(
        self, data: bytes | memoryview, ctx: RowContext, *, dictionary: bool = False
    ) -> bytes:
        """Expand one zstd frame, refusing to go past ``max_decompressed_size``.

        Args:
            data: Exactly one zstd frame.
            ctx: The row, named in errors.
            dictionary: The frame was compressed with dictionary 1.

        Raises:
            DecompressionLimitError: The payload would exceed the limit.
            CorruptDataError: ``data`` is not exactly one valid zstd frame.
        """
        limit = self.settings.max_decompressed_size
        try:
            params = zstandard.get_frame_parameters(data)
        except zstandard.ZstdError:
            raise CorruptDataError(
                f"{ctx.describe()} is flagged as compressed but its body is not a zstd frame"
            ) from None
        size = params.content_size
        declared = size != zstandard.CONTENTSIZE_UNKNOWN
        if declared and size > limit:
            raise DecompressionLimitError(
                f"{ctx.describe()} declares a decompressed size of {size} bytes, more than "
                f"the limit of {limit} bytes (max_decompressed_size); refusing to expand it"
            )
        if params.window_size > self._max_window:
            raise DecompressionLimitError(
                f"{ctx.describe()} needs a {params.window_size}-byte zstd window, more than "
                f"the {self._max_window} bytes allowed by max_decompressed_size ({limit}); "
                "refusing to expand it"
            )
        name = "dctx_dictionary" if dictionary else "dctx"
        dctx = self._decompressor(name)
        try:
            if declared and size > 0:
                # The frame declares its size: zstd allocates exactly that and
                # fails if the data does not match it or runs past the frame.
                return dctx.decompress(data, allow_extra_data=False)
            return self._decompress_undeclared(dctx, data, limit, ctx)
        except zstandard.ZstdError as exc:
            raise CorruptDataError(
                f"{ctx.describe()} has a corrupt compressed payload ({exc})"
            ) from None
        finally:
            self._free[name].append(dctx)

    @staticmethod
    def _decompress_undeclared(
        dctx: zstandard.ZstdDecompressor,
        data: bytes | memoryview,
        limit: int,
        ctx: RowContext,
    ) -> bytes:
        # haive never writes such frames, but zstd allows them. First a
        # streaming pass that only counts (memory stays at one chunk) and stops
        # at the limit; only then the real pass, now known to be bounded.
        total = 0
        with dctx.stream_reader(data, read_across_frames=False) as reader:
            while chunk := reader.read(_STREAM_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise DecompressionLimitError(
                        f"{ctx.describe()} decompresses to more than the limit of {limit} "
                        "bytes (max_decompressed_size); refusing to expand it"
                    )
        dobj = dctx.decompressobj()
        payload = dobj.decompress(data)
        if not dobj.eof:
            raise CorruptDataError(f"{ctx.describe()} has a truncated compressed payload")
        if dobj.unused_data:
            raise CorruptDataError(
                f"{ctx.describe()} has {len(dobj.unused_data)} unexpected bytes after its "
                "compressed payload"
            )
        return payload
