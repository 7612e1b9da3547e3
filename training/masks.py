"""Synthetic face masks driven by 68-point landmarks.

Two families, mixed at random so models don't learn one template:

* template masks: MaskTheFace's RGBA templates warped onto the face by a
  homography from their six anchor points, with colour/brightness jitter and
  texture blending; the view (front/left/right) is chosen from the head yaw.
* procedural masks (as in the SRT paper): polygons following the jaw, ellipses
  and trapezoids in random colours, patterns or textures, with shading and
  optional straps. These need no data files.

Either family's top edge lies on the nose; ``p_below_nose`` of the masks are worn
below it instead (top edge between the nostrils and the upper lip, nose bare), as
people often wear them. ``p_scarf`` of the occluders are a third kind: scarves,
neck gaiters and bandanas, cloth from the nose down past the chin and out past the
jaw, so that, unlike a mask, they hide the face's outline too.

``p_sunglasses`` of the faces also get sunglasses (dark lenses over both eyes, a
bridge and the temples), as people wear them with a mask outdoors: then only the
brows, the forehead and the face's outline are left to recognise.

Every call returns the masked image and the binary occlusion map; it is
deterministic for a given ``numpy.random.Generator`` state.
"""
from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ANCHOR_KEYS = ("mask_a", "mask_b", "mask_c", "mask_d", "mask_e", "mask_f")


@dataclass
class Template:
    name: str
    rgba: np.ndarray  # (H, W, 4) uint8, RGB order
    anchors: np.ndarray  # (6, 2) float32: a..f in template pixels
    view: float  # where the nose bridge sits between the jaw points (0.5 = frontal)


def load_templates(masks_root: str | Path) -> list[Template]:
    """Parse ``masks.cfg`` and its templates (sections without a template are skipped)."""
    root = Path(masks_root)
    cfg = configparser.ConfigParser(inline_comment_prefixes=(";",))
    cfg.read(root / "masks.cfg")
    out = []
    for sec in cfg.sections():
        if "template" not in cfg[sec]:
            continue
        path = root / Path(cfg[sec]["template"]).relative_to("masks")
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3 or img.shape[2] != 4:
            raise ValueError(f"mask template {path} is missing or has no alpha channel")
        pts = np.array([[float(v) for v in cfg[sec][k].split(",")] for k in ANCHOR_KEYS], np.float32)
        view = (pts[1, 0] - pts[0, 0]) / max(pts[2, 0] - pts[0, 0], 1e-6)
        out.append(Template(sec, cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA), pts, float(view)))
    return out


def load_textures(masks_root: str | Path) -> list[np.ndarray]:
    """Every texture image under ``textures/`` as RGB uint8."""
    out = []
    for p in sorted((Path(masks_root) / "textures").rglob("*")):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR) if p.suffix.lower() in (".png", ".jpg", ".jpeg") else None
        if img is not None:
            out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out


def _cross_jaw(lm: np.ndarray, through: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the line through ``through``, perpendicular to the face axis, meets the jaw (left, right)."""
    axis = lm[8] - lm[27]
    u = np.array([axis[1], -axis[0]]) / (np.linalg.norm(axis) + 1e-9)  # across the face
    hits = []
    for side in (range(0, 8), range(8, 16)):
        best = None
        for i in side:
            p, q = lm[i], lm[i + 1]
            d = q - p
            den = u[0] * d[1] - u[1] * d[0]
            if abs(den) < 1e-9:
                continue
            w = p - through
            s = -(u[0] * w[1] - u[1] * w[0]) / den  # position along the jaw segment
            if best is None and -0.05 <= s <= 1.05:
                best = p + s * d
        hits.append(best)
    left = hits[0] if hits[0] is not None else lm[2]
    right = hits[1] if hits[1] is not None else lm[14]
    return np.asarray(left, np.float32), np.asarray(right, np.float32)


def face_anchors(lm68: np.ndarray) -> np.ndarray:
    """The six mask anchor points a..f on a face (see masks/README): jaw at nose tip, nose bridge,
    jaw at lower lip, chin."""
    lm = np.asarray(lm68, np.float32)
    a, c = _cross_jaw(lm, lm[30])
    d, f = _cross_jaw(lm, lm[57])
    return np.stack([a, lm[28], c, d, lm[8], f]).astype(np.float32)


def _below_nose(lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A top edge point between the nostrils' base (33) and the top of the upper lip (51)."""
    return lm[33] + (lm[51] - lm[33]) * rng.uniform(0.0, 0.6)


def _blend(img: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip(img.astype(np.float32) * (1 - a) + rgb * a, 0, 255).astype(np.uint8)


class MaskSynth:
    """Random mask painter. ``masks_root`` adds MaskTheFace templates and textures."""

    # the keyword arguments a config or --mask-style may set
    SHARES = ("p_template", "p_below_nose", "p_scarf", "p_sunglasses")

    def __init__(self, masks_root: str | Path | None = None, p_template: float = 0.5, p_below_nose: float = 0.0,
                 p_scarf: float = 0.0, p_sunglasses: float = 0.0):
        self.templates = load_templates(masks_root) if masks_root else []
        self.textures = load_textures(masks_root) if masks_root else []
        if masks_root and p_template > 0 and not self.templates:  # not procedural-only in silence
            raise ValueError(f"no MaskTheFace templates in {masks_root} (its masks.cfg is missing or names none); "
                             "give the masks folder, or p_template=0 for procedural masks only")
        self.p_template = p_template if self.templates else 0.0
        self.p_below_nose = p_below_nose
        self.p_scarf = p_scarf
        self.p_sunglasses = p_sunglasses

    def __call__(self, img: np.ndarray, lm68: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Masked copy of an RGB uint8 image and its occlusion map (bool HxW)."""
        lm = np.asarray(lm68, np.float32)
        # no draw when 0: the masks of every seeded cache and benchmark stay what they were
        if self.p_scarf > 0 and rng.random() < self.p_scarf:
            rgb, alpha = self._scarf(img.shape[:2], lm, rng)
        else:
            low = self.p_below_nose > 0 and rng.random() < self.p_below_nose
            family = self._template if rng.random() < self.p_template else self._procedural
            rgb, alpha = family(img.shape[:2], lm, rng, low)
        # global brightness of the mask follows a random light level, as real photos do
        rgb = rgb * rng.uniform(0.7, 1.1)
        out, occ = _blend(img, rgb, alpha), alpha > 0.5
        if self.p_sunglasses > 0 and rng.random() < self.p_sunglasses:  # no draw when 0, as for scarves
            rgb, alpha = self._sunglasses(img.shape[:2], lm, rng)
            out, occ = _blend(out, rgb, alpha), occ | (alpha > 0.5)
        return out, occ

    # -- fills -------------------------------------------------------------------------------
    def _fill(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        h, w = shape
        kind = rng.choice(["solid", "stripes", "check", "noise", "texture"] if self.textures else
                          ["solid", "stripes", "check", "noise"], p=None)
        c1 = cv2.cvtColor(np.uint8([[[rng.integers(0, 180), rng.integers(0, 256), rng.integers(40, 256)]]]),
                          cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        if kind == "solid":
            return np.broadcast_to(c1, (h, w, 3)).copy()
        c2 = rng.uniform(0, 255, 3).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        period = rng.uniform(4, 20) * max(h, w) / 112
        theta = rng.uniform(0, np.pi)
        if kind == "stripes":
            sel = (np.cos(theta) * xx + np.sin(theta) * yy) // period % 2 == 0
        elif kind == "check":
            sel = ((xx // period) + (yy // period)) % 2 == 0
        elif kind == "noise":
            small = rng.random((max(2, int(h / period)), max(2, int(w / period))))
            sel = cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
        else:
            tex = self.textures[rng.integers(len(self.textures))].astype(np.float32)
            scale = rng.uniform(0.2, 1.0) * max(h, w) / max(tex.shape[:2])
            tex = cv2.resize(tex, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            reps = (h // tex.shape[0] + 1, w // tex.shape[1] + 1, 1)
            return np.tile(tex, reps)[:h, :w].copy()
        return np.where(sel[..., None], c1, c2)

    # -- template masks ----------------------------------------------------------------------
    def _template(self, shape, lm, rng, low=False):
        h, w = shape
        face = face_anchors(lm)
        if low:  # the top edge below the nose, the sides down with it; lower lip and chin stay
            top = _below_nose(lm, rng)
            face[0], face[2] = _cross_jaw(lm, top)
            face[1] = top
        view = float(np.dot(face[1] - face[0], face[2] - face[0]) / (np.sum((face[2] - face[0]) ** 2) + 1e-9))
        views = np.array([t.view for t in self.templates])
        near = np.flatnonzero(np.abs(views - views[np.argmin(np.abs(views - view))]) < 1e-3)
        tpl = self.templates[int(rng.choice(near))]
        width = np.linalg.norm(face[2] - face[0])
        face = face + rng.normal(0, 0.025 * width, face.shape).astype(np.float32)  # placement jitter
        face[1] += (lm[29] - lm[28]) * rng.uniform(-0.8, 1.0)  # top edge higher or lower on the nose
        H, _ = cv2.findHomography(tpl.anchors, face, 0)
        if H is None:
            return self._procedural(shape, lm, rng, low)
        rgba = cv2.warpPerspective(tpl.rgba, H, (w, h), flags=cv2.INTER_LINEAR, borderValue=0).astype(np.float32)
        rgb, alpha = rgba[..., :3], rgba[..., 3] / 255.0
        r = rng.random()
        if r < 0.35:  # recolour: keep the template's shading, change its colour
            lum = rgb.mean(-1, keepdims=True) / 255.0
            rgb = lum * self._fill((h, w), rng) * rng.uniform(0.8, 1.2)
        elif r < 0.55 and self.textures:
            tex = self._fill((h, w), rng)
            k = rng.uniform(0.3, 0.8)
            rgb = rgb * (1 - k) + tex * k * rgb.mean(-1, keepdims=True) / 255.0
        return rgb, alpha

    # -- procedural masks --------------------------------------------------------------------
    def _procedural(self, shape, lm, rng, low=False):
        h, w = shape
        a, b, c, d, e, f = face_anchors(lm)
        width = np.linalg.norm(c - a)
        down = (e - b) / (np.linalg.norm(e - b) + 1e-9)
        # from upper nose to just above the tip, or below the nose
        top = _below_nose(lm, rng) if low else lm[28] + (lm[30] - lm[28]) * rng.uniform(0.0, 0.7)
        grow = rng.uniform(0.0, 0.08) * width
        kind = rng.choice(["jaw", "ellipse", "trapezoid"])
        if kind == "jaw":
            jaw = lm[2:15].copy()
            centre = jaw.mean(0)
            jaw = jaw + (jaw - centre) / (np.linalg.norm(jaw - centre, axis=1, keepdims=True) + 1e-9) * grow
            jaw[6] += down * rng.uniform(0, 0.1) * width
            left, right = top + (a - lm[30]), top + (c - lm[30])
            poly = np.vstack([left, jaw, right, top - down * rng.uniform(0, 0.08) * width])
        elif kind == "ellipse":
            centre = (top + e) / 2 + down * rng.uniform(0, 0.05) * width
            axes = (width * rng.uniform(0.5, 0.62) + grow, np.linalg.norm(e - top) * rng.uniform(0.52, 0.62))
            ang = np.degrees(np.arctan2(-down[0], down[1]))
            poly = cv2.ellipse2Poly((int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), int(ang),
                                    0, 360, 10).astype(np.float32)
        else:
            k = rng.uniform(0.75, 1.0)
            left, right = top + (a - lm[30]) * k, top + (c - lm[30]) * k
            bot = e + down * rng.uniform(0.0, 0.12) * width
            half = (c - a) / 2 * rng.uniform(0.6, 1.0)
            poly = np.vstack([left, right, bot + half, bot - half])
        alpha = np.zeros((h, w), np.float32)
        cv2.fillPoly(alpha, [np.round(poly * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
        rgb = self._fill((h, w), rng)
        # soft shading across the face so the mask isn't a flat cut-out
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        g = 1 + rng.uniform(-0.15, 0.15) * (xx - lm[30][0]) / (width + 1e-6) \
            + rng.uniform(-0.15, 0.15) * (yy - lm[30][1]) / (width + 1e-6)
        rgb = rgb * g[..., None]
        if rng.random() < 0.5:  # straps to the ears
            col = tuple(float(v) for v in rng.uniform(0, 255, 3))
            t = max(1, int(round(width * rng.uniform(0.01, 0.03))))
            strap = np.zeros((h, w), np.float32)
            for p, q in ((a, lm[0]), (c, lm[16])):
                cv2.line(strap, tuple(int(v) for v in p), tuple(int(v) for v in q), 1.0, t, cv2.LINE_AA)
            rgb = np.where(strap[..., None] > alpha[..., None], np.array(col, np.float32), rgb)
            alpha = np.maximum(alpha, strap)
        return rgb, alpha

    # -- scarves, neck gaiters, bandanas -----------------------------------------------------
    def _scarf(self, shape, lm, rng):
        """Cloth over the nose, past the jaw and below the chin: hides the outline LNet places hidden points from."""
        h, w = shape
        a, b, c, d, e, f = face_anchors(lm)
        width = np.linalg.norm(c - a)
        down = (e - b) / (np.linalg.norm(e - b) + 1e-9)
        across = np.array([-down[1], down[0]], np.float32)
        across = across if np.dot(across, c - a) > 0 else -across
        top = lm[28] + (lm[30] - lm[28]) * rng.uniform(0.0, 0.9)  # resting on the nose
        drop = np.linalg.norm(e - top)  # nose to chin
        # the top edge falls from the nose to the sides, which reach past the face's outline
        sides = [top + s * across * width * rng.uniform(0.6, 0.95) + down * width * rng.uniform(0.05, 0.3)
                 for s in (-1, 1)]
        lift = top - down * width * rng.uniform(0.0, 0.05)
        t = np.linspace(0, 1, 12)[:, None]
        edge = (1 - t) ** 2 * sides[0] + 2 * t * (1 - t) * lift + t ** 2 * sides[1]  # a quadratic Bezier curve
        if rng.random() < 0.5:  # a gaiter or scarf: a band down to the neck and below
            bottom = [s + down * drop * rng.uniform(1.5, 2.5) + across * k * width * rng.uniform(-0.05, 0.3)
                      for s, k in zip(sides, (-1, 1))]
            poly = np.vstack([edge, bottom[1], bottom[0]])
        else:  # a bandana: a triangle with its point below the chin
            tip = e + down * drop * rng.uniform(0.4, 1.2) + across * rng.normal(0, 0.1) * width
            poly = np.vstack([edge, tip])
        alpha = np.zeros((h, w), np.float32)
        cv2.fillPoly(alpha, [np.round(poly * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
        # knitted or folded cloth: soft bands across it, and a shading gradient
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        along = ((xx - top[0]) * down[0] + (yy - top[1]) * down[1]) / (width + 1e-6)
        g = 1 + rng.uniform(0, 0.2) * np.sin(2 * np.pi * along / rng.uniform(0.1, 0.35) + rng.uniform(0, 2 * np.pi)) \
            + rng.uniform(-0.15, 0.15) * ((xx - top[0]) * across[0] + (yy - top[1]) * across[1]) / (width + 1e-6)
        return self._fill((h, w), rng) * g[..., None], alpha

    def _sunglasses(self, shape, lm, rng):
        """Two lenses over the eyes (ellipses or rounded rectangles, tinted, mostly opaque), a bridge and temples."""
        h, w = shape
        eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
        d = float(np.linalg.norm(eyes[1] - eyes[0]))
        across = (eyes[1] - eyes[0]) / (d + 1e-9)
        down = np.array([-across[1], across[0]], np.float32)
        angle = float(np.degrees(np.arctan2(across[1], across[0])))
        half = np.array([rng.uniform(0.36, 0.48), rng.uniform(0.24, 0.36)]) * d  # lens half width, half height
        centres = eyes + down * d * rng.uniform(-0.02, 0.1)
        lens = np.zeros((h, w), np.float32)
        round_lens = rng.random() < 0.5
        for c in centres:
            if round_lens:
                centre, axes = (tuple((v * 16).round().astype(int).tolist()) for v in (c, half))  # 4 fraction bits
                cv2.ellipse(lens, centre, axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
            else:  # a rectangle with rounded corners, drawn as a thick-outlined smaller one
                r = 0.35 * half[1]
                corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (half - r)
                poly = c + corners[:, :1] * across + corners[:, 1:] * down
                cv2.fillPoly(lens, [(poly * 16).round().astype(np.int32)], 1.0, cv2.LINE_AA, 4)
                cv2.polylines(lens, [(poly * 16).round().astype(np.int32)], True, 1.0, int(2 * r), cv2.LINE_AA, 4)
        frame = np.zeros((h, w), np.float32)
        t = max(1, int(round(d * rng.uniform(0.03, 0.07))))
        inner = [centres[0] + across * half[0], centres[1] - across * half[0]]
        cv2.line(frame, tuple(int(v) for v in inner[0].round()), tuple(int(v) for v in inner[1].round()), 1.0, t,
                 cv2.LINE_AA)
        for c, side, jaw in ((centres[0], -1, lm[0]), (centres[1], 1, lm[16])):  # temples to the ears
            start = c + side * across * half[0]
            cv2.line(frame, tuple(int(v) for v in start.round()), tuple(int(v) for v in jaw.round()), 1.0, t,
                     cv2.LINE_AA)
        tint = rng.uniform(0, 70, 3) if rng.random() < 0.7 else rng.uniform(0, 160, 3)  # mostly dark, some coloured
        frame_rgb = rng.uniform(0, 255, 3) if rng.random() < 0.3 else np.full(3, rng.uniform(0, 60))
        opacity = rng.uniform(0.8, 1.0)
        # a highlight across each lens, as sky reflected in it
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        offset = (xx - eyes[0][0]) * down[0] + (yy - eyes[0][1]) * down[1] + rng.uniform(-0.3, 0.1) * d
        glare = np.clip(1 - np.abs(offset) / (0.15 * d), 0, 1) * rng.uniform(0, 60)
        rgb = np.where((frame > lens)[..., None], frame_rgb, tint + glare[..., None])
        alpha = np.maximum(lens * opacity, frame)
        return rgb.astype(np.float32), alpha


def mask_image(img: np.ndarray, lm68: np.ndarray, synth: MaskSynth, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic masked copy (same seed, same mask)."""
    return synth(img, lm68, np.random.default_rng(seed))
