"""The grid a room's video receivers see: each sender's latest picture scaled into its tile of a fixed
854x480 yuv420p canvas (never more than 480 lines, whatever comes in), labelled with its name."""

from __future__ import annotations

import math

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from media import font

CANVAS_W, CANVAS_H = 854, 480
BLACK_Y, GREY_UV = 16, 128


def grid(n: int, width: int = CANVAS_W, height: int = CANVAS_H) -> list[tuple[int, int, int, int]]:
    """Cells (x, y, w, h), even-aligned, for n tiles: as square as possible."""
    if n <= 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cw, ch = (width // cols) & ~1, (height // rows) & ~1
    cells = []
    for i in range(n):
        r, c = divmod(i, cols)
        in_row = min(cols, n - r * cols)
        x_off = ((width - in_row * cw) // 2) & ~1  # centre a short last row
        cells.append((x_off + c * cw, r * ch, cw, ch))
    return cells


def yuv_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U, V planes of a yuv420p frame as 2-D arrays (views, line padding cut off)."""
    out = []
    for i, plane in enumerate(frame.planes):
        h, w = (frame.height, frame.width) if i == 0 else (frame.height // 2, frame.width // 2)
        arr = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        out.append(arr[:h, :w])
    return out[0], out[1], out[2]


def fit(src_w: int, src_h: int, cell_w: int, cell_h: int) -> tuple[int, int]:
    """Size (even) of a src_w x src_h picture scaled to fit the cell, keeping its aspect ratio."""
    s = min(cell_w / max(src_w, 1), cell_h / max(src_h, 1))
    return max(2, int(src_w * s) & ~1), max(2, int(src_h * s) & ~1)


class Compositor:
    """Scales the latest frame of each video sender into its tile and draws labels (worker thread)."""

    def __init__(self) -> None:
        self.buf = np.empty((CANVAS_H * 3 // 2, CANVAS_W), dtype=np.uint8)
        self.y = self.buf[:CANVAS_H]
        self.u = self.buf[CANVAS_H : CANVAS_H * 5 // 4].reshape(CANVAS_H // 2, CANVAS_W // 2)
        self.v = self.buf[CANVAS_H * 5 // 4 :].reshape(CANVAS_H // 2, CANVAS_W // 2)
        self._tiles: dict[str, tuple[int, tuple[int, int, int, int], tuple[np.ndarray, ...]]] = {}
        self._layout: tuple[str, ...] = ()
        # one swscale context per tile, kept between frames (a fresh one per call costs ~1/3 more)
        self._scalers: dict[str, VideoReformatter] = {}

    def compose(self, sources: list[tuple[str, str, av.VideoFrame | None, int]]) -> np.ndarray:
        layout = tuple(pid for pid, _, _, _ in sources)
        redraw = layout != self._layout
        if redraw:
            self._layout = layout
            self.y.fill(BLACK_Y)
            self.u.fill(GREY_UV)
            self.v.fill(GREY_UV)
            self._tiles = {k: v for k, v in self._tiles.items() if k in layout}
            self._scalers = {k: v for k, v in self._scalers.items() if k in layout}
        for (pid, name, frame, seq), cell in zip(sources, grid(len(sources))):
            cached = self._tiles.get(pid)
            if not redraw and cached is not None and cached[0] == seq and cached[1] == cell:
                continue  # unchanged tile: already on the canvas
            x, y, cw, ch = cell
            # clear the cell, then paste the scaled frame centred in it
            self.y[y : y + ch, x : x + cw] = BLACK_Y
            self.u[y // 2 : (y + ch) // 2, x // 2 : (x + cw) // 2] = GREY_UV
            self.v[y // 2 : (y + ch) // 2, x // 2 : (x + cw) // 2] = GREY_UV
            planes: tuple[np.ndarray, ...] = ()
            if frame is not None:
                tw, th = fit(frame.width, frame.height, cw, ch)
                scaler = self._scalers.get(pid)
                if scaler is None:
                    scaler = self._scalers[pid] = VideoReformatter()
                ty, tu, tv = yuv_planes(
                    scaler.reformat(frame, width=tw, height=th, format="yuv420p", interpolation="FAST_BILINEAR")
                )
                ox, oy = x + ((cw - tw) // 2 & ~1), y + ((ch - th) // 2 & ~1)
                self.y[oy : oy + th, ox : ox + tw] = ty
                self.u[oy // 2 : (oy + th) // 2, ox // 2 : (ox + tw) // 2] = tu
                self.v[oy // 2 : (oy + th) // 2, ox // 2 : (ox + tw) // 2] = tv
                planes = (ty,)
            self._label(name, x, y, cw, ch)
            self._tiles[pid] = (seq, cell, planes)
        return self.buf

    def _label(self, name: str, x: int, y: int, cw: int, ch: int) -> None:
        scale = 2 if cw >= 400 else 1
        mask = font.render(name, scale, max(0, cw - 8 * scale))
        mh, mw = mask.shape
        pad = 2 * scale
        bh, bw = (mh + 2 * pad + 1) & ~1, (mw + 2 * pad + 1) & ~1
        by, bx = y + ch - bh, x
        if by < y or bw <= 0:
            return
        self.y[by : by + bh, bx : bx + bw] = BLACK_Y
        self.u[by // 2 : (by + bh) // 2, bx // 2 : (bx + bw) // 2] = GREY_UV
        self.v[by // 2 : (by + bh) // 2, bx // 2 : (bx + bw) // 2] = GREY_UV
        region = self.y[by + pad : by + pad + mh, bx + pad : bx + pad + mw]
        region[mask[: region.shape[0], : region.shape[1]]] = 235
