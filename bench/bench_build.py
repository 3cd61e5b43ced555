"""Benchmark of build-dataset: ratios measured in one run on this machine (no timed unit tests).

(a) build samples/s on one core / a bare loop of dcmread + pixel normalisation + resize + PNG encode over the same
    files (goal >= 0.85);  (b) processes runner with 2 workers / 1 worker (goal >= 1.7 on 2 free cores);
(c) peak RSS of a build at 1x and 4x corpus size (goal: flat).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_build.py [--studies 120] [--image-size 256]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def bare_loop(files: list[Path], image_size: int) -> tuple[int, float]:
    """The baseline: what any script would do per file, with no bookkeeping at all.

    Same work per sample as the build: decode the first frame only, the build's own normalisation
    (``pixels.to_display``: Modality LUT, then the file's VOI LUT / window or, without one, a percentile window;
    MONOCHROME1 inversion), resize and PNG encode.  Only the bookkeeping is left out (validation, de-identification,
    hashing, texts, shards, manifest).
    """
    import pydicom
    from PIL import Image

    from dataset_builders.pixels import to_display

    done = 0
    started = time.perf_counter()
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                ds.pixel_array_options(index=0)
            out = to_display(ds.pixel_array, ds)
        except Exception:  # undecodable or unusable pixels: no sample, as in the build
            continue
        image = Image.fromarray(out)
        scale = image_size / min(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=3)
        done += 1
    return done, time.perf_counter() - started


def run_build(root: Path, out: Path, image_size: int, runner: dict, reports: bool = False) -> dict:
    from dataset_builders.build import build
    from dataset_builders.config import load_build_config

    source = {"kind": "dicom_xray", "root": str(root), "patterns": ["dicom/**/*.dcm"]}
    if reports:
        source["reports"] = "reports.csv"
    cfg = load_build_config(data={"sources": [source], "out": str(out), "image_size": image_size, "chunk_size": 32,
                                  "salt": "bench", "plots": False, "runner": runner})
    started = time.perf_counter()
    summary = build(cfg, progress=False)
    seconds = time.perf_counter() - started
    return {"samples": summary.samples + summary.duplicates, "seconds": seconds,
            "samples_per_s": (summary.samples + summary.duplicates) / seconds}


def peak_rss_of_build(root: Path, out: Path, image_size: int) -> float:
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from bench.bench_build import run_build\n"
        f"from pathlib import Path\nrun_build(Path({str(root)!r}), Path({str(out)!r}), {image_size}, {{'kind': 'local'}})\n"
        # VmHWM, not ru_maxrss: ru_maxrss is inherited across fork+exec from this (large) parent process
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(json.dumps(int(hwm) / 1024))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=120)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from dataset_builders.synthetic import generate_demo_corpus

    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        tmp = Path(tmp)
        small, large = tmp / "raw1x", tmp / "raw4x"
        generate_demo_corpus(small, n_studies=args.studies, n_fundus=0, seed=1, image_size=args.image_size)
        generate_demo_corpus(large, n_studies=4 * args.studies, n_fundus=0, seed=1, image_size=args.image_size)
        files = sorted((small / "dicom").rglob("*.dcm"))
        bare_loop(files[:5], args.image_size)  # warm imports / plugin loading for both sides
        run_build(small, tmp / "warm", args.image_size, {"kind": "local"})

        base_n, base_s = bare_loop(files, args.image_size)
        one = run_build(small, tmp / "one", args.image_size, {"kind": "local"})
        with_reports = run_build(small, tmp / "reports", args.image_size, {"kind": "local"}, reports=True)
        p1 = run_build(large, tmp / "p1", args.image_size, {"kind": "processes", "workers": 1})
        p2 = run_build(large, tmp / "p2", args.image_size, {"kind": "processes", "workers": 2})
        rss1 = peak_rss_of_build(small, tmp / "rss1", args.image_size)
        rss4 = peak_rss_of_build(large, tmp / "rss4", args.image_size)

    baseline = base_n / base_s
    report = {
        "files": len(files),
        "bare_loop_samples_per_s": round(baseline, 2),
        "build_1core_samples_per_s": round(one["samples_per_s"], 2),
        "a_build_over_bare_loop": round(one["samples_per_s"] / baseline, 3),
        "build_1core_with_reports_samples_per_s": round(with_reports["samples_per_s"], 2),
        "processes_1_worker_samples_per_s": round(p1["samples_per_s"], 2),
        "processes_2_workers_samples_per_s": round(p2["samples_per_s"], 2),
        "b_2_workers_over_1": round(p2["samples_per_s"] / p1["samples_per_s"], 3),
        "c_peak_rss_mb_1x": round(rss1, 1),
        "c_peak_rss_mb_4x": round(rss4, 1),
        "c_rss_4x_over_1x": round(rss4 / rss1, 3),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
