"""The try-it command (quality/try_it.py): three PNGs, the refined image differs from the plain one."""

from __future__ import annotations

import numpy as np
from PIL import Image

from quality import try_it


def test_try_it_writes_plain_refined_and_overlay(tmp_path, capsys) -> None:
    """Without --method: the WebUI's default method (Both), its image named after it."""
    rc = try_it.main(["--prompt", "a red circle and a blue square and a green triangle",
                      "--concepts", "red circle, blue square, green triangle", "--seed", "7", "--steps", "4",
                      "--out", str(tmp_path)])
    assert rc == 0
    for name in ("plain", try_it.DEFAULT_METHOD, "overlay"):
        assert (tmp_path / f"{name}.png").is_file()
    plain = np.asarray(Image.open(tmp_path / "plain.png"))
    astar = np.asarray(Image.open(tmp_path / f"{try_it.DEFAULT_METHOD}.png"))
    assert plain.shape == astar.shape == (32 * try_it.UPSCALE, 32 * try_it.UPSCALE, 3)
    assert not np.array_equal(plain, astar)
    captured = capsys.readouterr()
    assert "4/4" in captured.err  # the progress bar reached the end
    assert str(tmp_path / "overlay.png") in captured.out
