"""Deterministic PIL renderer of a ProcPEDES pedestrian.

The figure is drawn at ``supersample`` times the target size in person units (``u`` = person height in pixels) and
downsampled with LANCZOS, so the bold shapes stay clean at 64x32. What a view hides is not drawn (see
:func:`~.attributes.visible_attributes`; the renderer draws the visible attributes only, the same model the
captions use).

Two domains: ``"street"`` (train/test: city backgrounds, even light) and ``"shifted"`` (test_3c: park / night /
indoor backgrounds, a smaller person, colour cast, contrast and brightness changes, blur and sensor noise).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .attributes import HAIR_PALETTE, PALETTE, SKIN_TONES, visible_attributes

Color = tuple[int, int, int]


def _shade(c: Color, f: float) -> Color:
    return tuple(int(max(0, min(255, round(v * f)))) for v in c)


def _detail(c: Color) -> Color:
    """A contrasting tone for seams, zips and buttons (lighter on dark colours)."""
    return _shade(c, 0.6) if sum(c) > 200 else tuple(min(255, v + 70) for v in c)


def _mute(c: Color, amount: float, rng: np.random.Generator) -> Color:
    gray = 110 + 60 * rng.random()
    return tuple(int(round(v * (1 - amount) + gray * amount)) for v in c)


class _Pen:
    """Draws in person units: x relative to the body axis, y from the top of the head, both times ``u``."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, u: float):
        self.d, self.cx, self.top, self.u = draw, cx, top, u

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + x * self.u, self.top + y * self.u)

    def poly(self, pts, fill) -> None:
        self.d.polygon([self.p(x, y) for x, y in pts], fill=fill)

    def ellipse(self, x0, y0, x1, y1, fill, outline=None, width=1) -> None:
        a, b = self.p(min(x0, x1), min(y0, y1)), self.p(max(x0, x1), max(y0, y1))
        self.d.ellipse([a, b], fill=fill, outline=outline, width=max(1, int(width * self.u)) if outline else 1)

    def circle(self, x, y, r, fill, outline=None, width=0.0) -> None:
        self.ellipse(x - r, y - r, x + r, y + r, fill, outline, width)

    def limb(self, x0, y0, x1, y1, w, fill) -> None:
        """A thick segment with round ends."""
        self.d.line([self.p(x0, y0), self.p(x1, y1)], fill=fill, width=max(1, int(round(w * self.u))))
        self.circle(x0, y0, w / 2, fill)
        self.circle(x1, y1, w / 2, fill)

    def rect(self, x0, y0, x1, y1, fill, radius=0.0) -> None:
        a, b = self.p(min(x0, x1), min(y0, y1)), self.p(max(x0, x1), max(y0, y1))
        self.d.rounded_rectangle([a, b], radius=radius * self.u, fill=fill)

    def chord(self, x, y, r, start, end, fill) -> None:
        self.d.chord([self.p(x - r, y - r), self.p(x + r, y + r)], start, end, fill=fill)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


# --------------------------------------------------------------------------------------------------- backgrounds
def _street(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> float:
    horizon = h * (0.58 + 0.14 * rng.random())
    sky = _mute(PALETTE[list(PALETTE)[int(rng.integers(len(PALETTE)))]], 0.8, rng)
    draw.rectangle([0, 0, w, horizon], fill=sky)
    x = -rng.random() * w * 0.3
    while x < w:
        bw = w * (0.25 + 0.35 * rng.random())
        top = horizon * (0.05 + 0.5 * rng.random())
        col = _mute(PALETTE[list(PALETTE)[int(rng.integers(len(PALETTE)))]], 0.65, rng)
        draw.rectangle([x, top, x + bw, horizon], fill=col)
        win = _shade(col, 0.7 if rng.random() < 0.5 else 1.25)
        step = max(4.0, w * 0.12)
        # a window grid as rows of window colour cut by columns of wall colour (rows + cols draws, not rows x cols)
        x0, x1 = x + step * 0.4, x + bw - step * 0.4
        if x1 > x0 + step * 0.4:
            for wy in np.arange(top + step * 0.5, horizon - step * 0.6, step):
                draw.rectangle([x0, wy, x1, wy + step * 0.5], fill=win)
            for wx in np.arange(x0 + step * 0.45, x1, step):
                draw.rectangle([wx, top, wx + step * 0.55, horizon], fill=col)
        x += bw
    ground = _mute((150, 140, 130), 0.3, rng)
    draw.rectangle([0, horizon, w, h], fill=ground)
    line = _shade(ground, 0.85)
    for k in range(1, 4):
        y = horizon + (h - horizon) * (k / 4) ** 1.5
        draw.line([0, y, w, y], fill=line, width=max(1, h // 128))
    return horizon


def _shifted(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> float:
    kind = ("park", "night", "indoor")[int(rng.integers(3))]
    horizon = h * (0.5 + 0.2 * rng.random())
    if kind == "park":
        draw.rectangle([0, 0, w, horizon], fill=(150 + int(40 * rng.random()), 190, 230))
        for _ in range(int(rng.integers(2, 5))):
            tx, tr = rng.random() * w, w * (0.12 + 0.12 * rng.random())
            draw.rectangle([tx - tr * 0.15, horizon - tr * 1.6, tx + tr * 0.15, horizon], fill=(90, 62, 40))
            draw.ellipse([tx - tr, horizon - tr * 2.8, tx + tr, horizon - tr * 1.1], fill=(60, 110 + int(40 * rng.random()), 60))
        draw.rectangle([0, horizon, w, h], fill=(96, 140, 70))
    elif kind == "night":
        draw.rectangle([0, 0, w, horizon], fill=(34, 40, 76))
        for _ in range(int(rng.integers(2, 5))):
            lx = rng.random() * w
            draw.line([lx, horizon, lx, horizon * 0.3], fill=(70, 70, 80), width=max(1, w // 40))
            r = w * 0.05
            draw.ellipse([lx - r, horizon * 0.3 - r, lx + r, horizon * 0.3 + r], fill=(250, 230, 150))
        draw.rectangle([0, horizon, w, h], fill=(52, 52, 60))
    else:
        wall = (200 + int(30 * rng.random()), 180, 150)
        draw.rectangle([0, 0, w, horizon], fill=wall)
        dx = rng.random() * w
        draw.rectangle([dx, horizon * 0.25, dx + w * 0.3, horizon], fill=(130, 96, 70))
        tile = max(4, w // 8)
        for ty in range(int(horizon), h, tile):
            for tx in range(0, w, tile):
                dark = ((tx // tile) + (ty // tile)) % 2 == 0
                draw.rectangle([tx, ty, tx + tile, ty + tile], fill=(170, 160, 150) if dark else (205, 198, 188))
    return horizon


# --------------------------------------------------------------------------------------------------- the person
def _draw_person(pen: _Pen, a: dict[str, Any], view: str, rng: np.random.Generator) -> None:
    skin = SKIN_TONES[a["skin_tone"]]
    hair = HAIR_PALETTE[a["hair_color"]]
    upper = PALETTE[a["upper_color"]]
    lower = PALETTE[a["lower_color"]]
    shoes = PALETTE[a["shoe_color"]]
    woman = a["gender"] == "woman"
    side_view = view in ("left", "right")
    facing = -1.0 if view == "left" else 1.0  # side views: the person walks toward -x (left) or +x (right)

    hr, hy = 0.062, 0.075  # head radius and centre
    sh = 0.105 if woman else 0.128  # half shoulder width
    waist = 0.082 if woman else 0.1
    hip = 0.112 if woman else 0.102
    y_sh, y_hip, y_ankle = 0.165, 0.47, 0.945
    torso_bottom = 0.6 if a["upper_type"] == "coat" else y_hip
    stride = 0.3 + 0.7 * rng.random()
    swing = (rng.random() - 0.5) * 2

    def image_x(person_side: str) -> float:
        """Sign of the image x on which the person's left/right side appears (front/back views)."""
        s = 1.0 if person_side == "left" else -1.0
        return s if view == "front" else -s

    # ---- items that sit behind the body
    if side_view and a["bag"] == "backpack":
        bx = -facing * 0.07
        pen.rect(bx - facing * 0.1, 0.19, bx + facing * 0.01, 0.42, PALETTE[a["bag_color"]], radius=0.025)
    if side_view:
        if a["upper_type"] == "hoodie":
            pen.circle(-facing * 0.045, 0.15, 0.05, _shade(upper, 0.8))
        if a["hair_length"] in ("medium", "long"):
            end = 0.2 if a["hair_length"] == "medium" else 0.31
            pen.rect(-facing * hr * 1.05 - 0.035, hy, -facing * hr * 0.1, end, hair, radius=0.02)
    elif view == "front" and a["hair_length"] in ("medium", "long"):
        end = 0.2 if a["hair_length"] == "medium" else 0.31
        pen.rect(-hr * 1.25, hy - 0.01, hr * 1.25, end, hair, radius=0.03)

    # ---- legs and lower garment
    skirt = a["lower_type"] == "skirt"
    short = a["lower_length"] == "short"
    leg_w = 0.072
    if side_view:
        ang = math.radians((3 + 4 * stride) if skirt and not short else (8 + 14 * stride))
        length = y_ankle - y_hip
        legs = [(math.sin(ang) * length * facing, math.cos(ang) * length),
                (-math.sin(ang) * length * facing, math.cos(ang) * length)]
        hips = [(0.0, y_hip), (0.0, y_hip)]
    else:
        spread = 0.012 + 0.03 * stride
        legs = [(-0.05 - spread, y_ankle - y_hip), (0.05 + spread, y_ankle - y_hip)]
        hips = [(-0.05, y_hip), (0.05, y_hip)]
    for (hx, hy0), (dx, dy) in zip(hips, legs):
        ax, ay = hx + dx if not side_view else dx, hy0 + dy
        pen.limb(hx, hy0, ax, ay, leg_w, skin)
        if not skirt:
            t = 0.38 if short else 1.0
            pen.limb(hx, hy0, _lerp(hx, ax, t), _lerp(hy0, ay, t), leg_w * (1.25 if short else 1.05), lower)
        fx = facing * 0.035 if side_view else (0.0)
        pen.ellipse(ax - 0.045 + fx, ay - 0.015, ax + 0.045 + fx, ay + 0.04, shoes)
    if not skirt:
        pen.poly([(-hip, y_hip - 0.04), (hip, y_hip - 0.04), (hip * 0.9, y_hip + 0.05), (-hip * 0.9, y_hip + 0.05)]
                 if not side_view else [(-0.075, y_hip - 0.04), (0.075, y_hip - 0.04), (0.07, y_hip + 0.05),
                                        (-0.07, y_hip + 0.05)], lower)
    else:
        hem = 0.63 if short else 0.9
        top_w = hip if not side_view else 0.08
        flare = (1.5 if short else 1.7) * top_w
        pen.poly([(-top_w, y_hip - 0.04), (top_w, y_hip - 0.04), (flare, hem), (-flare, hem)], lower)

    # ---- torso
    if side_view:
        tw, bw = 0.075, 0.07 if torso_bottom == y_hip else 0.085
    else:
        tw, bw = sh, (waist if torso_bottom == y_hip else hip * 1.1)
    edges = lambda y: _lerp(tw, bw, (y - y_sh) / (torso_bottom - y_sh))  # noqa: E731
    pen.poly([(-tw, y_sh), (tw, y_sh), (bw, torso_bottom), (-bw, torso_bottom)], upper)
    if not side_view:
        pen.circle(-tw + 0.025, y_sh + 0.02, 0.03, upper)
        pen.circle(tw - 0.025, y_sh + 0.02, 0.03, upper)
    detail = _detail(upper)
    if a["upper_pattern"] == "stripes":
        stripe = PALETTE[a["upper_pattern_color"]]
        y = y_sh + 0.03
        while y + 0.026 < torso_bottom - 0.01:
            y1 = y + 0.026
            pen.poly([(-edges(y), y), (edges(y), y), (edges(y1), y1), (-edges(y1), y1)], stripe)
            y += 0.058
    kind = a["upper_type"]
    if kind == "sweater":
        pen.poly([(-edges(torso_bottom - 0.03), torso_bottom - 0.03), (edges(torso_bottom - 0.03), torso_bottom - 0.03),
                  (bw, torso_bottom), (-bw, torso_bottom)], detail)
    if not side_view:
        if view == "front" and kind in ("jacket", "coat", "shirt", "hoodie"):
            pen.limb(0, y_sh + 0.02, 0, torso_bottom - 0.01, 0.012, detail)
        if view == "front" and kind == "coat":
            for yy in (0.24, 0.32, 0.40, 0.48):
                pen.circle(-0.03, yy, 0.011, detail)
                pen.circle(0.03, yy, 0.011, detail)
        if view == "front" and kind in ("shirt", "jacket", "coat"):
            pen.poly([(-0.045, y_sh - 0.005), (0.0, y_sh + 0.035), (-0.01, y_sh + 0.05), (-0.055, y_sh + 0.02)], detail)
            pen.poly([(0.045, y_sh - 0.005), (0.0, y_sh + 0.035), (0.01, y_sh + 0.05), (0.055, y_sh + 0.02)], detail)
        if kind == "hoodie":
            if view == "front":
                pen.limb(-0.04, y_sh, -0.03, y_sh + 0.09, 0.01, detail)
                pen.limb(0.04, y_sh, 0.03, y_sh + 0.09, 0.01, detail)
            else:
                pen.ellipse(-0.075, y_sh - 0.02, 0.075, y_sh + 0.09, _shade(upper, 0.75))
    if a["upper_pattern"] == "logo":  # only ever visible from the front
        lc = PALETTE[a["upper_pattern_color"]]
        pen.poly([(0.0, 0.215), (0.045, 0.26), (0.0, 0.305), (-0.045, 0.26)], lc)
        pen.circle(0.0, 0.26, 0.026, lc)

    # ---- backpack (back view) and the shoulder-bag strap go over the torso
    if view == "back" and a["bag"] == "backpack":
        bag = PALETTE[a["bag_color"]]
        pen.rect(-waist * 0.85, 0.2, waist * 0.85, 0.42, bag, radius=0.03)
        pen.rect(-waist * 0.6, 0.33, waist * 0.6, 0.41, _detail(bag), radius=0.015)
    if a["bag"] == "shoulder bag" and not side_view:
        s = image_x(a["bag_side"])
        pen.limb(-s * tw * 0.8, y_sh + 0.01, s * hip * 0.9, 0.43, 0.018, _shade(PALETTE[a["bag_color"]], 0.8))
    if view == "front" and a["bag"] == "backpack":
        pass  # hidden (visibility model): not even the straps are drawn

    # ---- arms, hands and what they hold
    sleeve_end = 0.42 if a["upper_sleeve"] == "short" else 0.93
    arm_w = 0.055
    arms = []
    if side_view:
        ang = math.radians(swing * 22)
        arms.append((view, 0.0, y_sh + 0.02, math.sin(ang) * 0.3, y_sh + 0.02 + math.cos(ang) * 0.3))
    else:
        for person_side in ("left", "right"):
            s = image_x(person_side)
            sx = s * (tw - 0.02)
            arms.append((person_side, sx, y_sh + 0.02, s * (tw + 0.03 + 0.015 * swing), y_sh + 0.32))
    for person_side, x0, y0, x1, y1 in arms:
        pen.limb(x0, y0, x1, y1, arm_w, skin)
        pen.limb(x0, y0, _lerp(x0, x1, sleeve_end), _lerp(y0, y1, sleeve_end), arm_w * 1.12, upper)
        if kind == "sweater" and sleeve_end > 0.9:
            pen.circle(_lerp(x0, x1, 0.9), _lerp(y0, y1, 0.9), arm_w * 0.55, detail)
        pen.circle(x1, y1, 0.032, skin)
        hand_x, hand_y = x1, y1
        if a["bag"] == "handbag" and a["bag_side"] == person_side:
            bag = PALETTE[a["bag_color"]]
            pen.limb(hand_x - 0.02, hand_y, hand_x - 0.025, hand_y + 0.03, 0.01, _shade(bag, 0.7))
            pen.limb(hand_x + 0.02, hand_y, hand_x + 0.025, hand_y + 0.03, 0.01, _shade(bag, 0.7))
            pen.rect(hand_x - 0.06, hand_y + 0.03, hand_x + 0.06, hand_y + 0.12, bag, radius=0.015)
        if a["bag"] == "shoulder bag" and a["bag_side"] == person_side:
            bag = PALETTE[a["bag_color"]]
            bx = hand_x * 0.7 if not side_view else -facing * 0.02
            if side_view:
                pen.limb(0.0, y_sh + 0.01, bx, 0.42, 0.018, _shade(bag, 0.8))
            pen.rect(bx - 0.055, 0.41, bx + 0.055, 0.51, bag, radius=0.015)
        if a["carried"] != "none" and a["carried"] is not None and a["carried_side"] == person_side:
            item = PALETTE[a["carried_color"]]
            if a["carried"] == "umbrella":
                tip_x = hand_x + (0.05 if hand_x >= 0 else -0.05)
                pen.limb(hand_x, hand_y - 0.04, hand_x, hand_y, 0.014, (40, 40, 40))
                pen.poly([(hand_x - 0.03, hand_y + 0.03), (hand_x + 0.03, hand_y + 0.03), (tip_x, 0.985)], item)
            else:
                pen.rect(hand_x - 0.022, hand_y - 0.03, hand_x + 0.022, hand_y + 0.07, item, radius=0.008)
                pen.rect(hand_x - 0.014, hand_y - 0.05, hand_x + 0.014, hand_y - 0.03, (235, 235, 235))

    # ---- neck and head
    pen.limb(0.0, hy + hr * 0.6, 0.0, y_sh + 0.01, 0.05, skin)
    if view == "back":
        pen.circle(0.0, hy, hr, hair)
        if a["hair_length"] in ("medium", "long"):
            end = 0.2 if a["hair_length"] == "medium" else 0.31
            pen.rect(-hr * 1.1, hy, hr * 1.1, end, hair, radius=0.03)
    else:
        pen.circle(0.0, hy, hr, skin)
        if side_view:
            pen.circle(facing * hr * 0.95, hy + 0.01, 0.012, skin)  # nose
            # hair covers the top and the back half of the head (PIL angles: clockwise from +x)
            span = (110, 300) if facing > 0 else (240, 430)
            pen.d.pieslice([pen.p(-hr * 1.04, hy - hr * 1.04), pen.p(hr * 1.04, hy + hr * 1.04)], *span, fill=hair)
            pen.chord(0.0, hy, hr * 1.04, 190, 350, hair)
            pen.circle(facing * hr * 0.45, hy + 0.002, 0.011, (30, 30, 30))
        else:
            pen.chord(0.0, hy, hr * 1.06, 180, 360, hair)
            pen.circle(-hr * 0.42, hy + 0.012, 0.01, (30, 30, 30))
            pen.circle(hr * 0.42, hy + 0.012, 0.01, (30, 30, 30))
    if a["glasses"] not in (None, "none"):
        dark = (15, 15, 15)
        fill = dark if a["glasses"] == "sunglasses" else None
        if side_view:
            gx = facing * hr * 0.55
            pen.circle(gx, hy + 0.012, 0.024, fill, dark, 0.009)
            pen.limb(gx - facing * 0.02, hy + 0.008, -facing * hr * 0.3, hy + 0.004, 0.008, dark)
        else:
            for s in (-1, 1):
                pen.circle(s * hr * 0.42, hy + 0.012, 0.024, fill, dark, 0.009)
            pen.limb(-0.012, hy + 0.01, 0.012, hy + 0.01, 0.008, dark)

    # ---- headwear
    hw = a["headwear"]
    if hw not in (None, "none"):
        c = PALETTE[a["headwear_color"]]
        if hw == "cap":
            pen.chord(0.0, hy - 0.004, hr * 1.1, 180, 360, c)
            if view == "front":
                pen.ellipse(-hr * 1.15, hy - hr * 0.22, hr * 1.15, hy + hr * 0.12, _shade(c, 0.8))
            elif side_view:
                pen.ellipse(facing * hr * 0.2, hy - hr * 0.25, facing * hr * 1.9, hy + hr * 0.05, _shade(c, 0.8))
        elif hw == "hat":
            pen.rect(-hr * 0.9, hy - hr * 1.65, hr * 0.9, hy - hr * 0.35, c, radius=0.02)
            pen.ellipse(-hr * 1.75, hy - hr * 0.62, hr * 1.75, hy - hr * 0.18, c)
            pen.rect(-hr * 0.9, hy - hr * 0.7, hr * 0.9, hy - hr * 0.5, _detail(c))
        else:  # beanie
            pen.chord(0.0, hy - 0.01, hr * 1.12, 165, 375, c)
            pen.rect(-hr * 1.1, hy - hr * 0.3, hr * 1.1, hy - hr * 0.02, _detail(c), radius=0.01)


def render_person(
    attributes: dict[str, Any],
    view: str,
    rng: np.random.Generator,
    size: tuple[int, int] = (128, 64),
    domain: str = "street",
) -> Image.Image:
    """Render one image of an identity.

    Args:
        attributes: the identity (see ``attributes.ATTRIBUTE_KEYS``).
        view: ``"front"``, ``"back"``, ``"left"`` or ``"right"``.
        rng: the image's own generator (pose, framing, background and lighting are drawn from it).
        size: ``(height, width)`` of the output.
        domain: ``"street"`` (train/test) or ``"shifted"`` (test_3c).

    Returns:
        An RGB ``PIL.Image`` of ``size``.
    """
    h, w = size
    ss = max(2, math.ceil(160 / h))  # enough supersampling for clean edges, cheap at small sizes
    H, W = h * ss, w * ss
    canvas = Image.new("RGB", (W, H))
    draw = ImageDraw.Draw(canvas)
    shifted = domain == "shifted"
    (_shifted if shifted else _street)(draw, W, H, rng)

    visible = visible_attributes(attributes, view)
    scale = (0.55 + 0.22 * rng.random()) if shifted else (0.8 + 0.14 * rng.random())
    u = H * scale
    feet = H * (0.985 - (0.985 - scale - 0.01) * rng.random() * (0.8 if shifted else 0.3))
    top = feet - u
    cx = W / 2 + (rng.random() - 0.5) * W * (0.35 if shifted else 0.14)
    # ground shadow
    draw.ellipse([cx - 0.16 * u, feet - 0.035 * u, cx + 0.16 * u, feet + 0.015 * u], fill=(60, 60, 60))
    _draw_person(_Pen(draw, cx, top, u), visible, view, rng)

    img = canvas.reduce(ss)  # box-filter downsampling: anti-aliased and fast
    arr = np.asarray(img, dtype=np.float32)
    if shifted:
        cast = 1.0 + (rng.random(3) - 0.5) * 0.3
        bright = 0.75 + 0.45 * rng.random()
        contrast = 0.7 + 0.35 * rng.random()
        arr = ((arr - 128.0) * contrast + 128.0) * bright * cast
        arr = arr + rng.normal(0.0, 3.0 + 5.0 * rng.random(), arr.shape)
    else:
        arr = arr * (0.92 + 0.16 * rng.random())
    img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    if shifted:
        img = img.filter(ImageFilter.GaussianBlur(radius=(0.3 + 0.8 * rng.random()) * h / 128))
    return img
