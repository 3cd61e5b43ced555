"""``synthetic``: the demo corpus (``dataset_builders.synthetic.generate_demo_corpus``) as one source.

If ``root/ground_truth.parquet`` is missing the corpus is generated there first.  It then reads as
``dicom_xray`` over ``root/dicom`` joined to ``root/reports.csv`` by StudyInstanceUID, plus ``label_table`` over
``root/fundus`` (RFMiD-like). Paths stay relative to ``root`` so they match ``ground_truth.parquet``'s ``relpath``.
"""

from __future__ import annotations

from typing import Iterator

from dataset_builders.config import DicomXraySource as DicomCfg
from dataset_builders.config import LabelTableSource as LabelCfg
from dataset_builders.sources.base import ProcessedSample, RawItem, Source
from dataset_builders.sources.dicom_xray import DicomXraySource
from dataset_builders.sources.label_table import LabelTableSource


class SyntheticSource(Source):
    kind = "synthetic"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.dicom = DicomXraySource(
            DicomCfg(root=cfg.root, name=self.name, licence=cfg.licence, patterns=["dicom/**/*.dcm"], reports="reports.csv")
        )
        self.fundus = LabelTableSource(
            LabelCfg(root=cfg.root, name=self.name, licence=cfg.licence, labels_csv="labels.csv", images_dir="images",
                     grade_columns={"Diabetic Retinopathy": "DR_grade"}),
            path_prefix="fundus",
        )

    def ensure_generated(self) -> None:
        if self.files.exists("ground_truth.parquet"):
            return
        from dataset_builders.synthetic import generate_demo_corpus
        from mgll.config import ConfigError

        try:
            generate_demo_corpus(
                self.files.full(""), n_studies=self.cfg.n_studies, seed=self.cfg.seed,
                n_fundus=self.cfg.n_fundus, image_size=self.cfg.image_size,
            )
        except Exception as exc:  # surface the generator's own message instead of a traceback
            raise ConfigError(f"source {self.name!r}: generating the demo corpus in {self.cfg.root!r} failed: "
                              f"{type(exc).__name__}: {exc}") from exc

    def check(self) -> None:
        self.files.fs.makedirs(self.files.base, exist_ok=True)
        self.ensure_generated()

    def label_derived_granularities(self) -> list[str]:
        return self.fundus.label_derived_granularities() if self.files.exists("fundus") else []

    def iter_items(self) -> Iterator[RawItem]:
        yield from self.dicom.iter_items()
        if self.files.exists("fundus/labels.csv"):
            yield from self.fundus.iter_items()

    def process(self, item: RawItem, ctx) -> list[ProcessedSample]:
        if item.kind == "dicom":
            return self.dicom.process(item, ctx)
        return self.fundus.process(item, ctx)
