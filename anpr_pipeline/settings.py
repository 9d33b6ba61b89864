"""Every ANPR_* setting in one place, typed.

The embedded default (no servers) and production (Postgres + S3) differ only in these
values: the code never forks on deployment. Secrets (database passwords, S3 keys) come from
the environment or the standard AWS credential chain, never from files in the repository.
"""

from __future__ import annotations

import math
import os
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path

from anpr_pipeline.vision.plates import MIN_READ_CONFIDENCE


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


def _default_data_dir() -> Path:
    return Path(os.environ.get("ANPR_DATA_DIR", Path.cwd() / ".anpr_data"))


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a number") from exc


def parse_bool(raw: str | None, default: bool) -> bool:
    """true/yes/on/1 or false/no/off/0 (any case); empty or None = ``default``; else ValueError."""
    text = (raw or "").strip().lower()
    if text == "":
        return default
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{raw!r} is not a boolean (use true/false)")


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    try:
        return parse_bool(raw, default)
    except ValueError as exc:
        raise SettingsError(f"{name}={exc}") from exc


@dataclass(frozen=True)
class Settings:
    """Typed view of the ANPR_* environment. Build with :func:`load_settings`."""

    # --- storage -----------------------------------------------------------------------
    data_dir: str = ".anpr_data"  # embedded default's home for bucket, SQLite DB, step outputs
    # "local" (a folder, the embedded default) or "s3" (an S3-compatible bucket).
    bucket_kind: str = "local"
    bucket_dir: str = ""  # local bucket root
    s3_bucket: str = "anpr"
    s3_endpoint_url: str = ""  # empty = AWS; set for MinIO / SeaweedFS
    s3_region: str = "us-east-1"
    # Bounded S3 calls: an unreachable endpoint fails within ~timeout x attempts, so the
    # upload sensor skips a tick instead of hanging it.
    s3_connect_timeout_s: float = 5.0
    s3_max_attempts: int = 5
    database_url: str = ""  # SQLAlchemy URL of the events database
    # --- processing ----------------------------------------------------------------------
    sample_fps: float = 5.0
    device: str = "auto"  # auto | cpu | cuda
    torch_threads: int = 0  # 0 = let torch decide
    detector: str = "default"
    reader: str = "default"
    detector_batch_size: int = 8
    reader_batch_size: int = 32
    # Re-read loose plate crops tightened to their character row (plates boxed with their
    # holder); off reads each crop only as the detector cut it.
    reader_text_row: bool = True
    models_dir: str = ""  # EasyOCR model storage; empty = the offline PyPI package
    # Plate formats the reader may assume, e.g. "br" or "eu" for a city's cameras (comma
    # list of us, eu, br); empty = any region. A known country resolves O/0-style
    # confusions that another region's formats would allow.
    plate_regions: str = ""
    # Report only reads that fit a format of those regions (any region's when none is set):
    # for countries whose plates all follow them (br); not for the US (vanity plates).
    require_plate_format: bool = False
    keep_frames: bool = False  # keep sampled frames as JPEG for audit
    show_plates_in_ui: bool = False  # full plate text in Dagster run metadata (not erasable)
    # multiprocess (default) | in_process | k8s (one pod per step: GPU steps on the GPU pool)
    executor: str = "multiprocess"
    min_read_confidence: float = MIN_READ_CONFIDENCE  # one default for events and `anpr eval`
    low_confidence_share_max: float = 0.5
    # --- operations ----------------------------------------------------------------------
    retention_videos_days: int = 30
    retention_crops_days: int = 90
    retention_events_days: int = 365
    retention_parquet_days: int = 365
    archive_videos_after_days: int = 14
    archive_events_after_days: int = 180
    s3_archive_storage_class: str = "GLACIER_IR"
    backups_keep: int = 7
    alert_webhook_url: str = ""
    watchlist: str = ""  # YAML or CSV file of watched plates (exact or pattern); empty = none
    watchlist_fuzzy: bool = False  # default of plate entries: also match reads one OCR slip away
    gdpr_salt: str = field(default="", repr=False)
    backlog_warn: int = 100
    backlog_critical: int = 500
    stall_minutes: int = 10  # worker-stall alert: queued runs, no video finished for this long
    pg_bin_dir: str = ""  # pg_dump/pg_restore location; empty = newest /usr/lib/postgresql/*/bin, then PATH

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


# The regions vision/plates.py has formats for (kept here so settings import no vision code).
PLATE_REGIONS = ("us", "br", "eu")

# The model and device names the vision code accepts, kept here (torch-free) so a bad value
# fails when settings load, naming the variable, not when the first video is read.
# vision/detector.py DETECTORS and vision/reader.py build_reader must accept exactly these;
# test_settings.py checks that they do, so the lists cannot drift apart.
DETECTORS = ("default", "classical", "platenet", "cascade", "cascade-fast", "cascade-hq", "cascade-refine")
READERS = ("default", "crnn", "crnn:PATH[,PATH]", "easyocr")  # crnn:PATHS: your own weights
DEVICES = ("auto", "cpu", "cuda")


def detector_problem(name: str) -> str | None:
    """Why ``name`` is not a detector name, or None (the same rule as ``build_detector``)."""
    if name in DETECTORS:
        return None
    return f"unknown detector {name!r}: expected one of {', '.join(DETECTORS)}"


def reader_problem(name: str) -> str | None:
    """Why ``name`` is not a reader name, or None (the same grammar as ``build_reader``)."""
    if name in {"default", "crnn", "easyocr"}:
        return None
    if name.startswith("crnn:"):
        paths = name.split(":", 1)[1].split(",")
        if all(p.strip() for p in paths):
            return None
        return f"reader {name!r}: name the weight files, e.g. crnn:/path/reader.pt[,/path/other.pt]"
    return f"unknown reader {name!r}: expected one of {', '.join(READERS)}"


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device name, or None (case does not matter)."""
    if (name or "").lower() in DEVICES:
        return None
    return f"unknown device {name!r}: expected auto, cpu or cuda"


def confidence_problem(value: float) -> str | None:
    """Why ``value`` is not a read-confidence threshold (0..1), or None."""
    return None if 0.0 <= value <= 1.0 else f"{value}: expected a number from 0 to 1"


def parse_regions(value: str) -> list[str] | None:
    """ "br, eu" -> ["br", "eu"]; "" -> None (any region)."""
    regions = [r.strip().lower() for r in value.split(",") if r.strip()]
    return regions or None


def load_settings() -> Settings:
    """Read the environment now (not at import) so tests and jobs can change it."""
    data_dir = _default_data_dir()
    settings = Settings(
        data_dir=str(data_dir),
        bucket_kind=_env_str("ANPR_BUCKET_KIND", "local").lower(),
        bucket_dir=_env_str("ANPR_BUCKET_DIR", str(data_dir / "bucket")),
        s3_bucket=_env_str("ANPR_S3_BUCKET", "anpr"),
        s3_endpoint_url=_env_str("ANPR_S3_ENDPOINT_URL", ""),
        s3_region=_env_str("ANPR_S3_REGION", "us-east-1"),
        s3_connect_timeout_s=_env_float("ANPR_S3_CONNECT_TIMEOUT_S", 5.0),
        s3_max_attempts=_env_int("ANPR_S3_MAX_ATTEMPTS", 5),
        database_url=_env_str("ANPR_DATABASE_URL", f"sqlite:///{data_dir / 'events.db'}"),
        sample_fps=_env_float("ANPR_SAMPLE_FPS", 5.0),
        device=_env_str("ANPR_DEVICE", "auto").lower(),
        torch_threads=_env_int("ANPR_TORCH_THREADS", 0),
        detector=_env_str("ANPR_DETECTOR", "default"),
        reader=_env_str("ANPR_READER", "default"),
        detector_batch_size=_env_int("ANPR_DETECTOR_BATCH_SIZE", 8),
        reader_batch_size=_env_int("ANPR_READER_BATCH_SIZE", 32),
        reader_text_row=_env_bool("ANPR_READER_TEXT_ROW", True),
        models_dir=_env_str("ANPR_MODELS_DIR", ""),
        plate_regions=_env_str("ANPR_PLATE_REGIONS", "").lower(),
        require_plate_format=_env_bool("ANPR_REQUIRE_PLATE_FORMAT", False),
        keep_frames=_env_bool("ANPR_KEEP_FRAMES", False),
        show_plates_in_ui=_env_bool("ANPR_SHOW_PLATES_IN_UI", False),
        executor=_env_str("ANPR_EXECUTOR", "multiprocess").lower(),
        min_read_confidence=_env_float("ANPR_MIN_READ_CONFIDENCE", MIN_READ_CONFIDENCE),
        low_confidence_share_max=_env_float("ANPR_LOW_CONFIDENCE_SHARE_MAX", 0.5),
        retention_videos_days=_env_int("ANPR_RETENTION_VIDEOS_DAYS", 30),
        retention_crops_days=_env_int("ANPR_RETENTION_CROPS_DAYS", 90),
        retention_events_days=_env_int("ANPR_RETENTION_EVENTS_DAYS", 365),
        retention_parquet_days=_env_int("ANPR_RETENTION_PARQUET_DAYS", 365),
        archive_videos_after_days=_env_int("ANPR_ARCHIVE_VIDEOS_AFTER_DAYS", 14),
        archive_events_after_days=_env_int("ANPR_ARCHIVE_EVENTS_AFTER_DAYS", 180),
        s3_archive_storage_class=_env_str("ANPR_S3_ARCHIVE_STORAGE_CLASS", "GLACIER_IR"),
        backups_keep=_env_int("ANPR_BACKUPS_KEEP", 7),
        alert_webhook_url=_env_str("ANPR_ALERT_WEBHOOK_URL", ""),
        watchlist=_env_str("ANPR_WATCHLIST", ""),
        watchlist_fuzzy=_env_bool("ANPR_WATCHLIST_FUZZY", False),
        gdpr_salt=_env_str("ANPR_GDPR_SALT", ""),
        backlog_warn=_env_int("ANPR_BACKLOG_WARN", 100),
        backlog_critical=_env_int("ANPR_BACKLOG_CRITICAL", 500),
        stall_minutes=_env_int("ANPR_STALL_MINUTES", 10),
        pg_bin_dir=_env_str("ANPR_PG_BIN_DIR", ""),
    )
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Fail early, naming the variable, rather than deep inside a run."""
    if settings.bucket_kind not in {"local", "s3"}:
        raise SettingsError(f"ANPR_BUCKET_KIND={settings.bucket_kind!r}: expected 'local' or 's3'")
    if settings.device not in DEVICES:
        raise SettingsError(f"ANPR_DEVICE={settings.device!r}: expected auto, cpu or cuda")
    for variable, problem in (
        ("ANPR_DETECTOR", detector_problem(settings.detector)),
        ("ANPR_READER", reader_problem(settings.reader)),
        ("ANPR_MIN_READ_CONFIDENCE", confidence_problem(settings.min_read_confidence)),
    ):
        if problem:
            raise SettingsError(f"{variable}: {problem}")
    if settings.executor not in {"multiprocess", "in_process", "k8s"}:
        raise SettingsError(f"ANPR_EXECUTOR={settings.executor!r}: expected multiprocess, in_process or k8s")
    if not 0 < settings.sample_fps <= 120:
        raise SettingsError(f"ANPR_SAMPLE_FPS={settings.sample_fps}: expected 0 < fps <= 120")
    for f in fields(settings):
        if f.name.startswith("retention_") and getattr(settings, f.name) < 0:
            raise SettingsError(f"ANPR_{f.name.upper()} must be >= 0 (0 keeps forever)")
    for name in ("detector_batch_size", "reader_batch_size"):
        if getattr(settings, name) < 1:
            raise SettingsError(f"ANPR_{name.upper()} must be >= 1")
    unknown = [r for r in parse_regions(settings.plate_regions) or [] if r not in PLATE_REGIONS]
    if unknown:
        raise SettingsError(
            f"ANPR_PLATE_REGIONS={settings.plate_regions!r}: unknown region(s) {', '.join(unknown)}; "
            f"expected a comma list of {', '.join(PLATE_REGIONS)}"
        )
    _validate_operations(settings)
    for variable, url in (
        ("ANPR_S3_ENDPOINT_URL", settings.s3_endpoint_url),
        ("ANPR_ALERT_WEBHOOK_URL", settings.alert_webhook_url),
    ):
        if url and not _is_http_url(url):
            raise SettingsError(f"{variable}={url!r}: expected http(s)://host[:port] (or empty)")
    if not (math.isfinite(settings.s3_connect_timeout_s) and settings.s3_connect_timeout_s > 0):
        raise SettingsError(
            f"ANPR_S3_CONNECT_TIMEOUT_S={settings.s3_connect_timeout_s}: expected seconds > 0"
        )
    if settings.s3_max_attempts < 0:
        raise SettingsError(f"ANPR_S3_MAX_ATTEMPTS={settings.s3_max_attempts}: expected retries >= 0")
    if not settings.database_url.split(":", 1)[0].startswith(("sqlite", "postgresql")):
        raise SettingsError(
            f"ANPR_DATABASE_URL scheme {settings.database_url.split(':', 1)[0]!r} is not supported: "
            "use sqlite:///path or postgresql+psycopg://user@host/db"
        )


def _is_http_url(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme in {"http", "https"} and bool(parsed.hostname)


# What S3 accepts as a storage class for the archive copies (a typo fails every copy).
S3_STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
)


def _validate_operations(settings: Settings) -> None:
    """Counts and limits of the processing and operations settings (0 = off where documented)."""
    for variable, value in (
        ("ANPR_TORCH_THREADS", settings.torch_threads),
        ("ANPR_ARCHIVE_VIDEOS_AFTER_DAYS", settings.archive_videos_after_days),
        ("ANPR_ARCHIVE_EVENTS_AFTER_DAYS", settings.archive_events_after_days),
        ("ANPR_BACKUPS_KEEP", settings.backups_keep),
    ):
        if value < 0:
            raise SettingsError(f"{variable}={value}: expected 0 or more (0 = off / all)")
    if not 0 <= settings.low_confidence_share_max <= 1:
        raise SettingsError(
            f"ANPR_LOW_CONFIDENCE_SHARE_MAX={settings.low_confidence_share_max}: expected a share from 0 to 1"
        )
    if settings.stall_minutes < 1:
        raise SettingsError(f"ANPR_STALL_MINUTES={settings.stall_minutes}: expected 1 or more")
    if not 1 <= settings.backlog_warn < settings.backlog_critical:
        raise SettingsError(
            f"ANPR_BACKLOG_WARN={settings.backlog_warn}, ANPR_BACKLOG_CRITICAL={settings.backlog_critical}: "
            "expected 1 <= warn < critical"
        )
    if settings.s3_archive_storage_class not in S3_STORAGE_CLASSES:
        raise SettingsError(
            f"ANPR_S3_ARCHIVE_STORAGE_CLASS={settings.s3_archive_storage_class!r}: "
            f"expected one of {', '.join(S3_STORAGE_CLASSES)}"
        )
