"""The built-in dataset: procedural street scenes written as JPEGs + BDD100K det_20 labels.

Why a generator and not a download: alod must run on a fresh machine with no network, and the demo
must show a detector learning in minutes on a 2-core CPU. The scenes are built to keep what makes
active learning on BDD100K interesting:

* BDD100K's ten categories with its imbalance: many cars, signs and lights, few riders, bicycles,
  motorcycles and trains (see ``CLASS_WEIGHTS``).
* Perspective: ground objects shrink towards the horizon, so the same class spans ~5 to ~90 px.
* Overlap: vehicles queue in lanes and occlude each other (painter's order, full-extent boxes,
  ``occluded`` attribute), riders sit on their bicycle/motorcycle.
* Contrast: night and fog scenes, vehicles coloured like the road, clutter (buildings, poles,
  lane marks) that resembles objects. Each image draws its own difficulty, so some images are
  genuinely harder than others, which is what an uncertainty strategy should find.
* A few ``other vehicle`` / ``other person`` / ``trailer`` regions, which BDD100K evaluation ignores.

Output layout (the same as BDD100K, so the same reader handles both)::

    <root>/images/100k/{train,val}/<split>_<index:05d>.jpg
    <root>/labels/det_20/det_{train,val}.json
    <root>/alod_synthetic.json      # generator parameters; a different request regenerates

Determinism: image ``i`` of a split is drawn from ``np.random.default_rng([seed, split_id, i])``,
so the files depend only on (seed, split, index, size) and not on the order of generation.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from alod.utils import atomic_write_bytes, atomic_write_json

GENERATOR_VERSION = 1
SPLIT_IDS = {"train": 0, "val": 1}

# Relative frequency of each category among objects placed in a scene. Riders are placed together
# with the bicycle or motorcycle they ride, so their two-wheeler appears at least as often.
CLASS_WEIGHTS = {
    "car": 0.40,
    "traffic sign": 0.17,
    "traffic light": 0.13,
    "pedestrian": 0.12,
    "truck": 0.06,
    "bus": 0.04,
    "rider": 0.025,
    "bicycle": 0.02,
    "motorcycle": 0.015,
    "train": 0.01,
}
IGNORED_WEIGHTS = {"other vehicle": 0.6, "other person": 0.25, "trailer": 0.15}

# Height of a ground object at the bottom of the frame, as a fraction of the image height, and its
# width / height ratio range.
_GROUND_SHAPES = {
    "car": (0.30, (1.3, 2.1)),
    "truck": (0.48, (1.5, 2.4)),
    "bus": (0.50, (1.9, 2.8)),
    "train": (0.45, (4.0, 6.0)),
    "pedestrian": (0.40, (0.33, 0.45)),
    "other person": (0.40, (0.35, 0.5)),
    "other vehicle": (0.32, (1.0, 1.6)),
    "trailer": (0.34, (1.8, 2.6)),
    "bicycle": (0.26, (1.4, 1.8)),
    "motorcycle": (0.28, (1.4, 1.9)),
}


def _rgb(rng: np.random.Generator, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    c = rng.integers(lo, hi + 1, size=3)
    return int(c[0]), int(c[1]), int(c[2])


def _shade(color, factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in color)  # type: ignore[return-value]


class _Scene:
    """Draws one scene; collects (category, box, attributes) as it goes."""

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.rng = rng
        self.w, self.h = width, height
        self.night = rng.random() < 0.25
        self.fog = (not self.night) and rng.random() < 0.2
        self.horizon = int(height * rng.uniform(0.34, 0.48))
        self.img = Image.new("RGB", (width, height))
        self.draw = ImageDraw.Draw(self.img)
        self.labels: list[dict] = []
        self.brightness = 0.38 if self.night else 1.0

    def col(self, color) -> tuple[int, int, int]:
        return _shade(color, self.brightness)

    # -------------------------------------------------------------- background
    def background(self) -> None:
        rng, d, w, h, hz = self.rng, self.draw, self.w, self.h, self.horizon
        sky_top = (20, 25, 45) if self.night else _rgb(rng, 120, 200)
        sky_bottom = (45, 50, 70) if self.night else (200, 210, 225)
        for y in range(hz):
            t = y / max(1, hz - 1)
            d.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(sky_top, sky_bottom)))
        # Buildings along the horizon: clutter with object-like edges and colours.
        x = int(rng.integers(-20, 0))
        while x < w:
            bw = int(rng.integers(w // 16, w // 5))
            bh = int(rng.integers(hz // 4, hz))
            c = self.col(_rgb(rng, 60, 200))
            d.rectangle([x, hz - bh, x + bw, hz], fill=c)
            for wy in range(hz - bh + 4, hz - 4, 8):
                for wx in range(x + 3, x + bw - 3, 7):
                    if rng.random() < 0.5:
                        lit = (230, 210, 120) if self.night and rng.random() < 0.5 else _shade(c, 0.6)
                        d.rectangle([wx, wy, wx + 2, wy + 3], fill=lit)
            x += bw + int(rng.integers(0, w // 10))
        # Ground, road trapezoid, lane marks.
        d.rectangle([0, hz, w, h], fill=self.col(_rgb(rng, 70, 120)))
        road = self.col((int(rng.integers(60, 110)),) * 3)
        cx = w * rng.uniform(0.35, 0.65)
        d.polygon([(cx - 4, hz), (cx + 4, hz), (w * 1.3, h), (-w * 0.3, h)], fill=road)
        for lane in (-0.5, 0.0, 0.5):
            for k in range(6):
                t0, t1 = (k + 0.2) / 6, (k + 0.6) / 6
                y0, y1 = hz + (h - hz) * t0**1.5, hz + (h - hz) * t1**1.5
                x0 = cx + lane * w * 1.6 * (y0 - hz) / (h - hz)
                x1 = cx + lane * w * 1.6 * (y1 - hz) / (h - hz)
                d.line([(x0, y0), (x1, y1)], fill=self.col((220, 220, 210)), width=max(1, int(3 * t1)))
        self.road_cx = cx
        # Poles: vertical clutter that looks like the poles of lights and signs.
        for _ in range(int(rng.integers(0, 4))):
            px = int(rng.integers(0, w))
            d.line([(px, int(hz * rng.uniform(0.2, 0.8))), (px, int(hz + (h - hz) * rng.uniform(0.1, 0.6)))],
                   fill=self.col((50, 50, 55)), width=1)

    # -------------------------------------------------------------- objects
    def scale_at(self, y_bottom: float) -> float:
        """Perspective: 0 at the horizon, 1 at the bottom edge."""
        return max(0.0, (y_bottom - self.horizon) / (self.h - self.horizon))

    def add_label(self, category: str, box, occluded: bool = False, extra: dict | None = None) -> None:
        x1, y1, x2, y2 = box
        cx1, cy1 = max(0.0, x1), max(0.0, y1)
        cx2, cy2 = min(self.w - 1.0, x2), min(self.h - 1.0, y2)
        if cx2 - cx1 < 2 or cy2 - cy1 < 2:
            return
        truncated = cx1 != x1 or cy1 != y1 or cx2 != x2 or cy2 != y2
        attributes = {"occluded": bool(occluded), "truncated": bool(truncated), "trafficLightColor": "NA"}
        if extra:
            attributes.update(extra)
        self.labels.append({
            "id": f"{len(self.labels):08x}",
            "category": category,
            "attributes": attributes,
            "box2d": {"x1": round(cx1, 3), "y1": round(cy1, 3), "x2": round(cx2, 3), "y2": round(cy2, 3)},
        })

    def ground_box(self, category: str, y_bottom: float, x_center: float):
        frac, (ar_lo, ar_hi) = _GROUND_SHAPES[category]
        s = self.scale_at(y_bottom)
        bh = max(4.0, self.h * frac * (0.06 + 0.94 * s) * self.rng.uniform(0.85, 1.15))
        bw = bh * self.rng.uniform(ar_lo, ar_hi)
        return (x_center - bw / 2, y_bottom - bh, x_center + bw / 2, y_bottom)

    def vehicle(self, category: str, box, color) -> None:
        d, (x1, y1, x2, y2) = self.draw, box
        bw, bh = x2 - x1, y2 - y1
        body = self.col(color)
        dark = self.col(_shade(color, 0.45))
        glass = self.col((70, 90, 110) if not self.night else (30, 35, 45))
        wheel = self.col((25, 25, 25))
        r = max(1.0, bh * 0.14)
        if category in ("car", "other vehicle"):
            d.rounded_rectangle([x1, y1 + bh * 0.35, x2, y2 - r * 0.6], radius=max(1, int(bh * 0.12)), fill=body)
            d.polygon([(x1 + bw * 0.18, y1 + bh * 0.36), (x1 + bw * 0.3, y1), (x2 - bw * 0.3, y1),
                       (x2 - bw * 0.15, y1 + bh * 0.36)], fill=body)
            d.polygon([(x1 + bw * 0.24, y1 + bh * 0.34), (x1 + bw * 0.33, y1 + bh * 0.08),
                       (x2 - bw * 0.33, y1 + bh * 0.08), (x2 - bw * 0.2, y1 + bh * 0.34)], fill=glass)
            for wx in (x1 + bw * 0.22, x2 - bw * 0.22):
                d.ellipse([wx - r, y2 - 2 * r, wx + r, y2], fill=wheel)
            if self.night:
                d.ellipse([x1 + 1, y1 + bh * 0.5, x1 + 1 + r, y1 + bh * 0.5 + r], fill=(255, 60, 50))
                d.ellipse([x2 - 1 - r, y1 + bh * 0.5, x2 - 1, y1 + bh * 0.5 + r], fill=(255, 60, 50))
        elif category in ("truck", "trailer"):
            cab = x1 + bw * 0.72
            d.rectangle([x1, y1, cab, y2 - r], fill=body)
            if category == "truck":
                d.rectangle([cab + 1, y1 + bh * 0.3, x2, y2 - r], fill=dark)
                d.rectangle([cab + bw * 0.05, y1 + bh * 0.36, x2 - bw * 0.03, y1 + bh * 0.55], fill=glass)
            for wx in (x1 + bw * 0.15, x1 + bw * 0.55, x2 - bw * 0.12):
                d.ellipse([wx - r, y2 - 2 * r, wx + r, y2], fill=wheel)
        elif category == "bus":
            d.rounded_rectangle([x1, y1, x2, y2 - r], radius=max(1, int(bh * 0.08)), fill=body)
            n = max(2, int(bw / max(4.0, bh * 0.35)))
            for k in range(n):
                wx0 = x1 + bw * (0.05 + 0.9 * k / n)
                d.rectangle([wx0, y1 + bh * 0.15, wx0 + bw * 0.9 / n * 0.7, y1 + bh * 0.45], fill=glass)
            for wx in (x1 + bw * 0.15, x2 - bw * 0.15):
                d.ellipse([wx - r, y2 - 2 * r, wx + r, y2], fill=wheel)
        elif category == "train":
            d.rectangle([x1, y1, x2, y2 - bh * 0.08], fill=body)
            d.rectangle([x1, y1 + bh * 0.55, x2, y1 + bh * 0.65], fill=dark)
            n = max(3, int(bw / max(4.0, bh * 0.5)))
            for k in range(n):
                wx0 = x1 + bw * (0.03 + 0.94 * k / n)
                d.rectangle([wx0, y1 + bh * 0.15, wx0 + bw * 0.94 / n * 0.6, y1 + bh * 0.42], fill=glass)
            d.rectangle([x1, y2 - bh * 0.08, x2, y2], fill=wheel)

    def person(self, box, color, riding: bool = False) -> None:
        d, (x1, y1, x2, y2) = self.draw, box
        bw, bh = x2 - x1, y2 - y1
        skin = self.col((205, 160, 130) if self.rng.random() < 0.6 else (120, 85, 60))
        cloth = self.col(color)
        legs = self.col(_shade(color, 0.5) if self.rng.random() < 0.5 else (40, 45, 80))
        hr = max(1.0, bh * 0.09)
        cx = (x1 + x2) / 2
        d.ellipse([cx - hr, y1, cx + hr, y1 + 2 * hr], fill=skin)
        torso_bottom = y1 + bh * (0.62 if riding else 0.55)
        d.rectangle([x1 + bw * 0.12, y1 + 2 * hr, x2 - bw * 0.12, torso_bottom], fill=cloth)
        lw = max(1, int(bw * 0.22))
        if riding:
            d.line([(cx, torso_bottom), (x2, y1 + bh * 0.8), (x2 - bw * 0.1, y2)], fill=legs, width=lw)
        else:
            stride = bw * self.rng.uniform(0.0, 0.35)
            d.line([(cx - lw / 2, torso_bottom), (cx - lw / 2 - stride, y2)], fill=legs, width=lw)
            d.line([(cx + lw / 2, torso_bottom), (cx + lw / 2 + stride, y2)], fill=legs, width=lw)

    def two_wheeler(self, category: str, box, color) -> None:
        d, (x1, y1, x2, y2) = self.draw, box
        bw, bh = x2 - x1, y2 - y1
        r = min(bw * 0.22, bh * 0.4)
        frame = self.col(color)
        tyre = self.col((20, 20, 20))
        lw = max(1, int(r * 0.25))
        for wx in (x1 + r, x2 - r):
            if category == "bicycle":
                d.ellipse([wx - r, y2 - 2 * r, wx + r, y2], outline=tyre, width=lw)
            else:
                d.ellipse([wx - r, y2 - 2 * r, wx + r, y2], fill=tyre)
        if category == "bicycle":
            d.line([(x1 + r, y2 - r), (x1 + bw * 0.45, y1 + bh * 0.2), (x2 - r, y2 - r)], fill=frame, width=lw)
            d.line([(x1 + bw * 0.45, y1 + bh * 0.2), (x2 - r * 1.2, y1)], fill=frame, width=lw)
        else:
            d.polygon([(x1 + r, y2 - r), (x1 + bw * 0.3, y1 + bh * 0.15), (x2 - r * 0.8, y1),
                       (x2 - r, y2 - r)], fill=frame)

    def traffic_light(self) -> None:
        rng, d = self.rng, self.draw
        s = rng.uniform(0.15, 1.0)
        bh = max(6.0, self.h * 0.16 * s)
        bw = bh * rng.uniform(0.32, 0.42)
        x = rng.uniform(0, self.w - bw)
        y = rng.uniform(self.horizon * 0.05, max(self.horizon * 0.06, self.horizon - bh * 0.3))
        d.line([(x + bw / 2, y + bh), (x + bw / 2, min(self.h, y + bh * 3))], fill=self.col((45, 45, 50)), width=1)
        d.rectangle([x, y, x + bw, y + bh], fill=(30, 30, 30) if not self.fog else (70, 70, 70))
        color_name = str(rng.choice(["red", "yellow", "green"]))
        lit = {"red": (255, 40, 30), "yellow": (255, 200, 0), "green": (40, 230, 90)}[color_name]
        r = bw * 0.32
        for k, name in enumerate(("red", "yellow", "green")):
            cy = y + bh * (k + 0.5) / 3
            fill = lit if name == color_name else (60, 60, 60)
            d.ellipse([x + bw / 2 - r, cy - r, x + bw / 2 + r, cy + r], fill=fill)
        self.add_label("traffic light", (x, y, x + bw, y + bh), extra={"trafficLightColor": color_name[0].upper()})

    def traffic_sign(self) -> None:
        rng, d = self.rng, self.draw
        s = rng.uniform(0.15, 1.0)
        size = max(5.0, self.h * 0.11 * s)
        aspect = rng.choice([1.0, 1.0, 1.0, 2.2])  # some rectangular direction signs
        bw, bh = size * aspect, size
        x = rng.uniform(0, self.w - bw)
        y = rng.uniform(self.horizon * 0.2, min(self.h - bh, self.horizon + (self.h - self.horizon) * 0.3))
        d.line([(x + bw / 2, y + bh), (x + bw / 2, min(self.h, y + bh * 2.5))], fill=self.col((90, 90, 95)), width=1)
        kind = rng.integers(0, 4) if aspect == 1.0 else 4
        face = self.col([(220, 30, 30), (30, 80, 200), (240, 200, 20), (240, 240, 240), (20, 120, 60)][int(kind)])
        border = self.col((250, 250, 250) if kind != 3 else (200, 20, 20))
        box = [x, y, x + bw, y + bh]
        if kind == 0 or kind == 1:
            d.ellipse(box, fill=face, outline=border, width=max(1, int(size * 0.12)))
        elif kind == 2:
            d.polygon([(x + bw / 2, y), (x + bw, y + bh), (x, y + bh)], fill=face, outline=border)
        else:
            d.rectangle(box, fill=face, outline=border, width=max(1, int(size * 0.08)))
        self.add_label("traffic sign", (x, y, x + bw, y + bh))

    def place_ground_objects(self, categories: list[str]) -> None:
        """Sample positions, then draw far to near so near objects occlude far ones."""
        rng = self.rng
        items = []
        for cat in categories:
            yb = self.horizon + (self.h - self.horizon) * (rng.uniform(0.08, 1.0) ** 0.8)
            if cat == "train":
                yb = self.horizon + (self.h - self.horizon) * rng.uniform(0.05, 0.3)
            spread = self.w * (0.25 + 0.9 * self.scale_at(yb))
            xc = self.road_cx + rng.uniform(-spread, spread)
            items.append((yb, xc, cat))
        items.sort(key=lambda t: t[0])
        drawn: list[tuple[float, float, float, float]] = []
        for yb, xc, cat in items:
            vehicle_color = _rgb(rng, 30, 230)
            if rng.random() < 0.25:  # low contrast: vehicle coloured like the road
                g = int(rng.integers(55, 115))
                vehicle_color = (g, g, g + int(rng.integers(-5, 6)))
            if cat == "rider":
                ride = "motorcycle" if rng.random() < 0.4 else "bicycle"
                vbox = self.ground_box(ride, yb, xc)
                vh = vbox[3] - vbox[1]
                rbox = (xc - vh * 0.3, vbox[3] - vh * 2.3, xc + vh * 0.3, vbox[3] - vh * 0.35)
                occl = self._occluded(rbox, drawn) or self._occluded(vbox, drawn)
                self.two_wheeler(ride, vbox, vehicle_color)
                self.person(rbox, _rgb(rng, 20, 240), riding=True)
                self.add_label(ride, vbox, occluded=occl)
                self.add_label("rider", rbox, occluded=True)
                drawn += [vbox, rbox]
                continue
            box = self.ground_box(cat, yb, xc)
            occl = self._occluded(box, drawn)
            if cat in ("pedestrian", "other person"):
                self.person(box, _rgb(rng, 20, 240))
            elif cat in ("bicycle", "motorcycle"):
                self.two_wheeler(cat, box, vehicle_color)
            else:
                self.vehicle(cat, box, vehicle_color)
            self.add_label(cat, box, occluded=occl)
            drawn.append(box)

    @staticmethod
    def _occluded(box, earlier) -> bool:
        # Later-drawn (nearer) objects occlude earlier ones; mark both as a cue for harder images.
        x1, y1, x2, y2 = box
        for a1, b1, a2, b2 in earlier:
            if min(x2, a2) > max(x1, a1) and min(y2, b2) > max(y1, b1):
                return True
        return False

    def finish(self, quality_noise: float) -> Image.Image:
        img = self.img
        if self.fog:
            fog = Image.new("RGB", img.size, (205, 205, 210))
            img = Image.blend(img, fog, float(self.rng.uniform(0.35, 0.6)))
        if self.rng.random() < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(radius=float(self.rng.uniform(0.4, 1.1))))
        arr = np.asarray(img, dtype=np.int16)
        noise = self.rng.normal(0.0, quality_noise, size=arr.shape[:2] + (1,))
        arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
        return Image.fromarray(arr)


def generate_scene(rng: np.random.Generator, *, width: int, height: int, max_objects: int):
    """One scene. Returns ``(PIL image, det_20 labels list, frame attributes)``."""
    scene = _Scene(rng, width, height)
    scene.background()
    names = list(CLASS_WEIGHTS)
    p = np.array([CLASS_WEIGHTS[n] for n in names])
    p = p / p.sum()
    # Busy and empty streets: the object count is what most separates easy from hard images.
    n_obj = int(min(max_objects, rng.geometric(1.0 / rng.uniform(2.0, 0.5 * max_objects + 1))))
    cats = list(rng.choice(names, size=n_obj, p=p))
    if rng.random() < 0.3:
        ig = list(IGNORED_WEIGHTS)
        q = np.array([IGNORED_WEIGHTS[n] for n in ig])
        cats.append(str(rng.choice(ig, p=q / q.sum())))
    ground = [c for c in cats if c not in ("traffic light", "traffic sign")]
    for c in cats:
        if c == "traffic light":
            scene.traffic_light()
        elif c == "traffic sign":
            scene.traffic_sign()
    scene.place_ground_objects([str(c) for c in ground])
    img = scene.finish(quality_noise=float(rng.uniform(2.0, 9.0)))
    attributes = {
        "weather": "foggy" if scene.fog else "clear",
        "scene": "city street",
        "timeofday": "night" if scene.night else "daytime",
    }
    return img, scene.labels, attributes


def _paths(root: Path, split: str) -> tuple[Path, Path]:
    return root / "images" / "100k" / split, root / "labels" / "det_20" / f"det_{split}.json"


def generate_dataset(root: str | Path, *, seed: int = 0, num_train: int = 600, num_val: int = 120, width: int = 320,
                     height: int = 192, max_objects: int = 14, jpeg_quality: int = 90, progress: bool = True) -> Path:
    """Write the dataset under ``root`` unless an identical one is already there (:func:`is_generated`).

    The keywords are the ``data.synthetic:`` section's fields (:class:`alod.config.SyntheticConfig`
    has the same defaults): scene ``i`` of a split depends only on ``(seed, split, i)``, the size
    (``width`` x ``height`` px) and ``max_objects``. The label files are written last (atomically),
    and the spec file after them, so an interrupted generation is detected and redone on the next call.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    root = Path(root)
    spec = dict(seed=seed, num_train=num_train, num_val=num_val, width=width, height=height,
                max_objects=max_objects, jpeg_quality=jpeg_quality)
    if is_generated(root, **spec):
        return root
    for split, n in (("train", num_train), ("val", num_val)):
        img_dir, label_path = _paths(root, split)
        img_dir.mkdir(parents=True, exist_ok=True)
        frames = []
        for i in tqdm(range(n), desc=f"generating {split} scenes", disable=not progress, unit="img"):
            rng = np.random.default_rng([seed, SPLIT_IDS[split], i])
            img, labels, attributes = generate_scene(rng, width=width, height=height, max_objects=max_objects)
            name = f"{split}_{i:05d}.jpg"
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=jpeg_quality)
            atomic_write_bytes(img_dir / name, buf.getvalue())
            frames.append({"name": name, "attributes": attributes, "timestamp": 10000, "labels": labels})
        atomic_write_json(label_path, frames, indent=None)
    atomic_write_json(_spec_path(root), {"generator_version": GENERATOR_VERSION, **spec})
    return root


def _spec_path(root: Path) -> Path:
    return root / "alod_synthetic.json"


def is_generated(root: str | Path, **spec) -> bool:
    """Whether ``root`` holds a complete dataset generated with ``spec`` (:func:`generate_dataset`'s
    keywords, all of them) by this generator version."""
    root = Path(root)
    wanted = {"generator_version": GENERATOR_VERSION, **spec}
    try:
        written = json.loads(_spec_path(root).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return written == wanted and all(_paths(root, s)[1].exists() for s in SPLIT_IDS)


def spec_summary(frames: list[dict]) -> dict[str, int]:
    """Box count per category over det_20 frames (for docs and tests)."""
    counts: dict[str, int] = {}
    for f in frames:
        for lab in f.get("labels") or []:
            counts[lab["category"]] = counts.get(lab["category"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


__all__ = ["generate_dataset", "generate_scene", "is_generated", "CLASS_WEIGHTS", "spec_summary"]
