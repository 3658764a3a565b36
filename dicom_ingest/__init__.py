"""Validation and the one ingest pipeline shared by every entry point."""

from dicom_ingest.pipeline import IngestOrigin, IngestPipeline, IngestResult
from dicom_ingest.validation import ValidationPolicy

__all__ = ["IngestOrigin", "IngestPipeline", "IngestResult", "ValidationPolicy"]
