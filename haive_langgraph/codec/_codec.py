"""The production codec: framing, zstd compression and AES-256-GCM encryption."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag

from haive_langgraph.codec._base import CONTENT_KEY_BYTES, HEADER, RowContext
from haive_langgraph.codec._compression import Compression, Zstd
from haive_langgraph.codec._frame import (
    BASE_HEADER_BYTES,
    FLAG_COMPRESSED,
    FLAG_DICTIONARY,
    FLAG_ENCRYPTED,
    NONCE_BYTES,
    frame_key_id,
    parse_header,
    plain_header,
)
from haive_langgraph.codec._guard import (
    UnsafeValueError,
    check_before_encrypting,
    guard_for,
    parse_allowed_modules,
)
from haive_langgraph.codec._keys import ENCRYPTION_KEYS_ENV, KeyRing
from haive_langgraph.errors import (
    ConfigurationError,
    CorruptDataError,
    DecryptionError,
    ValueTooLargeError,
)

__all__ = ["HaiveCodec"]

_HEADER_COMPRESSED = plain_header(FLAG_COMPRESSED)
_HEADER_DICTIONARY = plain_header(FLAG_COMPRESSED | FLAG_DICTIONARY)


class HaiveCodec:
    """Frames, compresses (zstd) and encrypts (AES-256-GCM) stored values.

    Encoding compresses payloads above the threshold when that makes them
    smaller (with zstd dictionary 1 unless turned off), then, with a key
    ring, encrypts with the row's tenant key (or the global primary key).
    The associated data binds each ciphertext to its frame header and its row
    (tenant, scope, namespace, kind, key), so a frame altered or copied to
    another row fails to decrypt.

    Decoding reads every frame version-1 layout (plain, compressed,
    encrypted, both) and rejects anything else with
    :class:`~haive_langgraph.errors.CorruptDataError`. A frame without flags
    is exactly what :class:`PlainCodec` writes, so both read each other's
    plain frames.

    Instances are immutable and safe to share between threads.

    Args:
        compression: zstd settings; ``True`` for the defaults, ``False`` to
            write uncompressed frames (compressed ones are still read).
        keyring: Keys to encrypt with; ``None`` writes unencrypted frames.
        require_encryption: Refuse to read frames that are not encrypted
            (fail closed once every row has been encrypted).
        allowed_modules: Module prefixes of your own state types (pydantic
            models, dataclasses, enums, named tuples) that a plaintext stored
            value may rebuild, e.g. ``("myapp.state",)``; LangChain's and
            LangGraph's own types are always allowed. Readers refuse any other
            type a plaintext value names, without importing it (see
            ``docs/codec.md``, "Forged stored values").

    Raises:
        ConfigurationError: ``require_encryption`` without a key ring, or an
            ``allowed_modules`` entry that is not a module name.

    Example:
        >>> codec = HaiveCodec(keyring=KeyRing.from_string(os.environ["HAIVE_ENCRYPTION_KEYS"]))
        >>> ctx = RowContext("acme", "thread-1", Kind.BLOB, "k")
        >>> codec.decode(codec.encode(b"value", ctx), ctx)
        b'value'
    """

    __slots__ = ("_allowed", "_compression", "_keyring", "_require", "_zstd")

    def __init__(
        self,
        *,
        compression: Compression | bool = True,
        keyring: KeyRing | None = None,
        require_encryption: bool = False,
        allowed_modules: Sequence[str] = (),
    ) -> None:
        if isinstance(compression, bool):
            compression = Compression(enabled=compression)
        if not isinstance(compression, Compression):
            raise ConfigurationError("compression must be a Compression or a bool")
        if keyring is not None and not isinstance(keyring, KeyRing):
            raise ConfigurationError("keyring must be a KeyRing")
        if require_encryption and keyring is None:
            raise ConfigurationError(
                "require_encryption needs encryption keys: set "
                f"{ENCRYPTION_KEYS_ENV} or pass a KeyRing"
            )
        self._compression = compression
        self._zstd = Zstd(compression)
        self._keyring = keyring
        self._require = require_encryption
        self._allowed = parse_allowed_modules(allowed_modules, source="allowed_modules")

    @property
    def compression(self) -> Compression:
        """The compression settings."""
        return self._compression

    @property
    def keyring(self) -> KeyRing | None:
        """The key ring, or ``None`` when the codec does not encrypt."""
        return self._keyring

    @property
    def require_encryption(self) -> bool:
        """Whether frames that are not encrypted are refused."""
        return self._require

    @property
    def allowed_modules(self) -> tuple[str, ...]:
        """Module prefixes of user types a plaintext stored value may rebuild."""
        return self._allowed

    def __repr__(self) -> str:
        return (
            f"HaiveCodec(compression={self._compression!r}, keyring={self._keyring!r}, "
            f"require_encryption={self._require!r}, allowed_modules={self._allowed!r})"
        )

    # -- the Codec protocol --------------------------------------------------

    def encode(self, payload: bytes, ctx: RowContext) -> bytes:
        """Frame ``payload`` for the row ``ctx``, compressing and encrypting as configured.

        Args:
            payload: Serialised value.
            ctx: The row the frame will be stored in.

        Returns:
            The frame to store.

        Raises:
            ValueTooLargeError: ``payload`` is longer than
                ``compression.max_decompressed_size``, the most a reader
                expands a frame to: refused here, so that what is written can
                be read (compressed or not).
            KeyDestroyedError: The row's tenant was crypto-shredded.
        """
        if type(payload) is not bytes:
            payload = bytes(payload)  # bytearray, memoryview
        limit = self._compression.max_decompressed_size
        if len(payload) > limit:
            raise ValueTooLargeError(ctx.describe(), len(payload), limit)
        return self._frame(payload, ctx, compress=True)

    def _frame(self, payload: bytes, ctx: RowContext, *, compress: bool) -> bytes:
        keyring = self._keyring
        if keyring is None:
            compressed = self._zstd.compress(payload, checksum=True) if compress else None
            if compressed is None:
                return HEADER + payload
            if self._zstd.uses_dictionary:
                return _HEADER_DICTIONARY + compressed
            return _HEADER_COMPRESSED + compressed
        key = keyring._encryption_key(ctx.tenant_id, ctx)
        # The AEAD tag authenticates the compressed bytes; no zstd checksum needed.
        compressed = self._zstd.compress(payload, checksum=False) if compress else None
        if compressed is None:
            header = key.prefix_plain + os.urandom(NONCE_BYTES)
            body = payload
        else:
            prefix = key.prefix_dictionary if self._zstd.uses_dictionary else key.prefix_compressed
            header = prefix + os.urandom(NONCE_BYTES)
            body = compressed
        nonce = header[-NONCE_BYTES:]
        return header + key.aead.encrypt(nonce, body, header + ctx.associated_data())

    def decode(self, frame: bytes, ctx: RowContext) -> bytes:
        """The payload of ``frame``, read from the row ``ctx``.

        Args:
            frame: A stored frame.
            ctx: The row it was read from; must match the row it was written for.

        Returns:
            The payload given to :meth:`encode`.

        Raises:
            DecryptionError: The frame does not authenticate (altered, another
                row's, wrong key), its key is missing, or it is not encrypted
                while encryption is required. With ``require_encryption`` any
                malformed frame raises this too.
            KeyDestroyedError: The row's tenant or key was crypto-shredded.
            DecompressionLimitError: The payload would exceed
                ``max_decompressed_size``.
            CorruptDataError: The frame is malformed, truncated, or of an
                unknown version or flags.
        """
        if type(frame) is not bytes:
            frame = bytes(frame)  # bytearray, memoryview
        try:
            flags, key_id, nonce, offset = parse_header(frame, ctx)
        except CorruptDataError as exc:
            if self._require:
                # Every acceptable frame is encrypted: what cannot be parsed
                # as one cannot be authenticated.
                raise DecryptionError(str(exc)) from None
            raise
        keyring = self._keyring
        if flags & FLAG_ENCRYPTED:
            assert key_id is not None
            if keyring is None:
                raise DecryptionError(
                    f"{ctx.describe()} is encrypted with key {key_id!r}, but this codec has no "
                    f"encryption keys; set {ENCRYPTION_KEYS_ENV} to read it"
                )
            key = keyring._decryption_key(ctx, key_id)
            try:
                body: bytes | memoryview = key.aead.decrypt(
                    nonce, memoryview(frame)[offset:], frame[:offset] + ctx.associated_data()
                )
            except InvalidTag:
                raise DecryptionError(
                    f"{ctx.describe()} failed to decrypt with key {key_id!r}: the frame was "
                    "altered, was copied from another row, or that key id names a different key"
                ) from None
        else:
            if self._require:
                raise DecryptionError(
                    f"{ctx.describe()} is a plaintext row where encryption is required; "
                    "re-encrypt it (HaiveCodec.reencode without require_encryption) or restore it"
                )
            if keyring is not None:
                keyring._check_tenant(ctx)
            if not flags:
                return frame[BASE_HEADER_BYTES:]
            body = memoryview(frame)[BASE_HEADER_BYTES:]
        if flags & FLAG_COMPRESSED:
            return self._zstd.decompress(body, ctx, dictionary=bool(flags & FLAG_DICTIONARY))
        assert isinstance(body, bytes)
        return body

    def content_key(self, payload: bytes, tenant_id: str) -> bytes:
        """A 16-byte key, equal for equal payloads of one tenant.

        Without encryption: ``sha256(payload)[:16]``. With encryption: an
        HMAC-SHA256 under a key derived (HKDF) from the tenant's primary key
        (or the global one) and the tenant id, so stored keys reveal nothing
        about the content and differ between tenants. Keys stay stable while
        the primary key does not change; after a rotation, an old value
        written again gets a new content key and is stored once more, which
        is harmless.

        Raises:
            KeyDestroyedError: The tenant was crypto-shredded.
        """
        if self._keyring is None:
            return hashlib.sha256(payload).digest()[:CONTENT_KEY_BYTES]
        key = self._keyring._encryption_key(tenant_id, None)
        return hmac.digest(key.mac_key(tenant_id), payload, "sha256")[:CONTENT_KEY_BYTES]

    # -- key rotation --------------------------------------------------------

    def needs_reencrypt(self, frame: bytes, tenant_id: str = "") -> bool:
        """Whether :meth:`reencode` would put ``frame`` under a different key.

        True for a frame encrypted with a key other than the tenant's current
        primary key, and for an unencrypted frame when this codec encrypts.

        Args:
            frame: A stored frame.
            tenant_id: The tenant of its row.

        Raises:
            CorruptDataError: ``frame`` is not a well-formed frame.
            KeyDestroyedError: The tenant was crypto-shredded.
        """
        current = self._keyring.primary_key_id(tenant_id) if self._keyring is not None else None
        return frame_key_id(frame) != current

    def reencode(self, frame: bytes, ctx: RowContext) -> bytes:
        """Decode ``frame`` (with whichever key it names) and encode it afresh.

        The result uses the current primary key of the row's tenant and the
        current compression settings. ``require_encryption`` still applies to
        the input: a plaintext row is only encrypted by a codec that accepts
        plaintext, so that rows planted in plaintext are not laundered; and a
        plaintext value is scanned as a reader scans it (readers trust
        encrypted rows), with this codec's ``allowed_modules``.

        A payload longer than ``max_decompressed_size`` (an uncompressed row
        written before writes were limited, or under a larger limit) is
        framed again uncompressed, so that it stays readable.

        Raises:
            DecryptionError: As :meth:`decode`.
            CorruptDataError: As :meth:`decode`.
            UnsafeValueError: A plaintext value names a type or function that
                readers refuse (see ``docs/codec.md``); it is left as it is.
        """
        payload = self.decode(frame, ctx)
        if self._keyring is not None and frame_key_id(frame) is None:
            try:
                check_before_encrypting(ctx.kind.value, payload, guard_for(None, self))
            except UnsafeValueError as exc:
                raise UnsafeValueError(f"{ctx.describe()}, not encrypted: {exc}") from None
        compress = len(payload) <= self._compression.max_decompressed_size
        return self._frame(payload, ctx, compress=compress)
