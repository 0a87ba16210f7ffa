"""One typed settings object for every process, read from ``EYESCREEN_*`` variables.

Nothing here connects to anything; the object is built once at start by the entry point
(CLI, worker, gateway) and passed down.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash
_DESTINATION = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})(?P<tls>\+tls)?$")


@dataclass(frozen=True)
class DicomNode:
    """A remote DICOM application entity, written ``AE@host:port`` (``AE@host:port+tls`` for
    DICOM TLS)."""

    ae_title: str
    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, text: str) -> DicomNode:
        """Parse the text form used in environment variables; a bad value says why."""
        match = _DESTINATION.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a DICOM destination; write it as AE@host:port[+tls]")
        ae, host, port = match["ae"], match["host"], int(match["port"])
        if not _AE_TITLE.match(ae):
            raise ValueError(f"{ae!r} is not a valid AE title (1-16 printable chars, no '\\')")
        if not 0 < port < 65536:
            raise ValueError(f"port {port} of {text!r} is out of range")
        return cls(ae, host, port, bool(match["tls"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}{'+tls' if self.tls else ''}"


_MLLP = re.compile(r"^(?:(?P<app>[^@^|~\\&]{1,20})@)?(?P<host>[^:@]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class MllpNode:
    """An HL7 v2 receiver (an interface engine) reached by MLLP, written ``[APP@]host:port``;
    APP goes into MSH-5 (receiving application)."""

    host: str
    port: int
    application: str = ""

    @classmethod
    def parse(cls, text: str) -> MllpNode:
        """Parse the text form used in environment variables; a bad value says why."""
        match = _MLLP.match(text.strip().removeprefix("mllp://"))
        if not match or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"{text!r} is not an HL7 destination; write it as [APP@]host:port")
        return cls(match["host"], int(match["port"]), match["app"] or "")

    def __str__(self) -> str:
        app = f"{self.application}@" if self.application else ""
        return f"mllp://{app}{self.host}:{self.port}"


ROUTE_CHOICES = ("fundus", "anterior", "auto")


@dataclass(frozen=True)
class DicomSource:
    """A camera allowed to send, written ``AE[@ip|ip...]=route``; route ``auto`` means by
    attributes. With addresses given, the AE title is accepted only from those addresses."""

    ae_title: str
    route: str
    addresses: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> DicomSource:
        """Parse the text form used in environment variables; a bad value says why."""
        who, sep, route = text.strip().partition("=")
        route = route.strip()
        if not sep or route not in ROUTE_CHOICES:
            raise ValueError(f"{text!r}: write AE=fundus, AE=anterior or AE=auto (AE@ip=... binds)")
        ae, _, hosts = who.strip().partition("@")
        if not _AE_TITLE.match(ae):
            raise ValueError(f"{ae!r} is not a valid AE title (1-16 printable chars, no '\\')")
        addresses = frozenset(h.strip() for h in hosts.split("|") if h.strip())
        for address in addresses:
            ipaddress.ip_address(address)  # ValueError names the bad address
        return cls(ae.strip(), route, addresses)

    def admits(self, address: str) -> bool:
        """Whether a caller at this address may use this AE title."""
        return not self.addresses or address in self.addresses


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return value


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


def _pairs(value: object, valid: Callable[[str, str], bool], hint: str) -> object:
    """``A=x,B=y`` (or a list of such items) -> {"A": "x", "B": "y"}; an item without ``=`` or
    that ``valid`` refuses raises a ValueError that names it and says how to write it."""
    items = _split_list(value)
    if not isinstance(items, list):
        return items
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, val = (part.strip() for part in str(item).partition("="))
        if not sep or not valid(key, val):
            raise ValueError(f"{item!r}: {hint}")
        pairs[key] = val
    return pairs


# The settings that list DICOM or HL7 peers, and how one entry of each is read.
_NODE_PARSERS: dict[str, Callable[[str], object]] = {
    "worklist_sources": DicomNode.parse,
    "sr_destinations": DicomNode.parse,
    "hl7_destinations": MllpNode.parse,
    "dicom_sources": DicomSource.parse,
}


class Settings(BaseSettings):
    """Settings of the screening service. Unset values give the embedded profile under ./var."""

    model_config = SettingsConfigDict(env_prefix="EYESCREEN_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("./var")
    database_url: str | None = None
    broker_url: str | None = None

    ae_title: str = "EYESCREEN"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = Field(11112, ge=1, le=65535)
    sr_destinations: Annotated[list[DicomNode], NoDecode] = Field(default_factory=list)
    min_free_disk_mb: int = Field(512, ge=0)
    max_associations: int = Field(16, ge=1)
    max_dataset_mb: int = Field(512, ge=1)
    max_sequence_depth: int = Field(12, ge=1)
    max_decoded_mb: int = Field(1024, ge=1)
    decode_timeout_s: float = Field(30.0, gt=0)
    decode_workers: int = Field(2, ge=1)
    # Rows of images arriving together on several associations are committed together (one
    # fsync for the group); 1 commits every image on its own.
    ingest_max_group: int = Field(32, ge=1)
    # Gateway processes sharing the DICOM port (SO_REUSEPORT; the kernel spreads associations):
    # pynetdicom handles DIMSE in Python threads under one interpreter lock per process.
    gateway_processes: int = Field(1, ge=1, le=64)
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_client_ca: Path | None = None  # set: callers must present a certificate signed by it

    dicom_sources: Annotated[list[DicomSource], NoDecode] = Field(default_factory=list)
    station_routes: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    urgent_sources: Annotated[list[str], NoDecode] = Field(default_factory=list)  # AE titles
    default_route: Literal["fundus", "anterior"] | None = None
    case_quiet_minutes: float = Field(30.0, gt=0)

    worker_concurrency: int = Field(0, ge=0)  # 0: up to 2 processes, one per CPU
    torch_threads: int = Field(0, ge=0)
    inference_batch_size: int = Field(16, ge=1)
    inference_lease_s: float = Field(30.0, gt=0)  # a dead worker's images are taken over after
    # outbox rows a worker took to do at once (build a report, send it) are queued again after
    # this if it has not finished them (it was killed); a delivery's attempt holds it for
    # inference_lease_s, so a slow live sender is never doubled
    inline_lease_s: float = Field(15.0, gt=0)
    torch_compile: bool = False
    heatmaps: bool = True  # Grad-CAM of the main positive finding, stored with the prediction
    inference_precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    site: str = ""  # this installation's site name, for per-site models and thresholds
    # One gateway, several clinics: SOURCE=SITE, where SOURCE is a calling AE title, a Station
    # Name or an IP address (EYESCREEN_SOURCE_SITES=CAM-NORTH=NORTH,10.0.4.7=SOUTH); sources
    # not named go to ``site``.
    source_sites: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    thresholds_file: Path | None = None  # JSON {route: {code: threshold}} overriding the model's
    stale_after_s: float = Field(600.0, gt=0)  # work not done by then is queued again
    metrics_port: int = Field(0, ge=0, le=65535)  # worker /metrics and /healthz; 0: off
    gateway_metrics_port: int = Field(0, ge=0, le=65535)  # the gateway's; 0: off
    device: str = "auto"
    # On a CUDA device, JPEG pixel data is decoded and resized there (batched); off: on the CPU
    gpu_jpeg_decode: bool = True
    fundus_checkpoint: Path | None = None
    anterior_checkpoint: Path | None = None
    sr_delivery_max_attempts: int = Field(8, ge=1)
    sr_tls_ca: Path | None = None  # CA that signs the PACS certificates (+tls destinations)
    sr_tls_certificate: Path | None = None  # our client certificate, when a PACS asks for one
    sr_tls_private_key: Path | None = None
    sr_retry_base_s: float = Field(5.0, gt=0)  # doubles per attempt, at most an hour
    pdf_reports: bool = True  # render each case's PDF report
    send_pdf_to_pacs: bool = False  # also send it as Encapsulated PDF with the SR
    outbox_resend_after_s: float = Field(30.0, gt=0)

    # The eye-care workflow: who is expected (Modality Worklist), results to the record (HL7).
    worklist_sources: Annotated[list[DicomNode], NoDecode] = Field(default_factory=list)
    worklist_modality: str = Field("OP", max_length=16)  # "" asks for every modality
    worklist_station_aes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    worklist_procedure_codes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    worklist_every_minutes: float = Field(15.0, gt=0)  # the gateway fetches today's this often
    hl7_destinations: Annotated[list[MllpNode], NoDecode] = Field(default_factory=list)
    hl7_sending_facility: str = Field("", max_length=20)  # MSH-4; the site when empty
    failsafe_not_imaged_after_hours: float = Field(2.0, ge=0)  # after the scheduled time
    referral_outcome_days: float = Field(42.0, ge=0)  # a referral's outcome is due by then
    log_level: LogLevel = "INFO"

    # The clinicians' web application (graders, arbitration panel, admins, statisticians).
    # Unset: every interface with HTTPS, loopback only without (passwords must not cross the
    # network in clear); set it to listen elsewhere on purpose.
    web_host: str | None = None
    web_port: int = Field(8080, ge=0, le=65535)  # 0: no web application
    web_certificate: Path | None = None  # with web_private_key: HTTPS
    web_private_key: Path | None = None
    web_session_idle_minutes: float = Field(30.0, gt=0)  # signed out after this long idle
    read_lease_minutes: float = Field(15.0, gt=0)  # a case opened for reading is held this long
    turnaround_hours: float = Field(72.0, gt=0)  # the worklist's target from arrival to read
    blind_reads: bool = True  # graders see the model's output only after their own read
    unblinded_sites: Annotated[list[str], NoDecode] = Field(default_factory=list)  # exceptions
    # Diabetic retinopathy grade per eye beside the taxonomy, at the sites named:
    # SITE=icdr (ICDR scale and DME) or SITE=nhs (R0-R3, M0-M1, P). Off elsewhere.
    dr_schemes: Annotated[dict[str, Literal["icdr", "nhs"]], NoDecode] = Field(default_factory=dict)
    discrepancy_rule: Literal["level1", "level2", "referral"] = "level2"
    qc_sample_rate: float = Field(0.10, ge=0, le=1)  # concordant cases also sent to the panel
    qc_seed: int = 20211  # the QC draw is reproducible: the same seed draws the same cases
    arbitration_quorum: int = Field(1, ge=1)  # agreeing arbiters needed for a decision
    escalate_after_hours: float = Field(72.0, gt=0)  # undecided this long: senior arbiter
    study_key_file: Path | None = None  # the key of the exports' pseudonyms; default in data dir
    study_protocol_file: Path | None = None  # the study protocol (TOML); default: shipped one

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _psycopg2_driver(cls, value: str | None) -> str | None:
        # A plain postgresql:// URL would make SQLAlchemy 2.1 look for psycopg 3, which is not
        # installed; the driver shipped is psycopg2.
        if value and re.match(r"postgres(ql)?://", value):
            return "postgresql+psycopg2://" + value.split("://", 1)[1]
        return value

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        if not _AE_TITLE.match(value):
            raise ValueError("must be 1-16 printable characters without a backslash")
        return value

    @field_validator(*_NODE_PARSERS, mode="before")
    @classmethod
    def _parse_nodes(cls, value: object, info: ValidationInfo) -> object:
        """``A,B,...`` of peers, each parsed by its field's parser (already parsed ones kept)."""
        value = _split_list(value)
        parse = _NODE_PARSERS[info.field_name or ""]
        if isinstance(value, list):
            return [parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator(
        "urgent_sources",
        "unblinded_sites",
        "worklist_station_aes",
        "worklist_procedure_codes",
        mode="before",
    )
    @classmethod
    def _parse_urgent(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("dr_schemes", mode="before")
    @classmethod
    def _parse_dr_schemes(cls, value: object) -> object:
        """``NORTH=icdr,SOUTH=nhs`` -> {"NORTH": "icdr", "SOUTH": "nhs"}."""
        return _pairs(
            value, lambda site, scheme: bool(site) and scheme in ("icdr", "nhs"),
            "write SITE=icdr or SITE=nhs",
        )  # fmt: skip

    @field_validator("source_sites", mode="before")
    @classmethod
    def _parse_source_sites(cls, value: object) -> object:
        """``CAM-NORTH=NORTH,10.0.4.7=SOUTH`` -> {"CAM-NORTH": "NORTH", "10.0.4.7": "SOUTH"}."""
        return _pairs(
            value, lambda source, site: bool(source and site),
            "write SOURCE=SITE (AE title, station or address)",
        )  # fmt: skip

    @field_validator("station_routes", mode="before")
    @classmethod
    def _parse_station_routes(cls, value: object) -> object:
        """``FUNDUS-ROOM-2=fundus,SL-1=anterior`` -> {"FUNDUS-ROOM-2": "fundus", ...}."""
        return _pairs(
            value, lambda _, route: route in ("fundus", "anterior"),
            "write STATION=fundus or STATION=anterior",
        )  # fmt: skip

    @field_validator("web_certificate", "web_private_key", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        # docker-compose passes an unset certificate as an empty string: no HTTPS, not "."
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_web_tls_pair(self) -> Settings:
        if (self.web_certificate is None) != (self.web_private_key is None):
            raise ValueError("HTTPS needs both EYESCREEN_WEB_CERTIFICATE and _PRIVATE_KEY")
        return self

    def dr_scheme_at(self, site: str) -> str | None:
        """The diabetic retinopathy grading scheme graders at this site use, if any."""
        return self.dr_schemes.get(site)

    @property
    def web_bind_host(self) -> str:
        """Where the web application listens: ``web_host`` when set, otherwise every interface
        with a certificate and only this machine (127.0.0.1) without one."""
        if self.web_host:
            return self.web_host
        return "0.0.0.0" if self.web_certificate is not None else "127.0.0.1"

    def blind_at(self, site: str) -> bool:
        """Whether graders at this site read before seeing the model's output."""
        return self.blind_reads and site not in self.unblinded_sites

    @model_validator(mode="after")
    def _check_tls_pair(self) -> Settings:
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            raise ValueError("DICOM TLS needs both EYESCREEN_TLS_CERTIFICATE and _PRIVATE_KEY")
        if self.tls_client_ca is not None and self.tls_certificate is None:
            raise ValueError("EYESCREEN_TLS_CLIENT_CA needs a server certificate as well")
        return self

    @property
    def routes_by_ae(self) -> dict[str, str]:
        """The route configured for each known calling AE title."""
        return {s.ae_title: s.route for s in self.dicom_sources if s.route != "auto"}

    @model_validator(mode="after")
    def _refuse_embedded_in_production(self) -> Settings:
        if self.environment == "production" and (
            self.database_url is None or self.database_url.startswith("sqlite")
        ):
            raise ValueError("production needs EYESCREEN_DATABASE_URL pointing at PostgreSQL")
        return self

    @cached_property
    def data_path(self) -> Path:
        """The data folder, absolute."""
        return self.data_dir.resolve()

    @property
    def images_dir(self) -> Path:
        """Where received images are kept, by sha256."""
        return self.data_path / "images"

    @property
    def reports_dir(self) -> Path:
        """Where built SRs and PDFs are kept, by sha256."""
        return self.data_path / "reports"

    @property
    def heatmaps_dir(self) -> Path:
        """Where Grad-CAM overlays are kept."""
        return self.data_path / "heatmaps"

    @property
    def effective_database_url(self) -> str:
        """The configured database, else SQLite in the data folder."""
        return self.database_url or f"sqlite:///{self.data_path / 'eyescreen.db'}"

    @property
    def effective_broker_url(self) -> str:
        """The configured broker, else the SQLite broker in the data folder."""
        # kombu's SQLAlchemy transport (tuned in worker.embedded_broker): no server, one file.
        return self.broker_url or f"eyescreen-sqlite+sqlite:///{self.data_path / 'broker.db'}"

    @property
    def effective_worker_concurrency(self) -> int:
        """Worker processes: the setting, or one per CPU up to two."""
        return self.worker_concurrency or min(2, os.cpu_count() or 1)

    @property
    def effective_torch_threads(self) -> int:
        """Threads per worker process: the CPUs shared out, so processes do not oversubscribe."""
        cpus = os.cpu_count() or 1
        return self.torch_threads or max(1, cpus // self.effective_worker_concurrency)

    @property
    def is_embedded(self) -> bool:
        """True when the database is SQLite (the embedded profile)."""
        return self.effective_database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        """Create the data folders."""
        for path in (self.data_path, self.images_dir, self.reports_dir, self.heatmaps_dir):
            path.mkdir(parents=True, exist_ok=True)


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise ``pydantic.ValidationError`` naming the bad one."""
    return Settings(**overrides)  # type: ignore[arg-type]
