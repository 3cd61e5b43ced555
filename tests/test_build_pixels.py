"""Pixel normalisation on real DICOM files (pydicom's bundled test files + ../shared/external/pydicom-data)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from dataset_builders import pixels
from tests.fixtures.build import bundled


def display(ds, frame: int = 0) -> np.ndarray:
    return pixels.to_display(pixels.decode_frames(ds, [frame])[0], ds)


LOSSLESS_MR = ["MR_small_RLE.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_jp2klossless.dcm",
               "MR_small_jpeg_ls_lossless.dcm"]


@pytest.mark.parametrize("name", LOSSLESS_MR)
def test_lossless_transfer_syntaxes_give_identical_pixels(name):
    reference = display(pydicom.dcmread(bundled("MR_small.dcm")))
    other = display(pydicom.dcmread(bundled(name)))
    assert other.dtype == np.uint8 and other.shape == (64, 64)
    np.testing.assert_array_equal(other, reference)


@pytest.mark.parametrize(
    "name,colour",
    [("CT_small.dcm", False), ("JPEG2000.dcm", False), ("JPGExtended.dcm", False), ("JPEGLSNearLossless_16.dcm", False),
     ("693_J2KI.dcm", False), ("SC_rgb_rle_16bit.dcm", True), ("examples_palette.dcm", True),
     ("examples_ybr_color.dcm", True), ("SC_rgb_dcmtk_+eb+cy+n1.dcm", True)],
)
def test_photometric_and_bit_depths_become_uint8(name, colour):
    ds = pydicom.dcmread(bundled(name))
    out = display(ds)
    shape = (ds.Rows, ds.Columns, 3) if colour else (ds.Rows, ds.Columns)
    assert out.dtype == np.uint8 and out.shape == shape
    assert out.max() > out.min(), "a real image must not collapse to one grey level"


def test_ybr_is_converted_to_rgb():
    rgb = display(pydicom.dcmread(bundled("SC_rgb_rle.dcm"))).astype(int)
    for name in ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm"):
        ybr = display(pydicom.dcmread(bundled(name))).astype(int)
        assert ybr.shape == rgb.shape == (100, 100, 3)
        # the same test pattern: the red band stays red, the blue band blue, after YBR -> RGB
        assert np.abs(rgb - ybr).mean() < 6
        assert ybr[5, 50, 0] > 240 and ybr[5, 50, 1:].max() < 10
        assert ybr[50, 50, 2] > 240 and ybr[50, 50, :2].max() < 140


def test_window_is_applied_and_saturates():
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = 400, 200
    out = display(ds)
    raw = ds.pixel_array
    assert (out[raw <= 300] == 0).all() and (out[raw >= 500] == 255).all()


def test_percentile_fallback_without_window():
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    assert "WindowCenter" not in ds
    out = display(ds)
    assert out.min() == 0 and out.max() == 255


def test_monochrome1_is_inverted_on_pixel_values():
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    mono2 = display(ds)
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = display(ds)
    np.testing.assert_array_equal(mono1.astype(int), 255 - mono2.astype(int))
    # bright bone in MONOCHROME2 is dark once declared MONOCHROME1
    bright = mono2 > 200
    assert bright.any() and (mono1[bright] < 55).all()


def test_external_monochrome1_cr_is_inverted(external_dir):
    path = external_dir / "pydicom-data" / "data_store" / "data" / "RG3_J2KI.dcm"
    if not path.exists():
        pytest.skip(f"{path} not present")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    inverted = display(ds)
    ds.PhotometricInterpretation = "MONOCHROME2"
    plain = display(ds)
    np.testing.assert_array_equal(inverted.astype(int), 255 - plain.astype(int))


@pytest.mark.external
def test_external_extras_decode_or_raise_a_reason(external_dir):
    data = external_dir / "pydicom-data" / "data_store" / "data"
    if not data.is_dir():
        pytest.skip(f"{data} not present")
    decoded = 0
    for path in sorted(data.glob("*.dcm")):
        ds = pydicom.dcmread(path, force=True)
        try:
            pixels.check_dimensions(ds, 10**8, 8)
            out = display(ds)
        except pixels.PixelError as exc:
            assert str(exc) and exc.stage in ("validate", "decode", "pixels")
            continue
        assert out.dtype == np.uint8
        decoded += 1
    assert decoded >= 5


def test_multiframe_frames_differ():
    ds = pydicom.dcmread(bundled("examples_ybr_color.dcm"))
    first, last = pixels.decode_frames(ds, [0, 29])
    assert not np.array_equal(first, last)


def test_resize_keeps_aspect_and_shorter_side():
    arr = (np.arange(300 * 120) % 251).astype(np.uint8).reshape(300, 120)
    png = pixels.encode(arr, 64)
    image = Image.open(io.BytesIO(png.data))
    assert image.size == (64, 160) and (png.width, png.height) == (64, 160)
    assert png.original_size == (120, 300)
    jpg = pixels.encode(np.dstack([arr] * 3), 64, "jpg", jpeg_quality=30)
    assert Image.open(io.BytesIO(jpg.data)).format == "JPEG"
    assert len(jpg.data) < len(pixels.encode(np.dstack([arr] * 3), 64, "jpg", jpeg_quality=95).data)


def test_absurd_dimensions_rejected_before_decoding():
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.Rows = 2
    with pytest.raises(pixels.PixelError, match="absurd dimensions"):
        pixels.check_dimensions(ds, 10**8, 8)
    ds.Rows, ds.Columns = 60000, 60000
    with pytest.raises(pixels.PixelError, match="more than"):
        pixels.check_dimensions(ds, 10**8, 8)
