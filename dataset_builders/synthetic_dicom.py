"""Writing synthetic CR/DX DICOM files (every pixel encoding variant the builder must handle) and broken ones."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

# Transfer syntaxes the demo corpus is written in, with the share of files each gets. pydicom encodes RLE itself
# and JPEG 2000 through pylibjpeg-openjpeg; JPEG Lossless SV1 and JPEG-LS have no pydicom encoder here, so
# python-gdcm's codecs encode those frames.
TRANSFER_SYNTAX_SHARES: dict[str, float] = {
    ExplicitVRLittleEndian: 0.45,
    ImplicitVRLittleEndian: 0.18,
    RLELossless: 0.11,
    JPEG2000Lossless: 0.10,
    JPEGLosslessSV1: 0.10,
    JPEGLSLossless: 0.06,
}
GDCM_ENCODED = (JPEGLosslessSV1, JPEGLSLossless)
SOP_CLASS_BY_MODALITY = {"CR": ComputedRadiographyImageStorage, "DX": DigitalXRayImageStorageForPresentation}
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.10.1407.1")  # fixed, so files are byte-identical per seed


def uid_for(seed: int, *parts: object) -> UID:
    """A deterministic, valid UID (2.25 form: a 128-bit integer) for one object of the corpus.

    (pydicom's ``generate_uid(prefix=None, ...)`` ignores its entropy sources and is random.)
    """
    digest = hashlib.sha256("|".join(["mgll-demo", str(seed), *map(str, parts)]).encode()).digest()
    return UID(f"2.25.{int.from_bytes(digest[:16], 'big')}")


@dataclass
class PixelEncoding:
    """How one image's pixels are stored: everything the builder's pixel stage must undo."""

    transfer_syntax: str = ExplicitVRLittleEndian
    photometric: str = "MONOCHROME2"  # or MONOCHROME1 (inverted: high stored value = dark)
    bits_stored: int = 12  # 8, 12 or 16
    signed: bool = False  # PixelRepresentation 1
    rescale: tuple[float, float] | None = None  # (slope, intercept) of the modality LUT
    window: bool = True  # WindowCenter/Width present
    voi_lut: bool = False  # a VOILUTSequence (an S-shaped 12-bit LUT) instead of a window; unsigned data only

    @property
    def bits_allocated(self) -> int:
        return 8 if self.bits_stored == 8 else 16


def to_stored(img: np.ndarray, enc: PixelEncoding) -> tuple[np.ndarray, tuple[float, float]]:
    """Map display values in [0, 1] (bright = dense) to stored integers; also the (center, width) window."""
    if enc.signed:
        lo, hi = -(2 ** (enc.bits_stored - 1)), 2 ** (enc.bits_stored - 1) - 1
    else:
        lo, hi = 0, 2 ** enc.bits_stored - 1
    smin, smax = lo + 0.04 * (hi - lo), lo + 0.92 * (hi - lo)
    stored = smin + img * (smax - smin)
    if enc.photometric == "MONOCHROME1":
        stored = smin + smax - stored
    dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}[(enc.bits_allocated, enc.signed)]
    stored = np.round(stored).astype(dtype)
    slope, intercept = enc.rescale or (1.0, 0.0)
    m0, m1 = smin * slope + intercept, smax * slope + intercept
    return stored, ((m0 + m1) / 2.0, abs(m1 - m0) * 0.95)


def _ds_number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def build_xray_dataset(header: dict, stored: np.ndarray, enc: PixelEncoding, window: tuple[float, float]) -> Dataset:
    """A CR/DX dataset: ``header`` holds keyword -> value for every non-pixel attribute (incl. the UIDs)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = header["SOPClassUID"]
    meta.MediaStorageSOPInstanceUID = header["SOPInstanceUID"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = "MGLL_DEMO_1"
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    frames = stored.shape[0] if stored.ndim == 3 else 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = enc.photometric
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = enc.bits_allocated
    ds.BitsStored = enc.bits_stored
    ds.HighBit = enc.bits_stored - 1
    ds.PixelRepresentation = 1 if enc.signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if enc.rescale is not None:
        ds.RescaleSlope = _ds_number(enc.rescale[0])
        ds.RescaleIntercept = _ds_number(enc.rescale[1])
        ds.RescaleType = "US"
    if enc.voi_lut:
        ds.VOILUTSequence = Sequence([_voi_lut_item(window)])
    elif enc.window:
        ds.WindowCenter = _ds_number(window[0])
        ds.WindowWidth = _ds_number(window[1])
        ds.VOILUTFunction = "LINEAR"
    ds.PixelData = stored.tobytes()
    return ds


def _voi_lut_item(window: tuple[float, float]) -> Dataset:
    """An S-shaped VOI LUT over the window's input range, output 12 bits."""
    first = int(np.floor(window[0] - window[1] / 2))
    n_entries = int(np.ceil(window[1])) + 1
    t = np.linspace(-1.0, 1.0, n_entries)
    curve = np.tanh(2.0 * t) / np.tanh(2.0)
    item = Dataset()
    item.add_new(0x00283002, "US", [n_entries % 65536, max(first, 0), 12])  # LUTDescriptor (unsigned input)
    item.LUTExplanation = "SYNTHETIC S-CURVE"
    item.add_new(0x00283006, "US", np.round((curve + 1.0) / 2.0 * 4095).astype(np.uint16).tolist())  # LUTData
    return item


def save_dataset(ds: Dataset, path: Path, transfer_syntax: str, stored: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if transfer_syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(transfer_syntax, stored, generate_instance_uid=False)
    elif transfer_syntax in GDCM_ENCODED:
        _compress_with_gdcm(ds, path, transfer_syntax)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)


def _compress_with_gdcm(ds: Dataset, path: Path, transfer_syntax: str) -> None:
    """Replace ``ds``'s native PixelData by GDCM's encapsulated encoding in ``transfer_syntax`` (lossless)."""
    import gdcm
    import pydicom

    gdcm_syntax = {JPEGLosslessSV1: gdcm.TransferSyntax.JPEGLosslessProcess14_1,
                   JPEGLSLossless: gdcm.TransferSyntax.JPEGLSLossless}[transfer_syntax]
    workdir = Path(tempfile.mkdtemp(prefix="mgll-gdcm-"))  # private: concurrent generators never share temp names
    native, encoded = workdir / "native.dcm", workdir / "encoded.dcm"
    try:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(native, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(native))
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm_syntax))
        if not reader.Read() or not (change.SetInput(reader.GetImage()) or change.Change()):
            raise RuntimeError(f"GDCM could not encode {path.name} as {transfer_syntax.name}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(encoded))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError(f"GDCM could not write {path.name} as {transfer_syntax.name}")
        ds["PixelData"] = pydicom.dcmread(encoded)["PixelData"]
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- broken inputs

REJECT_REASONS = ("truncated", "non_image", "not_dicom", "absurd_dimensions", "undecodable")


def write_broken(kind: str, path: Path, header: dict, rng: np.random.Generator, size: int) -> None:
    """Write one deliberately unusable input of ``kind`` (see the corpus README for each)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (rng.random((size, size)) * 4000).astype(np.uint16)
    enc = PixelEncoding()
    if kind == "truncated_pixels":  # header promises rows x cols, PixelData holds half of it
        ds = build_xray_dataset(header, img, enc, (2000.0, 4000.0))
        ds.PixelData = img.tobytes()[: img.nbytes // 2]
        save_dataset(ds, path, ExplicitVRLittleEndian)
    elif kind == "truncated_file":  # file cut off in the middle of the pixel data element
        ds = build_xray_dataset(header, img, enc, (2000.0, 4000.0))
        save_dataset(ds, path, ExplicitVRLittleEndian)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - img.nbytes // 2])
    elif kind == "absurd_dimensions":  # 65535 x 65535 claimed, a few bytes present
        ds = build_xray_dataset(header, img[:2, :2], enc, (2000.0, 4000.0))
        ds.Rows = ds.Columns = 65535
        save_dataset(ds, path, ExplicitVRLittleEndian)
    elif kind == "undecodable":  # an encapsulated transfer syntax no installed plugin decodes (MPEG2)
        ds = build_xray_dataset(header, img, enc, (2000.0, 4000.0))
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
        ds.save_as(path, enforce_file_format=True)
    elif kind in ("structured_report", "presentation_state"):
        meta = FileMetaDataset()
        sop_class = BasicTextSRStorage if kind == "structured_report" else GrayscaleSoftcopyPresentationStateStorage
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = header["SOPInstanceUID"]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        ds = Dataset()
        ds.file_meta = meta
        for keyword, value in header.items():
            setattr(ds, keyword, value)
        ds.SOPClassUID = sop_class
        if kind == "structured_report":
            ds.Modality = "SR"
            ds.ValueType = "CONTAINER"
            ds.CompletionFlag = "COMPLETE"
            ds.VerificationFlag = "UNVERIFIED"
            item = Dataset()
            item.RelationshipType = "CONTAINS"
            item.ValueType = "TEXT"
            item.TextValue = "Chest radiograph reviewed."
            ds.ContentSequence = Sequence([item])
        else:
            ds.Modality = "PR"
            ds.ContentLabel = "ANNOTATION"
            ds.PresentationCreationDate = header.get("StudyDate", "")
        ds.save_as(path, enforce_file_format=True)
    elif kind == "not_dicom":
        path.write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    else:
        raise ValueError(f"unknown broken-file kind {kind!r}")


BROKEN_KINDS: dict[str, str] = {  # kind -> reason category in ground truth
    "truncated_pixels": "truncated",
    "truncated_file": "truncated",
    "structured_report": "non_image",
    "presentation_state": "non_image",
    "not_dicom": "not_dicom",
    "absurd_dimensions": "absurd_dimensions",
    "undecodable": "undecodable",
}
