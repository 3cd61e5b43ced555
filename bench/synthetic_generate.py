"""Benchmark: demo-corpus generation speed, as ratios against baselines measured in the same run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/synthetic_generate.py [--n 300] [--image-size 256] [--repeat 1]

Measures, on one process:
  * generate_demo_corpus files/s with the default transfer-syntax mix,
  * the same with every file written as Explicit VR Little Endian (no compression),
  * a bare loop that only writes the same number of same-sized uncompressed DICOMs with pydicom (no rendering),
and prints files/s of each plus the ratios generator / bare-write and default-mix / uncompressed, and the
extrapolated seconds for the default 2,000-study corpus. CPU time is reported beside wall time because the
machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _bare_write(out: Path, n_files: int, size: int) -> None:
    from dataset_builders.synthetic_dicom import PixelEncoding, build_xray_dataset, save_dataset, to_stored, uid_for

    img = np.random.default_rng(0).random((size, size)).astype(np.float32)
    enc = PixelEncoding()
    stored, window = to_stored(img, enc)
    header = {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1", "Modality": "CR", "BodyPartExamined": "CHEST"}
    for i in range(n_files):
        uid = uid_for(0, "bench", i)
        ds = build_xray_dataset(dict(header, SOPInstanceUID=uid), stored, enc, window)
        save_dataset(ds, out / f"{i:06d}.dcm", enc.transfer_syntax)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="studies per generated corpus")
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()

    import dataset_builders.synthetic as synthetic
    from pydicom.uid import ExplicitVRLittleEndian

    with tempfile.TemporaryDirectory(prefix="mgll-bench-synthetic-") as tmp:
        tmp_path = Path(tmp)
        wall_mix, cpu_mix, summary = _timed(
            lambda: synthetic.generate_demo_corpus(tmp_path / "mix", n_studies=args.n, n_fundus=0,
                                                   image_size=args.image_size)
        )
        default_shares = synthetic.TRANSFER_SYNTAX_SHARES
        synthetic.TRANSFER_SYNTAX_SHARES = {ExplicitVRLittleEndian: 1.0}
        try:
            wall_plain, cpu_plain, plain = _timed(
                lambda: synthetic.generate_demo_corpus(tmp_path / "plain", n_studies=args.n, n_fundus=0,
                                                       image_size=args.image_size)
            )
        finally:
            synthetic.TRANSFER_SYNTAX_SHARES = default_shares
        n_files = summary["n_dicom_files"]
        (tmp_path / "bare").mkdir()
        wall_bare, cpu_bare, _ = _timed(lambda: _bare_write(tmp_path / "bare", n_files, args.image_size))

    result = {
        "n_studies": args.n,
        "image_size": args.image_size,
        "dicom_files": n_files,
        "transfer_syntaxes": summary["transfer_syntaxes"],
        "files_per_s": {
            "generate_default_mix": round(n_files / wall_mix, 1),
            "generate_uncompressed": round(plain["n_dicom_files"] / wall_plain, 1),
            "bare_pydicom_write": round(n_files / wall_bare, 1),
        },
        "cpu_s": {"generate_default_mix": round(cpu_mix, 2), "generate_uncompressed": round(cpu_plain, 2),
                  "bare_pydicom_write": round(cpu_bare, 2)},
        "ratio_generate_vs_bare_write": round((n_files / wall_mix) / (n_files / wall_bare), 3),
        "ratio_default_mix_vs_uncompressed": round(wall_plain / wall_mix, 3),
        "extrapolated_s_for_2000_studies": {
            "default_mix_wall": round(wall_mix * 2000 / args.n, 1),
            "default_mix_cpu": round(cpu_mix * 2000 / args.n, 1),
            "uncompressed_cpu": round(cpu_plain * 2000 / args.n, 1),
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
