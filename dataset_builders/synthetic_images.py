"""Synthetic pixels whose content depends on the findings: a chest radiograph and a colour fundus photograph.

Images are float arrays in [0, 1] where brighter means denser (the MONOCHROME2 display convention for X-ray);
the DICOM writer maps them to stored values. Everything is vectorised numpy over coordinate grids, ~2 ms per
256 px chest image on one core.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dataset_builders.synthetic_findings import LOBES, Finding

# Frontal-view anatomy in unit image coordinates.
LUNG_CENTRES = {"right": (0.31, 0.47), "left": (0.69, 0.47)}
LUNG_RADII = {"right": (0.15, 0.33), "left": (0.14, 0.32)}
HEART_CENTRE = (0.55, 0.63)
HEART_RADII = (0.15, 0.12)  # normal; cardiomegaly widens the x radius
# Heart-border region used by tests: lateral to the normal heart, medial to the left lung's edge.
HEART_BORDER_BOX = (0.69, 0.76, 0.56, 0.70)  # x0, x1, y0, y1


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(rows, dtype=np.float32)[:, None] + 0.5) / rows
    x = (np.arange(cols, dtype=np.float32)[None, :] + 0.5) / cols
    return x, y


def _ellipse(x, y, cx, cy, rx, ry) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2  # < 1 inside


def _smooth_noise(rng: np.random.Generator, rows: int, cols: int, cells: int = 12) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((cols, rows), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _soft(d: np.ndarray, edge: float = 0.15) -> np.ndarray:
    """1 inside (d < 1), falling to 0 across a soft rim."""
    return np.clip((1.0 + edge - d) / edge, 0.0, 1.0)


def render_chest(rng: np.random.Generator, findings: list[Finding], rows: int, cols: int,
                 view: str = "PA", pixel_spacing_mm: float = 1.4) -> np.ndarray:
    """A chest radiograph (float32 rows x cols in [0, 1]) drawing every finding in ``findings``."""
    x, y = _grid(rows, cols)
    findings = [f for f in findings if f.rendered]  # an unrendered (report-only) finding leaves no trace
    by_label = {f.label: f for f in findings}
    lateral = view == "LATERAL"
    heart_rx, heart_ry = HEART_RADII
    magnify = 1.08 if view == "AP" else 1.0
    if "Cardiomegaly" in by_label:
        f = by_label["Cardiomegaly"]
        heart_rx *= 1.0 + (0.12 + 0.1 * f.severity)
    heart_rx *= magnify

    img = np.full((rows, cols), 0.04, np.float32)
    body = _ellipse(x, y, 0.5, 0.56, 0.47, 0.55)
    img += 0.40 * _soft(body, 0.05)

    if lateral:
        lung_d = {"right": _ellipse(x, y, 0.5, 0.47, 0.30, 0.34)}
    else:
        lung_d = {s: _ellipse(x, y, *LUNG_CENTRES[s], *LUNG_RADII[s]) for s in ("right", "left")}
    lung_any = np.zeros_like(img)
    for d in lung_d.values():
        lung_any = np.maximum(lung_any, _soft(d, 0.08))
    texture = 0.025 * _smooth_noise(rng, rows, cols, 24)
    rib_phase = y * 11.0 - 2.6 * (x - 0.5) ** 2 + rng.uniform(0, 1)
    ribs = (np.mod(rib_phase, 1.0) < 0.28).astype(np.float32)

    if "Fracture" in by_label and not lateral:
        f = by_label["Fracture"]
        cx = 0.2 if f.side == "right" else 0.8
        cy = 0.4 + rng.uniform(-0.08, 0.08)
        box = (np.abs(x - cx) < 0.06) & (np.abs(y - cy) < 0.07)
        shifted = (np.mod(rib_phase + 0.5, 1.0) < 0.28).astype(np.float32)  # displaced fragment
        gap = box & (np.abs(x - cx) < 0.012)
        ribs = np.where(box & (x > cx), shifted, ribs)
        ribs = np.where(gap, 0.0, ribs)
        # callus / extrapleural haematoma: a soft density over the fracture line
        callus = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.03**2)).astype(np.float32)
    else:
        callus = None
    if "Pneumothorax" in by_label and not lateral:
        f = by_label["Pneumothorax"]
        side = f.side if f.side in lung_d else "right"
        cx, cy = LUNG_CENTRES[side]
        rx, ry = LUNG_RADII[side]
        shrink = 1.0 - (0.12 + 0.1 * f.severity)
        collapsed = _ellipse(x, y, cx + (0.5 - cx) * (1 - shrink), cy + 0.04, rx * shrink, ry * shrink)
        outer = lung_d[side] < 1.0
        air = outer & (collapsed > 1.0) & (y < cy + 0.05)
        lung_tex = np.where(air, 0.0, 1.0)
        pleural_line = outer & (np.abs(collapsed - 1.0) < 0.06) & (y < cy + 0.05)
    else:
        lung_tex = 1.0
        pleural_line = None

    lung_value = 0.14 + (0.07 * ribs + texture) * lung_tex
    img = img * (1 - lung_any) + lung_value * lung_any
    if callus is not None:
        img += 0.14 * callus
    if pleural_line is not None:
        img = np.where(pleural_line, img + 0.2, img)

    # Mediastinum and heart (denser than lung).
    med_half = 0.055 * magnify
    if "Enlarged Cardiomediastinum" in by_label:
        f = by_label["Enlarged Cardiomediastinum"]
        med_half *= 1.0 + 0.25 * f.severity
    if lateral:
        heart = _soft(_ellipse(x, y, 0.38, 0.62, heart_rx * 1.1, heart_ry * 1.2), 0.1)
        med = np.zeros_like(img)
    else:
        heart = _soft(_ellipse(x, y, HEART_CENTRE[0], HEART_CENTRE[1], heart_rx, heart_ry), 0.1)
        med = ((np.abs(x - 0.5) < med_half) & (y > 0.08) & (y < 0.62)).astype(np.float32)
    img = np.maximum(img, 0.5 * np.maximum(heart, med))

    def blob(cx, cy, sigma, amp, mask=lung_any):
        return amp * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))) * mask

    for f in findings:
        cx, cy = LOBES.get(f.lobe, (0.3, 0.62)) if not lateral else (0.5, LOBES.get(f.lobe, (0.3, 0.62))[1])
        if f.label in ("Consolidation", "Pneumonia"):
            img += blob(cx, cy, 0.035 + 0.02 * f.severity, 0.28)
        elif f.label == "Lung Opacity":
            img += blob(cx + 0.02, cy + 0.02, 0.05 + 0.025 * f.severity, 0.13)
        elif f.label == "Edema":
            for hx in ((0.5,) if lateral else (0.37, 0.63)):
                img += blob(hx, 0.5, 0.06 + 0.03 * f.severity, 0.08 + 0.05 * f.severity)
        elif f.label == "Lung Lesion":
            r = max(f.size_mm / pixel_spacing_mm / max(rows, cols) * 2.0, 1.5 / max(rows, cols))
            d = ((x - cx) ** 2 + ((y - cy) * rows / cols) ** 2) / (r * r)
            img += 0.32 * _soft(d, 0.3) * lung_any
        elif f.label == "Atelectasis":
            for side in (("right", "left") if f.side == "bilateral" else (f.side or "right",)):
                lx = 0.5 if lateral else LUNG_CENTRES[side][0]
                band = (np.abs(y - (0.66 - 0.01 * f.severity)) < 0.006 + 0.004 * f.severity) & (np.abs(x - lx) < 0.07)
                img = np.where(band & (lung_any > 0.5), img + 0.22, img)
        elif f.label == "Pleural Effusion":
            for side in (("right", "left") if f.side == "bilateral" else (f.side or "right",)):
                d = lung_d.get(side, next(iter(lung_d.values())))
                lx, ly = (0.5, 0.47) if lateral else LUNG_CENTRES[side]
                ry = 0.34 if lateral else LUNG_RADII[side][1]
                level = ly + ry * (1.0 - 0.28 * f.severity)
                lateral_dist = np.abs(x - lx) / 0.15
                meniscus = level - 0.05 * lateral_dist ** 2  # fluid climbs the lateral wall
                fluid = (y > meniscus) & (d < 1.25)
                img = np.where(fluid, np.maximum(img, 0.48), img)
        elif f.label == "Pleural Other":
            for side in (("right", "left") if f.side == "bilateral" else (f.side or "right",)):
                if lateral:
                    continue
                d = lung_d[side]
                rim = (d > 0.82) & (d < 1.0) & (np.abs(x - 0.5) > 0.25) & (y < 0.7)
                img = np.where(rim, img + 0.15, img)
        elif f.label == "Support Devices":
            img = _draw_device(img, f.device, rows, cols, lateral)

    img += rng.normal(0.0, 0.012, img.shape).astype(np.float32)
    gamma = rng.uniform(0.85, 1.15)
    return np.clip(img, 0.0, 1.0) ** gamma


def _draw_device(img: np.ndarray, device: str, rows: int, cols: int, lateral: bool) -> np.ndarray:
    canvas = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(canvas)
    w = max(1, cols // 128)
    if device == "endotracheal tube":
        draw.line([(cols * 0.5, 0), (cols * 0.5, rows * 0.3)], fill=255, width=2 * w)
    elif device == "central venous catheter":
        draw.line([(cols * 0.22, rows * 0.12), (cols * 0.35, rows * 0.2), (cols * 0.47, rows * 0.3),
                   (cols * 0.5, rows * 0.4)], fill=255, width=w)
    elif device == "nasogastric tube":
        draw.line([(cols * 0.49, 0), (cols * 0.5, rows * 0.5), (cols * 0.58, rows * 0.85)], fill=255, width=w)
    else:  # pacemaker: generator box plus a lead to the heart
        draw.rectangle([cols * 0.74, rows * 0.16, cols * 0.82, rows * 0.22], fill=255)
        draw.line([(cols * 0.76, rows * 0.2), (cols * 0.6, rows * 0.45), (cols * 0.56, rows * 0.62)], fill=255, width=w)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    return np.maximum(img, 0.92 * mask)


def burn_in_annotation(img: np.ndarray) -> np.ndarray:
    """A bright marker block in a corner, as burned-in annotations look (no PHI is ever burned in)."""
    rows, cols = img.shape[-2:]
    out = img.copy()
    out[..., rows // 20: rows // 20 + max(3, rows // 32), cols // 20: cols // 20 + max(6, cols // 8)] = 1.0
    return out


# ---------------------------------------------------------------------------------------------- fundus

FUNDUS_LABELS: tuple[str, ...] = ("DR", "ARMD", "MH", "DN", "MYA", "BRVO", "TSLN", "ODC")


def render_fundus(rng: np.random.Generator, labels: dict[str, int], size: int, dr_grade: int = 0,
                  severity: float = 1.0) -> np.ndarray:
    """A colour fundus photograph (uint8 size x size x 3) showing each label in ``labels`` (value 1)."""
    right_eye = rng.random() < 0.5
    disc = np.array([0.68 if right_eye else 0.32, 0.5 + rng.uniform(-0.03, 0.03)]) * size
    macula = np.array([0.42 if right_eye else 0.58, 0.52]) * size
    disc_r = size * 0.065

    x, y = _grid(size, size)
    r = np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2)
    fov = r < 0.47
    vignette = np.clip(1.0 - 1.2 * r ** 2, 0, 1)
    base = np.stack([0.82 * vignette, 0.36 * vignette, 0.13 * vignette], -1)
    mac_d = ((x * size - macula[0]) ** 2 + (y * size - macula[1]) ** 2) / (size * 0.08) ** 2
    base *= (1.0 - 0.3 * np.exp(-mac_d))[..., None]
    if labels.get("TSLN") or labels.get("MYA"):
        stripes = 0.5 + 0.5 * np.sin(40 * (x + 0.3 * _smooth_noise(rng, size, size, 6) * 0.1) + 25 * y)
        base *= (1.0 - 0.18 * stripes)[..., None]
    base += rng.normal(0, 0.01, base.shape)
    canvas = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)

    # Vessels: four arcades leaving the disc.
    direction = -1.0 if right_eye else 1.0
    for sign in (-1.0, 1.0):
        for spread, width in ((0.2, max(2, size // 80)), (0.11, max(1, size // 120))):
            pts = []
            for t in np.linspace(0, 1, 18):
                px = disc[0] + direction * t * size * 0.45
                py = disc[1] + sign * size * spread * np.sin(np.pi * min(1.0, t * 1.3)) + sign * t * size * 0.05
                pts.append((float(px), float(py)))
            draw.line(pts, fill=(120, 20, 15), width=width, joint="curve")
    if labels.get("BRVO"):
        sign = -1.0 if rng.random() < 0.5 else 1.0
        for _ in range(int(6 + 10 * severity)):
            t = rng.uniform(0.2, 0.8)
            px = disc[0] + direction * t * size * 0.45
            py = disc[1] + sign * size * 0.2 * np.sin(np.pi * min(1.0, t * 1.3)) + rng.normal(0, size * 0.02)
            ln = size * 0.03
            draw.line([(px, py), (px + direction * ln, py + sign * ln * 0.4)], fill=(150, 10, 10),
                      width=max(2, size // 90))

    # Optic disc with cup; cupping enlarges the cup.
    disc_box = [disc[0] - disc_r, disc[1] - disc_r * 1.1, disc[0] + disc_r, disc[1] + disc_r * 1.1]
    draw.ellipse(disc_box, fill=(245, 200, 120))
    cup = (0.75 if labels.get("ODC") else 0.3) * disc_r
    draw.ellipse([disc[0] - cup, disc[1] - cup * 1.1, disc[0] + cup, disc[1] + cup * 1.1], fill=(255, 245, 215))
    if labels.get("MYA"):
        cres = disc_r * 1.5
        draw.chord([disc[0] - cres, disc[1] - cres, disc[0] + cres, disc[1] + cres],
                   start=-60 if right_eye else 120, end=60 if right_eye else 240, fill=(235, 190, 140))
        draw.ellipse(disc_box, fill=(245, 200, 120))

    def spots(n, centre, spread, radius, colour):
        for _ in range(n):
            px, py = centre + rng.normal(0, spread, 2)
            rr = radius * rng.uniform(0.7, 1.3)
            draw.ellipse([px - rr, py - rr, px + rr, py + rr], fill=colour)

    if labels.get("DR") and dr_grade > 0:
        n_ma = {1: 6, 2: 18, 3: 35, 4: 45}[dr_grade]
        spots(n_ma, macula, size * 0.14, max(1.0, size / 220), (110, 10, 10))
        if dr_grade >= 2:
            spots(3 * dr_grade, macula, size * 0.12, max(1.5, size / 130), (250, 230, 90))  # hard exudates
        if dr_grade >= 3:
            spots(4 * dr_grade, macula, size * 0.18, max(2.5, size / 70), (130, 15, 10))  # blot haemorrhages
        if dr_grade == 4:
            for _ in range(12):  # neovascularisation at the disc
                a, b = rng.uniform(0, 2 * np.pi, 2)
                p0 = disc + disc_r * 1.2 * np.array([np.cos(a), np.sin(a)])
                p1 = p0 + disc_r * 0.8 * np.array([np.cos(b), np.sin(b)])
                draw.line([tuple(p0), tuple(p1)], fill=(140, 25, 20), width=1)
    if labels.get("ARMD"):
        spots(int(15 + 20 * severity), macula, size * 0.05, max(1.5, size / 110), (235, 215, 110))
        spots(4, macula, size * 0.03, max(1.5, size / 120), (60, 30, 10))  # pigment clumps
    elif labels.get("DN"):
        spots(int(5 + 5 * severity), macula, size * 0.06, max(1.0, size / 150), (230, 205, 110))

    if labels.get("MH"):
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=size / 90 * (1 + severity)))
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    if labels.get("MH"):
        haze = 0.25 + 0.15 * severity
        arr = arr * (1 - haze) + haze * np.array([0.85, 0.8, 0.7], np.float32)
    arr = np.where(fov[..., None], arr, 0.0)
    return (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
