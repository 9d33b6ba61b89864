"""Detector and reader as a Dagster resource: which models, on which device, what batch sizes.

Models are loaded once per process and shared by every run in it (loading EasyOCR or a
torch network costs seconds; a demo or a multiprocess worker runs many partitions).
"""

from __future__ import annotations

import threading
from typing import Any

from dagster import ConfigurableResource

from anpr_pipeline.settings import Settings, parse_regions
from anpr_pipeline.vision.types import PlateDetector, PlateReader

_CACHE: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def _cached(key: tuple[Any, ...], build):
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


class ModelsResource(ConfigurableResource):
    """Plate detector + reader. Names select implementations (``default`` = the measured winner)."""

    device: str = "auto"
    detector: str = "default"
    reader: str = "default"
    detector_batch_size: int = 8
    reader_batch_size: int = 32
    reader_text_row: bool = True  # ANPR_READER_TEXT_ROW: re-read loose crops at their text row
    models_dir: str = ""
    torch_threads: int = 0
    plate_regions: str = ""  # ANPR_PLATE_REGIONS: comma list; empty = any region

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelsResource:
        return cls(
            device=settings.device,
            detector=settings.detector,
            reader=settings.reader,
            detector_batch_size=settings.detector_batch_size,
            reader_batch_size=settings.reader_batch_size,
            reader_text_row=settings.reader_text_row,
            models_dir=settings.models_dir,
            torch_threads=settings.torch_threads,
            plate_regions=settings.plate_regions,
        )

    def _prepare(self) -> str:
        from anpr_pipeline.vision.device import resolve_device, set_torch_threads

        set_torch_threads(self.torch_threads)
        return resolve_device(self.device)

    def get_detector(self) -> PlateDetector:
        from anpr_pipeline.vision.detector import build_detector

        device = self._prepare()
        key = ("detector", self.detector, device, self.detector_batch_size)
        return _cached(
            key, lambda: build_detector(self.detector, device=device, batch_size=self.detector_batch_size)
        )

    def get_reader(self) -> PlateReader:
        from anpr_pipeline.vision.reader import build_reader

        device = self._prepare()
        key = (
            "reader",
            self.reader,
            device,
            self.reader_batch_size,
            self.models_dir,
            self.plate_regions,
            self.reader_text_row,
        )
        return _cached(
            key,
            lambda: build_reader(
                self.reader,
                device=device,
                batch_size=self.reader_batch_size,
                models_dir=self.models_dir or None,
                regions=parse_regions(self.plate_regions),
                text_row=self.reader_text_row,
            ),
        )
