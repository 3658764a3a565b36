"""The one typed settings object for the whole service.

Settings are read once at start-up from, in order of precedence: keyword
arguments, environment variables (prefix ``DICOM_VAULT_``, nested sections
joined with ``__``, e.g. ``DICOM_VAULT_STORE__KIND=s3``), and a TOML file named
by ``DICOM_VAULT_CONFIG``. They are validated then and passed in explicitly to
whatever needs them; nothing reads module globals.

The defaults are the embedded deployment: SQLite catalog, filesystem object
store and a local key file, all under ``data_dir``.

Nothing is silently ignored: a key that is no setting (a misspelt
``tls_certificate``, a ``[keys] provder``) is an error, in every section, as
is a ``DICOM_VAULT_CONFIG`` that names a file that cannot be read.
:func:`load_settings` reports such problems as :class:`InvalidSettings`, one
plain line each, naming the setting but never its value (it may be a secret).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from vault.mac_purposes import RESERVED as RESERVED_MAC_PURPOSES

DEFAULT_DATA_DIR = Path("var")
CONFIG_VARIABLE = "DICOM_VAULT_CONFIG"
UNKNOWN_SETTING = "unknown setting (check its spelling and section)"


class InvalidSettings(Exception):
    """The configuration cannot be used; ``problems`` says why, one line each, no values."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Section(BaseModel):
    """A section of the settings: a key it does not know is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class CatalogSettings(Section):
    """Where the catalog lives: a SQLAlchemy URL (SQLite or PostgreSQL)."""

    url: str | None = None
    echo: bool = False


class FilesystemStoreSettings(Section):
    root: Path | None = None


class S3StoreSettings(Section):
    endpoint: str = "127.0.0.1:8333"
    access_key: str = ""
    secret_key: SecretStr = SecretStr("")
    bucket: str = "dicom-vault"
    region: str | None = None
    secure: bool = False
    part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0)
    # Object Lock can only be switched on when the bucket is created.
    object_lock: bool = False
    # With Object Lock: GOVERNANCE retention of each data object, from when it
    # is written (the default organisation retention, 5 years and a day).
    object_lock_days: int = Field(default=5 * 365 + 1, gt=0)


class StoreSettings(Section):
    """The object store holding encrypted objects."""

    kind: Literal["filesystem", "s3"] = "filesystem"
    filesystem: FilesystemStoreSettings = FilesystemStoreSettings()
    s3: S3StoreSettings = S3StoreSettings()


class LocalKeySettings(Section):
    path: Path | None = None


class Pkcs11KeySettings(Section):
    module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    token_label: str = "dicom-vault"  # noqa: S105 (a label, not a secret)
    user_pin: SecretStr = SecretStr("")
    key_label_prefix: str = "dicom-vault-kek"


class TransitKeySettings(Section):
    url: str = "http://127.0.0.1:8200"
    token: SecretStr = SecretStr("")
    mount_point: str = "transit"
    key_name: str = "dicom-vault-kek"
    tls_ca_file: Path | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)


class KeySettings(Section):
    """The key provider that holds the key-encryption keys."""

    provider: Literal["local", "pkcs11", "transit"] = "local"
    local: LocalKeySettings = LocalKeySettings()
    pkcs11: Pkcs11KeySettings = Pkcs11KeySettings()
    transit: TransitKeySettings = TransitKeySettings()


class IngestLimits(Section):
    """Size and count limits applied wherever bytes come in."""

    max_file_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_header_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_upload_bytes: int = Field(default=64 * 1024**3, gt=0)
    max_zip_ratio: int = Field(default=200, gt=0)
    max_zip_entries: int = Field(default=100_000, gt=0)


# Image storage classes useful for implant design (PS3.4 Annex B.5).
IMPLANT_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.1",  # X-Ray 3D Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.2",  # X-Ray 3D Craniofacial Image Storage (CBCT)
)

# Uncompressed and lossless transfer syntaxes (PS3.5 Section 10 and Annex A).
# Lossy syntaxes are refused by default: they blur bone edges that implant
# design depends on. An operator can allow them explicitly. Deflated Explicit VR
# Little Endian is always refused: the streaming header reader cannot see into it.
LOSSLESS_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


class PolicySettings(Section):
    """What the validation policy accepts, shared by every entry point."""

    sop_classes: list[str] = list(IMPLANT_SOP_CLASSES)
    transfer_syntaxes: list[str] = list(LOSSLESS_TRANSFER_SYNTAXES)
    require_part10: bool = True
    one_patient_per_case: bool = True


class DeidentifySettings(Section):
    """The PS3.15 Annex E profile options for pseudonymised copies (see deidentify.profile)."""

    retain_modified_dates: bool = True
    retain_full_dates: bool = False
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    # Private attributes to keep, each "CREATOR|gggg|ee" (hex group, element offset).
    private_safelist: list[str] = []
    # The MAC key of pseudonyms; never one the vault keeps for itself (vault.mac_purposes).
    pseudonym_key_purpose: str = "pseudonym"

    @field_validator("pseudonym_key_purpose")
    @classmethod
    def _not_a_reserved_purpose(cls, purpose: str) -> str:
        if purpose in RESERVED_MAC_PURPOSES:
            reserved = ", ".join(sorted(RESERVED_MAC_PURPOSES))
            raise PydanticCustomError(
                "reserved_purpose", f"the vault keeps this MAC key purpose for itself ({reserved})"
            )
        return purpose


class CelerySettings(Section):
    """The task queue running study-level work (see deidentify.tasks).

    With no ``broker_url`` (the embedded default) tasks run eagerly in the
    calling process; with one (Redis or RabbitMQ) ``dicom-vault worker``
    processes consume them.
    """

    broker_url: str | None = None
    result_backend: str | None = None
    queue: str = "dicom-vault"
    task_time_limit_seconds: int = Field(default=3600, gt=0)
    max_retries: int = Field(default=5, ge=0)
    # Retry n waits base * 2**n seconds, at most the maximum.
    retry_backoff_seconds: float = Field(default=10.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=600.0, ge=0)
    worker_concurrency: int = Field(default=1, ge=1)


class RetentionSettings(Section):
    """How long data and the access log are kept (see vault.retention, vault.audit_retention)."""

    # Access-log records older than this are purged (a signed checkpoint stays).
    audit_retention_days: int = Field(default=365, gt=0)
    # When the daily retention and purge jobs run (Celery beat, UTC).
    daily_run_hour_utc: int = Field(default=2, ge=0, le=23)
    # Catalog backups older than this are deleted (a 6-month rotation; see vault.backup).
    backup_retention_days: int = Field(default=183, gt=0)
    # The daily jobs take a catalog backup when the newest is this many days old
    # (0: never; backups are then taken with ``dicom-vault backup``).
    backup_every_days: int = Field(default=1, ge=0)


class AuditSyslogSettings(Section):
    """Live forwarding of the access log to a syslog collector (IHE ATNA: RFC 5424
    messages over TLS, RFC 5425 framing). Off while ``host`` is empty."""

    host: str = ""
    port: int = Field(default=6514, ge=1, le=65535)
    # CA bundle that verifies the collector's certificate (system CAs if unset).
    ca_file: Path | None = None
    # Client certificate and key (PEM) when the collector asks for mutual TLS.
    client_cert: Path | None = None
    client_key: Path | None = None
    # Bounded queue between the log and the sender: past it, records are
    # dropped (counted, and recorded as audit.forward-drop), never waited for.
    queue_size: int = Field(default=10_000, gt=0)
    poll_seconds: float = Field(default=0.5, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    app_name: str = "dicom-vault"


class AuditSettings(Section):
    """How access-log exports name their source (ATNA AuditSourceIdentification)."""

    # AuditSourceID; ``dicom-vault@<host name>`` when unset.
    source_id: str | None = None
    # AuditEnterpriseSiteID, e.g. the hosting site.
    site_id: str | None = None
    syslog: AuditSyslogSettings = AuditSyslogSettings()


class UploadSettings(Section):
    """The clinicians' browser upload (see dicom_ingest.upload_page, dicom_ingest.summary)."""

    # Slices thicker (or further apart) than this are warned about in the summary.
    max_slice_thickness_mm: float = Field(default=1.25, gt=0)
    # The upload page sends larger files in PATCH requests of this size.
    browser_chunk_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    # Files the upload page sends at the same time.
    browser_parallel_files: int = Field(default=4, ge=1, le=16)
    # The upload page gives up on a request whose bytes have not moved for this
    # long (a connection that died without a word) and resumes the file anew.
    browser_stall_seconds: float = Field(default=30.0, ge=1)
    # Server side (dicom_ingest.uploads): a request body of up to this many
    # bytes that completes a file goes straight into the pipeline; larger ones
    # are held encrypted in blocks first, so an interruption loses one block.
    direct_max_bytes: int = Field(default=64 * 1024**2, ge=0)
    # Held parts are encrypted objects of at most this many bytes.
    block_bytes: int = Field(default=8 * 1024**2, ge=64 * 1024)
    # Open uploads with no activity for this long are swept (daily job).
    abandon_after_hours: float = Field(default=72.0, gt=0)


class ApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = 8000
    # Web API worker processes (uvicorn); 1 serves from the ``serve`` process itself.
    workers: int = Field(default=1, ge=1, le=64)
    # With several workers, uvicorn pings each and replaces one that has not
    # answered within this time. A new worker answers only once it has imported
    # the service (35 s seen for 4 workers on a loaded 2-core machine):
    # uvicorn's own 5 s killed every new worker of a restarted API, forever.
    worker_healthcheck_seconds: int = Field(default=120, ge=5)
    # The address people use (``https://vault.example.org``, behind the proxy):
    # one-time links printed by the CLI and DICOMweb RetrieveURL and BulkDataURI
    # values start with it. Unset: links name ``host:port``, and DICOMweb URLs
    # the URL the request came in on (its Host header), as the proxy passes it on.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s?#]+$")


class AuthSettings(Section):
    """Logins, sessions, lock-out, API tokens and request limits (see vault.auth)."""

    session_idle_minutes: int = Field(default=30, gt=0)
    session_absolute_hours: int = Field(default=12, gt=0)
    # Between a correct password and a correct TOTP code (or enrolment).
    pending_login_minutes: int = Field(default=10, gt=0)
    # Off only for plain-http local use; the cookie is then not ``__Host-``.
    cookie_secure: bool = True
    lockout_threshold: int = Field(default=5, gt=0)
    lockout_address_threshold: int = Field(default=20, gt=0)
    lockout_minutes: int = Field(default=15, gt=0)
    token_default_days: int = Field(default=30, gt=0)
    token_max_days: int = Field(default=365, gt=0)
    link_valid_hours: int = Field(default=24, gt=0)
    password_min_length: int = Field(default=12, ge=8)
    # argon2id cost; lower only in tests.
    password_time_cost: int = Field(default=3, ge=1)
    password_memory_kib: int = Field(default=65536, ge=8)
    # Bodies larger than this are refused with 413, except under the upload
    # prefixes, which get ``limits.max_upload_bytes``.
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)
    upload_path_prefixes: list[str] = ["/api/uploads", "/files", "/dicomweb"]
    # Send HSTS even on http (TLS terminated by a proxy in front).
    hsts: bool = False


class ScpSettings(Section):
    """The DICOM C-STORE receiver for hospital PACS (see dicom_ingest.scp)."""

    ae_title: str = Field(default="DICOMVAULT", min_length=1, max_length=16)
    bind: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    # DICOM TLS (PS3.15 Annex B): server certificate and key; CA bundle to
    # verify client certificates (mutual TLS) when ``tls_ca`` is set.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    require_client_cert: bool = False
    # The maximum PDU length the receiver announces, and holds peers to: a
    # whole CT slice fits in one PDU. 0 announces no limit (memory per
    # association then grows with whatever a peer sends in one PDU).
    max_pdu: int = Field(default=4 << 20, ge=0)
    max_associations: int = Field(default=16, gt=0)
    # Receiver processes sharing one listening socket (least loaded accepts); 1 runs in-process.
    processes: int = Field(default=1, ge=1, le=64)
    # The attribute whose value names the case (an open Case.reference).
    case_attribute: str = "AccessionNumber"
    # Refuse a calling AE title whose PacsNode.host differs from the peer address.
    check_peer_address: bool = False
    # Refuse an association addressed to another AE title (A-ASSOCIATE-RJ reason 7):
    # a PACS routing entry meant for another archive must not deliver here.
    require_called_ae_title: bool = True
    settle_idle_seconds: float = Field(default=300.0, gt=0)
    settle_check_seconds: float = Field(default=30.0, gt=0)
    network_timeout_seconds: float = Field(default=60.0, gt=0)
    # Storage commitment (PS3.4 Annex J, see dicom_ingest.commitment): send every
    # report on a new association to the node's host, even while the requester's
    # association is still open (for PACS that only listen for reports).
    commitment_report_new_association: bool = False
    # A report that cannot be delivered stays pending in the catalog (its UIDs
    # sealed) and is retried by the settle timer: retry n waits
    # commitment_retry_seconds * 2**(n-1), at most commitment_retry_max_seconds.
    # It is given up after commitment_report_attempts attempts (the first one
    # included) or once commitment_report_max_age_hours old, whichever comes first.
    commitment_report_attempts: int = Field(default=20, ge=1)
    commitment_retry_seconds: float = Field(default=60.0, gt=0)
    commitment_retry_max_seconds: float = Field(default=3600.0, gt=0)
    commitment_report_max_age_hours: float = Field(default=24.0, gt=0)
    # Transactions reported or given up are remembered this long, without their
    # UIDs, so that a repeated Transaction UID is recognised.
    commitment_remember_days: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    """All configuration of one dicom-vault deployment."""

    model_config = SettingsConfigDict(
        env_prefix="DICOM_VAULT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = DEFAULT_DATA_DIR
    # Level of the operational log the long-running commands write to stderr
    # (vault.logs); the access log is separate and always complete.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    catalog: CatalogSettings = CatalogSettings()
    store: StoreSettings = StoreSettings()
    keys: KeySettings = KeySettings()
    limits: IngestLimits = IngestLimits()
    policy: PolicySettings = PolicySettings()
    deidentify: DeidentifySettings = DeidentifySettings()
    celery: CelerySettings = CelerySettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    scp: ScpSettings = ScpSettings()
    retention: RetentionSettings = RetentionSettings()
    audit: AuditSettings = AuditSettings()
    uploads: UploadSettings = UploadSettings()

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        """Place the embedded catalog, store and key file under ``data_dir``."""
        if self.catalog.url is None:
            self.catalog.url = f"sqlite:///{(self.data_dir / 'catalog.sqlite3').resolve()}"
        if self.store.filesystem.root is None:
            self.store.filesystem.root = self.data_dir / "objects"
        if self.keys.local.path is None:
            self.keys.local.path = self.data_dir / "keys" / "kek.json"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get(CONFIG_VARIABLE)
        if toml_path:
            _check_config_file(Path(toml_path))
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


def _check_config_file(path: Path) -> None:
    """Refuse a configuration file that is missing, unreadable or not TOML.

    pydantic-settings would read a missing file as empty, and the service
    would start on the embedded defaults: another catalog, a local key file.
    """
    try:
        with path.open("rb") as file:
            tomllib.load(file)
    except OSError as exc:
        raise InvalidSettings([f"{CONFIG_VARIABLE} names {path}: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSettings([f"{CONFIG_VARIABLE} names {path}, not valid TOML: {exc}"]) from None


def load_settings() -> Settings:
    """The settings of the environment (and ``DICOM_VAULT_CONFIG``), checked.

    Raises:
        InvalidSettings: a setting is unknown or invalid, or the file cannot be read.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSettings(describe_invalid(exc)) from None


def describe_invalid(exc: ValidationError) -> list[str]:
    """One line per problem: the setting's dotted name and what is wrong, never the value."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        what = UNKNOWN_SETTING if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {what}")
    return problems
