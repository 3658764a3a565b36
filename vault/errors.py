"""The project's exceptions and the one table mapping them to HTTP and DIMSE.

Every refusal the service can give is one of these classes. Messages are
written for the person who sent the data and never carry PHI: no patient
attribute, UID, file name or path is put into a message. Entry points turn an
exception into a response with :func:`http_status` or :func:`dimse_status`
(and :func:`dimse_error_comment` for the DIMSE Error Comment); nothing else
decides those codes.
"""

from __future__ import annotations

from crypto.errors import CryptoError, IntegrityError, KeyDestroyedError, KeyProviderError


class VaultError(Exception):
    """Base class of every error the vault reports to a caller.

    ``reason`` is a short machine-readable code, ``str(exc)`` a plain-words
    explanation without PHI.
    """

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


# --- input refused ------------------------------------------------------


class InvalidInput(VaultError):
    """The input is not acceptable; nothing of it was stored."""

    reason = "invalid"


class NotDicom(InvalidInput):
    reason = "not-dicom"


class TruncatedFile(InvalidInput):
    reason = "truncated"


class CorruptHeader(InvalidInput):
    reason = "corrupt-header"


class MissingAttribute(InvalidInput):
    reason = "missing-attribute"


class PolicyRefused(InvalidInput):
    """Valid DICOM, but outside what the validation policy accepts."""

    reason = "policy"


class SopClassRefused(PolicyRefused):
    reason = "sop-class"


class TransferSyntaxRefused(PolicyRefused):
    reason = "transfer-syntax"


class SopClassMismatch(InvalidInput):
    """The data set's SOP Class UID is not the one its sender declared for it
    (the C-STORE's Affected SOP Class, the negotiated abstract syntax)."""

    reason = "sop-class-mismatch"


class TooLarge(InvalidInput):
    reason = "too-large"


class UnsafeArchive(InvalidInput):
    reason = "unsafe-archive"


class ConflictingResend(VaultError):
    """Same SOP Instance UID as a stored instance, with different bytes."""

    reason = "conflict"


class NotReady(VaultError):
    """The thing asked for exists but is not finished yet (e.g. a study in progress)."""

    reason = "not-ready"


class UnderLegalHold(VaultError):
    """An active legal hold covers the data: it is kept until the hold is lifted."""

    reason = "legal-hold"


class CatalogNotEmpty(VaultError):
    """A restore would overwrite a catalog that holds data (``--force`` to replace it)."""

    reason = "catalog-not-empty"


class IdentityNotVerified(VaultError):
    """A data-subject request whose requester's identity was not verified yet."""

    reason = "identity-not-verified"


class RequestNotOpen(VaultError):
    """The data-subject request or incident is closed, or the action is not one of its kind."""

    reason = "request-not-open"


class RangeNotSatisfiable(VaultError):
    """The byte range asked for lies outside the representation (``size`` bytes long)."""

    reason = "range-not-satisfiable"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class NotAcceptable(VaultError):
    """None of the media types (or transfer syntaxes) the client accepts can be served."""

    reason = "not-acceptable"


class PreviewUnavailable(VaultError):
    """A stored image cannot be shown as a thumbnail (no pixels, encoding, size)."""

    reason = "no-preview"


# --- resumable uploads (tus) ---------------------------------------------


class BadRequest(VaultError):
    """A request the protocol does not allow: a header missing or malformed."""

    reason = "bad-request"


class UnsupportedMediaType(VaultError):
    """The request body is not of the media type the route takes."""

    reason = "media-type"


class OffsetMismatch(VaultError):
    """A resumable upload's chunk does not start where the received bytes end."""

    reason = "offset-mismatch"


class CaseClosed(VaultError):
    """The case is closed: it takes no new upload or file (what it holds is kept)."""

    reason = "case-closed"


class UploadClosed(VaultError):
    """The upload (or the file) is finished and takes no more bytes."""

    reason = "upload-closed"


class ProtocolVersionUnsupported(VaultError):
    """The client speaks a version of the resumable upload protocol this service does not."""

    reason = "tus-version"


# --- access -------------------------------------------------------------


class NotFound(VaultError):
    """Unknown, or outside the caller's reach (never told apart)."""

    reason = "not-found"


class NotAuthenticated(VaultError):
    reason = "not-authenticated"


class PermissionDenied(VaultError):
    reason = "forbidden"


class TooManyAttempts(VaultError):
    """Logins refused for a while after repeated failures (account or address)."""

    reason = "throttled"


# --- capacity -----------------------------------------------------------


class StorageUnavailable(VaultError):
    """The object store or catalog could not durably store the data."""

    reason = "storage-unavailable"


# --- running the service ---------------------------------------------------


class ReceiverNotStarted(VaultError):
    """The DICOM receiver could not start: its address cannot be bound, its
    TLS settings or files are wrong, or a receiver process exited while
    starting. The message says which, in plain words."""

    reason = "receiver-not-started"


# The one mapping table: (exception class, HTTP status, DIMSE C-STORE status).
# Checked in order, most specific first. DIMSE codes: PS3.4 Annex B.2.3 and
# PS3.7 Annex C: 0xA700 out of resources, 0xA900 data set does not match SOP
# class, 0xC000 cannot understand, 0x0124 refused: not authorised,
# 0x0122 SOP class not supported, 0x0110 processing failure. 0xA700 is kept
# for what may pass on a later try (the store or the key provider is down), so
# that a PACS retries it; a file over the size limit will never pass (0xC000).
_STATUS_TABLE: tuple[tuple[type[Exception], int, int], ...] = (
    (SopClassRefused, 415, 0x0122),
    (TransferSyntaxRefused, 415, 0xA900),
    (MissingAttribute, 422, 0xA900),
    (SopClassMismatch, 422, 0xA900),
    (TooLarge, 413, 0xC000),
    (PolicyRefused, 422, 0x0124),
    (NotDicom, 415, 0xC000),
    (TruncatedFile, 422, 0xC000),
    (CorruptHeader, 422, 0xC000),
    (UnsafeArchive, 422, 0xC000),
    (InvalidInput, 422, 0xC000),
    (ConflictingResend, 409, 0xC000),
    (NotReady, 409, 0x0110),
    (UnderLegalHold, 409, 0x0110),
    (CatalogNotEmpty, 409, 0x0110),
    (IdentityNotVerified, 409, 0x0110),
    (RequestNotOpen, 409, 0x0110),
    (RangeNotSatisfiable, 416, 0x0110),
    (NotAcceptable, 406, 0x0110),
    (PreviewUnavailable, 422, 0x0110),
    (BadRequest, 400, 0x0110),
    (UnsupportedMediaType, 415, 0x0110),
    (OffsetMismatch, 409, 0x0110),
    (UploadClosed, 409, 0x0110),
    (CaseClosed, 409, 0x0110),
    (ProtocolVersionUnsupported, 412, 0x0110),
    (NotFound, 404, 0x0110),
    (NotAuthenticated, 401, 0x0124),
    (PermissionDenied, 403, 0x0124),
    (TooManyAttempts, 429, 0x0124),
    (StorageUnavailable, 503, 0xA700),
    (KeyProviderError, 503, 0xA700),
    (KeyDestroyedError, 410, 0x0110),
    (IntegrityError, 500, 0x0110),
    (CryptoError, 500, 0x0110),
    (VaultError, 500, 0x0110),
)


def _row(exc: VaultError | CryptoError) -> tuple[int, int]:
    for cls, http, dimse in _STATUS_TABLE:
        if isinstance(exc, cls):
            return http, dimse
    raise TypeError(type(exc).__name__)


def http_status(exc: VaultError | CryptoError) -> int:
    """The HTTP status answering ``exc``."""
    return _row(exc)[0]


def dimse_status(exc: VaultError | CryptoError) -> int:
    """The DIMSE C-STORE status answering ``exc``."""
    return _row(exc)[1]


# PS3.7 C.4: an Error Comment is a LO of at most 64 characters.
ERROR_COMMENT_LENGTH = 64


def dimse_error_comment(exc: VaultError | CryptoError) -> str:
    """The DIMSE Error Comment answering ``exc``: its plain-words message (never
    PHI, as every message here), in ASCII and cut to 64 characters."""
    text = " ".join(str(exc).split()).encode("ascii", "replace").decode("ascii")
    if len(text) <= ERROR_COMMENT_LENGTH:
        return text
    return text[: ERROR_COMMENT_LENGTH - 3].rstrip() + "..."
