"""Pluggable inputs. ``make_source(cfg)`` maps a ``SourceConfig`` to its class by ``kind``."""

from __future__ import annotations

from dataset_builders.sources.base import ProcessedSample, RawItem, Reject, Source
from dataset_builders.sources.dicom_xray import DicomXraySource
from dataset_builders.sources.label_table import LabelTableSource
from dataset_builders.sources.report_xray import ReportXraySource
from dataset_builders.sources.synthetic import SyntheticSource

SOURCE_CLASSES: dict[str, type[Source]] = {
    "dicom_xray": DicomXraySource,
    "report_xray": ReportXraySource,
    "label_table": LabelTableSource,
    "synthetic": SyntheticSource,
}


def make_source(cfg) -> Source:
    return SOURCE_CLASSES[cfg.kind](cfg)


__all__ = ["ProcessedSample", "RawItem", "Reject", "Source", "SOURCE_CLASSES", "make_source"]
