"""Streaming report readers (CSV / JSONL) and Parquet writers behind ``mgll sections`` and ``mgll label``.

Memory stays constant: rows are read lazily and written in batches with ``pyarrow.parquet.ParquetWriter``.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

BATCH_ROWS = 1000


class ReportInputError(ValueError):
    """An input file that cannot be read as reports (missing, wrong format, missing columns)."""


def iter_reports(path: Path, warnings: dict[str, int]) -> Iterator[tuple[str, str]]:
    """(id, text) per report; undecodable bytes are replaced (and counted), malformed JSONL lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ReportInputError(f"input file {str(path)!r} must end in .csv or .jsonl")
    raw = path.open("rb")
    try:
        lines = (_decode(line, warnings) for line in raw)
        if suffix == ".csv":
            csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
            reader = csv.DictReader(lines)
            if not reader.fieldnames or not {"id", "text"} <= set(reader.fieldnames):
                raise ReportInputError(
                    f"CSV {str(path)!r} needs columns 'id' and 'text' (found: {reader.fieldnames or 'no header'})"
                )
            for row in reader:
                yield str(row.get("id") or ""), row.get("text") or ""
        else:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    if not isinstance(item, dict):
                        raise ValueError
                except ValueError:
                    warnings["malformed_jsonl_line"] = warnings.get("malformed_jsonl_line", 0) + 1
                    continue
                text = item.get("text")
                yield str(item.get("id", number)), text if isinstance(text, str) else ""
    finally:
        raw.close()


def _decode(line: bytes, warnings: dict[str, int]) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        warnings["non_utf8_bytes"] = warnings.get("non_utf8_bytes", 0) + 1
        return line.decode("utf-8", errors="replace")


def _batches(iterator, size: int):
    while True:
        batch = list(islice(iterator, size))
        if not batch:
            return
        yield batch


def _write(output: Path, schema: pa.Schema, row_batches: Iterator[list[dict]]) -> int:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    total = 0
    with pq.ParquetWriter(partial, schema) as writer:
        for rows in row_batches:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            total += len(rows)
    partial.replace(output)  # a crash never leaves a half-written file under the final name
    return total


def write_sections(input_path: Path, output: Path, max_words: int | None = None) -> tuple[int, dict[str, int]]:
    from dataset_builders.text.compose import compose_texts
    from dataset_builders.text.sections import split_sections

    warnings: dict[str, int] = {}
    schema = pa.schema([("id", pa.string()), ("diagnosis", pa.string()), ("explanation", pa.string()),
                        ("sections", pa.string()), ("warnings", pa.string())])

    def rows():
        reports = tqdm(iter_reports(input_path, warnings), desc="sections", unit=" reports", file=sys.stderr)
        for batch in _batches(reports, BATCH_ROWS):
            out = []
            for report_id, text in batch:
                composed = compose_texts(text, max_words=max_words)
                for warning in composed.warnings:
                    key = warning.split(":")[0]
                    warnings[key] = warnings.get(key, 0) + 1
                found = [
                    {"name": s.name, "header": s.header, "start": s.start, "end": s.end, "text": s.text}
                    for s in split_sections(text)
                ]
                out.append({"id": report_id, "diagnosis": composed.diagnosis, "explanation": composed.explanation,
                            "sections": json.dumps(found), "warnings": json.dumps(composed.warnings)})
            yield out

    return _write(output, schema, rows()), warnings


def write_labels(input_path: Path, output: Path, ontology: str = "chexpert", batch_size: int = 256):
    from dataset_builders.text.labeler import Labeler

    labeler = Labeler(ontology)
    warnings: dict[str, int] = {}
    schema = pa.schema([("id", pa.string()), *[(name, pa.int8()) for name in labeler.labels], ("evidence", pa.string())])

    def rows():
        reports = tqdm(iter_reports(input_path, warnings), desc="label", unit=" reports", file=sys.stderr)
        for batch in _batches(reports, BATCH_ROWS):
            ids = [report_id for report_id, _ in batch]
            out = []
            for report_id, result in zip(ids, labeler.pipe((t for _, t in batch), batch_size=batch_size)):
                row = {"id": report_id, **{name: None for name in labeler.labels}}
                evidence = {}
                for name, value in result.items():
                    row[name] = value.state
                    evidence[name] = [asdict(e) for e in value.evidence]
                row["evidence"] = json.dumps(evidence)
                out.append(row)
            yield out

    total = _write(output, schema, rows())
    for name, count in labeler.warnings.items():
        warnings[name] = warnings.get(name, 0) + count
    return total, warnings
