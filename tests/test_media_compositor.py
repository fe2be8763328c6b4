"""media.compositor: the grid's cells and the 480-line canvas. Real libswscale."""

from __future__ import annotations

import av
import numpy as np
import pytest

from media.compositor import CANVAS_H, CANVAS_W, Compositor, grid

pytestmark = pytest.mark.media


def test_grid_cells_fit_the_480_line_canvas() -> None:
    for n in range(1, 19):
        cells = grid(n)
        assert len(cells) == n
        for x, y, w, h in cells:
            assert x % 2 == y % 2 == w % 2 == h % 2 == 0
            assert 0 <= x and x + w <= CANVAS_W and 0 <= y and y + h <= CANVAS_H


def test_compositor_scales_1080p_into_its_tile() -> None:
    big = av.VideoFrame.from_ndarray(np.full((1080 * 3 // 2, 1920), 200, dtype=np.uint8), format="yuv420p")
    compositor = Compositor()
    canvas = compositor.compose([("p1", "Big", big, 1), ("p2", "Other", None, 0)])
    assert canvas.shape == (CANVAS_H * 3 // 2, CANVAS_W)
    x, y, w, h = grid(2)[0]
    painted = np.argwhere(canvas[y : y + h, x : x + w] == 200)
    rows, cols = np.ptp(painted[:, 0]) + 1, np.ptp(painted[:, 1]) + 1
    assert cols == w and abs(rows - w * 9 / 16) <= 4  # the whole width of its tile, 16:9 kept ...
    x2, y2, w2, h2 = grid(2)[1]
    assert (canvas[y2 : y2 + h2, x2 : x2 + w2] == 200).sum() == 0  # ... and nowhere else
    again = compositor.compose([("p1", "Big", big, 1), ("p2", "Other", None, 0)])
    assert again is canvas  # unchanged tiles are not redrawn: the same buffer comes back
