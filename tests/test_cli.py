"""`python -m backend render` and `info`: outputs, gsplat's PLY conventions, exit code 2 with a hint."""
import json

import numpy as np
import pytest
import torch
from gsplat.exporter import export_splats
from PIL import Image

from backend.cli import build_parser
from backend.gaussians import SH_C0


def one_camera(path, width=64, height=48, f=60.0):
    cams = {"width": width, "height": height,
            "frames": [{"frame": 1, "K": [[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]],
                        "c2w": np.eye(4).tolist()}]}
    path.write_text(json.dumps(cams))
    return path


def gsplat_ply(path, colour=(0.8, 0.2, 0.1), opacity=0.9, sigma=0.05, depth=2.0, x=0.0):
    """One isotropic Gaussian written by gsplat's own exporter (log-scales, logit opacity, SH dc)."""
    export_splats(means=torch.tensor([[x, 0.0, depth]]), scales=torch.full((1, 3), float(np.log(sigma))),
                  quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
                  opacities=torch.logit(torch.tensor([opacity])),
                  sh0=((torch.tensor(colour) - 0.5) / SH_C0).reshape(1, 1, 3), shN=torch.zeros(1, 0, 3),
                  format="ply", save_to=str(path))
    return path


def test_render_of_a_gsplat_ply_follows_gsplats_conventions(tmp_path, run_backend):
    """gsplat's conventions: rgb = 0.5 + C0·f_dc, opacity = sigmoid, scale = exp, pixel centres at +0.5,
    so a Gaussian on the optical axis of a camera with cx = W/2 peaks at the four central pixels."""
    ply = gsplat_ply(tmp_path / "one.ply", x=0.0)
    cams = one_camera(tmp_path / "cams.json")
    run_backend("render", "--ply", ply, "--cameras", cams, "--out", tmp_path / "frames", check=0)
    img = np.asarray(Image.open(tmp_path / "frames" / "0000.png")).astype(float) / 255
    assert img.shape == (48, 64, 3)
    peak = np.unravel_index(img[..., 0].argmax(), img.shape[:2])
    assert peak in {(23, 31), (23, 32), (24, 31), (24, 32)}
    # σ = 0.05 at depth 2 with f = 60 is 1.5 px, and gsplat adds 0.3 px² (eps2d) to the 2D covariance
    # without compensating the opacity; pixel (31, 23) has its centre half a pixel off in x and in y
    sigma2 = 1.5 ** 2 + 0.3
    expected_alpha = 0.9 * np.exp(-0.5 * (0.5 ** 2 + 0.5 ** 2) / sigma2)
    centre = img[23, 31]
    assert np.allclose(centre / centre[0] * 0.8, [0.8, 0.2, 0.1], atol=0.02)  # hue is the PLY's colour
    assert abs(centre[0] - 0.8 * expected_alpha) < 0.03
    assert img[0, 0].max() == 0  # black background far from the Gaussian


def test_render_size_and_rgba_and_background(tmp_path, run_backend):
    ply = gsplat_ply(tmp_path / "one.ply")
    cams = one_camera(tmp_path / "cams.json")
    run_backend("render", "--ply", ply, "--cameras", cams, "--out", tmp_path / "a", "--width", "32",
                "--height", "24", "--background", "1,1,1", check=0)
    img = np.asarray(Image.open(tmp_path / "a" / "0000.png"))
    assert img.shape == (24, 32, 3) and tuple(img[0, 0]) == (255, 255, 255)
    run_backend("render", "--ply", ply, "--cameras", cams, "--out", tmp_path / "b", "--rgba", check=0)
    rgba = np.asarray(Image.open(tmp_path / "b" / "0000.png"))
    assert rgba.shape == (48, 64, 4) and rgba[0, 0, 3] == 0 and rgba[23, 31, 3] > 150
    # straight alpha: the colour at the centre is the Gaussian's own colour, not darkened by coverage
    assert abs(rgba[23, 31, 0] / 255 - 0.8) < 0.03


def test_info_json_reports_what_the_file_holds(tmp_path, run_backend):
    ply = gsplat_ply(tmp_path / "one.ply", opacity=0.5, sigma=0.1, depth=3.0)
    result = run_backend("info", ply, "--json", check=0)
    info = json.loads(result.stdout)
    assert info["count"] == 1 and info["sh_degree"] == 0 and info["format"] == "3dgs"
    assert info["bbox_min"] == pytest.approx([0, 0, 3]) and info["bbox_max"] == pytest.approx([0, 0, 3])
    assert info["opacity_quantiles_5_50_95"] == pytest.approx([0.5] * 3, abs=1e-6)
    assert info["scale_quantiles_5_50_95"] == pytest.approx([0.1] * 3, rel=1e-5)
    text = run_backend("info", ply, check=0).stdout
    assert "count" in text and "1" in text


@pytest.mark.parametrize("case", ["not a ply", "missing ply", "bad cameras", "bad background"])
def test_bad_input_exits_2_with_one_line_hint(tmp_path, run_backend, case):
    ply = gsplat_ply(tmp_path / "one.ply")
    cams = one_camera(tmp_path / "cams.json")
    if case == "not a ply":
        ply.write_text("hello")
    elif case == "missing ply":
        ply = tmp_path / "missing.ply"
    elif case == "bad cameras":
        cams.write_text("{not json")
    extra = ["--background", "red"] if case == "bad background" else []
    result = run_backend("render", "--ply", ply, "--cameras", cams, "--out", tmp_path / "o", *extra, check=2)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ") and len(lines) == 2
    if case != "bad background":
        assert run_backend("info", ply, check=None).returncode == (2 if "ply" in case else 0)


@pytest.mark.parametrize("seconds", ["0", "-5", "inf", "soon"])
def test_render_worker_refuses_an_idle_free_that_is_not_a_positive_time(seconds, capsys):
    """0 would make the worker's idle wait a busy loop, a negative one crash it: argparse says so."""
    argv = ["render-worker", "--idle-free", seconds]
    with pytest.raises(SystemExit) as exit_:
        build_parser(argv).parse_args(argv)
    assert exit_.value.code == 2
    assert f"--idle-free: {seconds!r} is not a positive, finite number of seconds" in capsys.readouterr().err
    assert build_parser(argv).parse_args(["render-worker", "--idle-free", "0.5"]).idle_free == 0.5
