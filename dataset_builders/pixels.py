"""DICOM / image pixels -> display-ready 8-bit arrays -> resized PNG/JPEG bytes.

Grayscale pipeline (PS3.3 C.11 order): decode -> Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence)
-> VOI LUT Sequence or the first Window Center/Width (percentile window 0.5-99.5 % when the file has neither)
-> MONOCHROME1 inversion -> 8 bit.  Colour: YBR is converted to RGB by pydicom's decoder, PALETTE COLOR through
its LUT, >8-bit colour is scaled down by BitsStored.  Every failure raises ``PixelError`` with a specific reason
so that the caller can quarantine the file.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

Image.MAX_IMAGE_PIXELS = None  # size limits are enforced by ``check_dimensions`` with a reason


class PixelError(Exception):
    """Pixels that cannot become a sample; ``stage`` and ``str(self)`` go to rejects.parquet."""

    def __init__(self, reason: str, stage: str = "pixels"):
        super().__init__(reason)
        self.stage = stage


@dataclass
class EncodedImage:
    data: bytes
    width: int
    height: int
    pixel_sha256: str  # of the normalised 8-bit pixels before resizing (exact-duplicate detection)
    original_size: tuple[int, int]  # (width, height) before resizing


def check_dimensions(ds: Dataset, max_pixels: int, min_side: int) -> tuple[int, int, int]:
    """Validate the header's geometry before decoding anything; returns (rows, columns, frames)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except AttributeError as exc:
        missing = str(exc).rsplit(" ", 1)[-1].strip("'")
        raise PixelError(f"image geometry missing: no {missing} element", stage="validate") from None
    except (TypeError, ValueError):
        raise PixelError("image geometry unreadable: Rows/Columns/BitsAllocated are not integers", stage="validate") from None
    if rows < min_side or cols < min_side:
        raise PixelError(f"absurd dimensions: {cols}x{rows} (shorter side below {min_side})", stage="validate")
    if rows * cols > max_pixels:
        raise PixelError(f"absurd dimensions: {cols}x{rows} (more than {max_pixels} pixels per frame)", stage="validate")
    if frames < 1 or frames > 10000:
        raise PixelError(f"absurd dimensions: NumberOfFrames {frames}", stage="validate")
    if bits == 1:
        raise PixelError("BitsAllocated 1 (bit-packed segmentation/overlay), not an image", stage="validate")
    if bits not in (8, 16, 32):
        raise PixelError(f"unsupported BitsAllocated {bits}", stage="validate")
    if samples not in (1, 3):
        raise PixelError(f"unsupported SamplesPerPixel {samples}", stage="validate")
    return rows, cols, frames


def decode_frames(ds: Dataset, frame_indices: list[int]) -> list[np.ndarray]:
    """Decode the requested frames (pydicom 3 backend; YBR -> RGB conversion on)."""
    out = []
    for index in frame_indices:
        try:
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                ds.pixel_array_options(index=index)
            else:
                ds.pixel_array_options(index=None)
            arr = ds.pixel_array
        except NotImplementedError as exc:
            tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = getattr(tsyntax, "name", str(tsyntax))
            raise PixelError(f"undecodable transfer syntax: {name} ({_first_line(exc)})", stage="decode") from None
        except (ValueError, EOFError, OSError, RuntimeError, KeyError, AttributeError, IndexError) as exc:
            raise PixelError(f"pixel data could not be decoded: {_first_line(exc)}", stage="decode") from None
        finally:
            ds._pixel_array = None  # free the decoded buffer; the next frame needs its own options
            ds._pixel_id = {}
        out.append(np.asarray(arr))
    return out


def to_display(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """One decoded frame -> uint8 (H, W) or (H, W, 3), ready to view (see module docstring for the order)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
        except Exception as exc:  # malformed LUT descriptors raise several types
            raise PixelError(f"palette colour LUT could not be applied: {_first_line(exc)}") from None
        return _scale_to_uint8(rgb, 0, float(rgb.max()) if rgb.dtype != np.uint8 else 255)
    if arr.ndim == 3:  # RGB (YBR already converted by the decoder)
        if arr.dtype == np.uint8:
            return np.ascontiguousarray(arr)
        bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or 8)
        return _scale_to_uint8(arr.astype(np.float64), 0, float(2**bits - 1))
    if arr.ndim != 2:
        raise PixelError(f"unexpected decoded shape {arr.shape}")

    values = apply_modality_lut(arr, ds)
    has_voi_lut = bool(ds.get("VOILUTSequence"))
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_voi_lut or has_window:
        try:
            windowed = apply_voi_lut(values, ds, index=0)
            low, high = _voi_output_range(ds, has_voi_lut)
        except Exception as exc:  # a malformed window or LUT: fall back to the data's own range
            windowed, low, high = values, *_percentile_window(values)
            _ = exc
        if not np.isfinite(high - low) or high <= low:
            windowed, (low, high) = values, _percentile_window(values)
    else:
        windowed = values
        low, high = _percentile_window(values)
    out = _scale_to_uint8(windowed, low, high)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _voi_output_range(ds: Dataset, has_voi_lut: bool) -> tuple[float, float]:
    """The value range ``apply_voi_lut`` maps into (mirrors pydicom's rules for LUT and windowing)."""
    if has_voi_lut:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits_stored = int(ds.get("BitsStored", 16))
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits_stored - 1)
    else:
        low, high = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return min(low, high), max(low, high)


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]
    low, high = np.percentile(sample, [0.5, 99.5])
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:  # a constant image: map it to mid-grey rather than dividing by zero
        return float(low) - 1.0, float(low) + 1.0
    return float(low), float(high)


def _scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def pixel_hash(pixels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(f"{pixels.shape}|{pixels.dtype}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=2.0 if scale < 0.5 else None)


def encode(pixels: np.ndarray, image_size: int, image_format: str = "png", jpeg_quality: int = 95, png_compress_level: int = 3) -> EncodedImage:
    """uint8 pixels -> resized PNG/JPEG bytes (shorter side = ``image_size``, aspect kept)."""
    if pixels.dtype != np.uint8:
        raise PixelError(f"encode expects uint8 pixels, got {pixels.dtype}")
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")
    image = resize_shorter_side(image, image_size)
    buffer = io.BytesIO()
    if image_format == "jpg":
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    else:
        image.save(buffer, format="PNG", compress_level=png_compress_level)
    return EncodedImage(buffer.getvalue(), image.size[0], image.size[1], pixel_hash(pixels), (width, height))


def load_image_file(data: bytes) -> np.ndarray:
    """PNG/JPEG/TIFF bytes -> uint8 (H, W) or (H, W, 3); 16-bit grayscale is min-max scaled."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(image, dtype=np.float64)
                return _scale_to_uint8(arr, *_percentile_window(arr))
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise PixelError(f"image could not be decoded: {_first_line(exc)}", stage="decode") from None


def _first_line(exc: BaseException) -> str:
    """The exception's message on one line (plugin lists joined), capped so a reason stays readable."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return ("; ".join(lines) if lines else type(exc).__name__)[:400]
