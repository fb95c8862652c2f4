"""The detail layer (backend/detail.py): the photo lifted into Gaussians at its own resolution."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cameras import CameraBatch, load_cameras
from backend.detail import FALLBACK_DEPTH, detail_depth, fit_colours, lift, occluders, snap_silhouettes
from backend.detail_size import MAX_DETAIL_SIZE, detail_grid
from backend.gaussians import Gaussians
from backend.images import crop_resize, load_rgb, save_png
from backend.pipelines.wonderland import generate, input_crop, load_pipeline
from backend.render import render
from backend.training.metrics import image_metrics
from test_backend_generate import events_of, write_job

ROCKET = Path(__file__).resolve().parents[1] / "tools" / "demo_inputs" / "rocket.jpg"


def camera(width: int, height: int, f: float, c2w: torch.Tensor | None = None) -> CameraBatch:
    K = torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]])
    return CameraBatch(K, (torch.eye(4) if c2w is None else c2w)[None], width, height)


def psnr(image: torch.Tensor, target: np.ndarray) -> float:
    return image_metrics(image.permute(2, 0, 1)[None], torch.from_numpy(target).permute(2, 0, 1)[None])["psnr"]


def photo(width: int, height: int) -> np.ndarray:
    """The demo's rocket photograph (real texture) at width x height."""
    rgb = load_rgb(ROCKET)
    return crop_resize(rgb, input_crop((width, height), rgb.shape[1::-1], camera(width, height, 1.0))[0],
                       width, height)


def test_lifted_photo_renders_back_as_the_photo_at_its_size():
    """From camera 0, at the detail size, the layer renders the photo itself (sharp, gap-free) whatever
    the depth: here a slanted plane with a box in front."""
    w, h = 192, 128
    rgb = photo(w, h)
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    depth = 2.0 + u / w
    depth[40:90, 60:120] = 1.2
    cam = camera(w, h, 150.0)
    layer = lift(torch.from_numpy(rgb), depth, cam.K[0])
    out = render(layer, cam)
    assert out.alpha.min() > 0.98
    assert psnr(out.rgb[0], rgb) > 29.0
    assert torch.allclose(out.depth[0, ..., 0][h // 2, 10], depth[h // 2, 10], rtol=0.02)


def test_colour_fit_gives_back_the_photo_through_the_splat_blur_and_a_kept_haze():
    """The splats blur the photo by about a pixel and a faint model Gaussian in front tints it; the fitted
    colours (still 0..1, nothing else of the layer moved) render the photo back far closer at camera 0."""
    w, h = 192, 128
    rgb = photo(w, h)
    cam = camera(w, h, 150.0)
    u = torch.arange(w) + 0.5
    layer = lift(torch.from_numpy(rgb), (2.0 + u / w).expand(h, w), cam.K[0])
    haze = Gaussians(means=torch.tensor([[0.0, 0.0, 1.0]]), log_scales=torch.full((1, 3), math.log(0.3)),
                     quats=torch.tensor([[1.0, 0, 0, 0]]), opacity_logits=torch.logit(torch.tensor([0.3])),
                     sh0=torch.full((1, 3), 1.0), sh_rest=torch.zeros(1, 0, 3))

    def at_camera_0(detail: Gaussians) -> float:
        return psnr(render(Gaussians.cat([haze, detail]), cam).rgb[0], rgb)

    fitted = fit_colours(layer, haze, torch.from_numpy(rgb), cam)
    assert at_camera_0(fitted) > at_camera_0(layer) + 3.0, (at_camera_0(layer), at_camera_0(fitted))
    assert float(fitted.rgb.min()) >= 0.0 and float(fitted.rgb.max()) <= 1.0
    assert torch.equal(fitted.means, layer.means) and torch.equal(fitted.opacity_logits, layer.opacity_logits)


@pytest.mark.parametrize("magnification", [2.0, 4.0])
def test_no_gaps_when_the_camera_dollies_in(magnification):
    """Moving towards the layer magnifies it; the splats still cover the view without holes."""
    w, h, f, z = 96, 64, 80.0, 2.0
    layer = lift(torch.from_numpy(photo(w, h)), torch.full((h, w), z), camera(w, h, f).K[0])
    c2w = torch.eye(4)
    c2w[2, 3] = z - z / magnification                       # the plane now looks `magnification` times larger
    out = render(layer, camera(w, h, f, c2w))
    assert out.alpha.min() > 0.92, float(out.alpha.min())


def test_occluders_are_culled_by_footprint_not_centre():
    """Left half: a near object at z = 1; right half: a wall at z = 3. A Gaussian at z = 2 centred on the
    left half is behind the object at its centre, but its footprint reaches the wall, in front of which
    it would show: culled. The same Gaussian small, or one behind the wall, stays."""
    h, w = 64, 96
    depth = torch.full((h, w), 3.0)
    depth[:, :48] = 1.0
    K = camera(w, h, 80.0).K[0]

    def at(pixel_x, z, sigma, opacity=0.5):
        x = (pixel_x - w / 2) / 80.0 * z
        return dict(means=[x, 0.0, z], log_scales=[math.log(sigma)] * 3,
                    opacity_logits=math.log(opacity / (1 - opacity)))
    cases = {"big, centre behind the object": (at(40, 2.0, 0.3), True),
             "small, centre behind the object": (at(40, 2.0, 0.005), False),
             "in front of the wall": (at(70, 2.0, 0.005), True),
             "in front of the object": (at(20, 0.5, 0.005), True),
             "behind the wall": (at(70, 3.5, 0.3), False),
             "behind the camera": (at(48, -1.0, 0.3), False),
             "transparent (alpha never reaches 1/255)": (at(70, 2.0, 0.3, opacity=0.003), False)}
    g = Gaussians(means=torch.tensor([c["means"] for c, _ in cases.values()]),
                  log_scales=torch.tensor([c["log_scales"] for c, _ in cases.values()]),
                  quats=torch.tensor([[1.0, 0, 0, 0]] * len(cases)),
                  opacity_logits=torch.tensor([c["opacity_logits"] for c, _ in cases.values()]),
                  sh0=torch.zeros(len(cases), 3), sh_rest=None)
    culled = occluders(g, depth, K).tolist()
    assert dict(zip(cases, culled)) == {name: expected for name, (_, expected) in cases.items()}


def test_silhouettes_snap_to_a_side_no_halo():
    """A depth edge blurred by upsampling leaves no pixel at an in-between depth."""
    inv = torch.full((1, 1, 32, 64), 1 / 3.0)
    inv[..., :30] = 1.0
    ramp = torch.linspace(1.0, 1 / 3.0, 8)
    inv[..., 28:36] = ramp                                  # a smeared edge, 8 px wide
    snapped = snap_silhouettes(inv, 4)
    near, far = torch.isclose(snapped, torch.tensor(1.0)), torch.isclose(snapped, torch.tensor(1 / 3.0))
    assert bool((near | far).all()) and near[..., :30].all() and far[..., 36:].all()


def test_depth_edges_follow_the_photo():
    """A coarse depth map (a near square on a far wall, 8x coarser than the photo) upsampled for a photo
    with the same square: the depth edge lands on the photo's edge, within a pixel or two."""
    w, h = 96, 64
    near = torch.zeros(h, w, dtype=torch.bool)
    near[16:48, 30:70] = True
    rgb = torch.where(near[..., None], torch.tensor([0.9, 0.8, 0.2]), torch.tensor([0.1, 0.2, 0.5]))
    # the model's Gaussians: one per coarse pixel (12x8 grid), at z = 1 inside the square, 3 outside
    cam = camera(12, 8, 10.0)
    v, u = torch.meshgrid(torch.arange(8) + 0.5, torch.arange(12) + 0.5, indexing="ij")
    inside = near[(v * 8).long(), (u * 8).long()].reshape(-1)
    z = torch.where(inside, 1.0, 3.0)
    means = torch.stack([(u.reshape(-1) - 6) / 10 * z, (v.reshape(-1) - 4) / 10 * z, z], -1)
    g = Gaussians(means=means, log_scales=torch.log(0.6 * z / 10)[:, None].expand(-1, 3).contiguous(),
                  quats=torch.tensor([[1.0, 0, 0, 0]]).expand(96, 4).contiguous(),
                  opacity_logits=torch.full((96,), 5.0), sh0=torch.zeros(96, 3), sh_rest=None)
    depth = detail_depth(g, cam, rgb)
    wrong = (depth < 2.0) != near
    assert wrong.float().mean() < 0.03, float(wrong.float().mean())
    assert not ((depth > 1.2) & (depth < 2.0)).any()     # nothing floats between the square and the wall


def test_grid_keeps_the_model_aspect_and_is_capped_at_the_photo():
    assert detail_grid((0, 0, 1536, 1024), (96, 64), 512) == (512, 341)
    assert detail_grid((0, 0, 300, 200), (96, 64), 512) == (300, 200)        # never upsampled
    assert detail_grid((0, 0, 1000, 1500), (64, 96), 512) == (341, 512)


def test_same_world_frame_and_scale_as_the_model_gaussians(tmp_path):
    """With the picture cropped (square image, 3:2 cameras) and the trajectory moved and scaled, the
    result renders the crop back at camera 0 in the caller's world, and the layer sits where the model's Gaussians
    render their depth: the same frame, the same scale."""
    image, cams = write_job(tmp_path, image_size=(240, 240))
    save_png(image, photo(240, 240))                        # a real photograph's texture, not noise
    cameras = load_cameras(cams)
    c2w = cameras.c2w.clone()
    c2w[:, :3, 3] = c2w[:, :3, 3] * 4.0 + torch.tensor([1.0, -2.0, 0.5])
    cameras = CameraBatch(cameras.K, c2w, cameras.width, cameras.height)
    pipe = load_pipeline("tiny")
    rgb = load_rgb(image)
    with_detail = generate(pipe, rgb, cameras, preview_count=0, detail_size=120)
    without = generate(pipe, rgb, cameras, preview_count=0, detail_size=0)
    w, h = with_detail.info["detail"]["size"]
    assert (w, h) == (120, 80)
    layer = with_detail.gaussians[len(with_detail.gaussians) - w * h:]
    target = crop_resize(rgb, tuple(with_detail.info["image_crop_box"]), w, h)
    assert psnr(render(with_detail.gaussians, cameras[0], w, h).rgb[0], target) > 26.0
    out = render(layer, cameras[0], w, h)
    model_depth = render(without.gaussians, cameras[0], w, h)
    seen = model_depth.alpha[0, ..., 0] > 0.5
    ratio = out.depth[0, ..., 0][seen] / model_depth.depth[0, ..., 0][seen]
    assert abs(float(ratio.median()) - 1.0) < 0.1, float(ratio.median())


def test_detail_off_is_the_model_alone_and_on_adds_culls_recolours_and_fills(tmp_path):
    image, cams = write_job(tmp_path)
    pipe = load_pipeline("tiny")
    rgb, cameras = load_rgb(image), load_cameras(cams)
    off = generate(pipe, rgb, cameras, preview_count=0, detail_size=0)
    on = generate(pipe, rgb, cameras, preview_count=0)
    assert off.info["detail"] == {"size": None, "count": 0, "culled": 0, "refiner": False, "palette": None,
                                  "opaque": 0}
    assert len(off.gaussians) == off.info["model_count"]
    d = on.info["detail"]
    assert d["size"] == [180, 120] and d["count"] == 180 * 120          # capped at the picture's size
    assert len(on.gaussians) == on.info["model_count"] - d["culled"] + d["count"]
    kept = on.gaussians[:len(on.gaussians) - d["count"]]
    index = {tuple(m): i for i, m in enumerate(off.gaussians.means.tolist())}
    rows = [index[tuple(m)] for m in kept.means.tolist()]                 # the survivors, where they were
    assert rows == sorted(rows) and torch.equal(off.gaussians.log_scales[rows], kept.log_scales)
    # their colours in the photo's palette (backend/palette.py; meta.json reports its one map)
    assert torch.tensor(d["palette"]).shape == (4, 3) and not torch.equal(off.gaussians.sh0[rows], kept.sh0)
    # and thin cover made opaque (backend/coverage.py): opacities only rise, as many as reported
    raised = kept.opacity_logits > off.gaussians.opacity_logits[rows]
    assert torch.equal(kept.opacity_logits[~raised], off.gaussians.opacity_logits[rows][~raised])
    assert int(raised.sum()) == d["opaque"]


def test_cli_reports_detail_in_meta_and_done(tmp_path, run_backend):
    image, cams = write_job(tmp_path)
    out = tmp_path / "out"
    run_backend("generate", "--image", image, "--cameras", cams, "--out", out, "--model", "tiny", "--previews", "0",
                "--detail-size", "64", check=0)
    done = events_of(out)[-1]
    assert done["detail"]["size"] == [64, 43] and done["detail"]["count"] == 64 * 43
    assert (out / "meta.json").read_text().count('"culled"') == 1


@pytest.mark.parametrize("value", ["-1", "1.5", "big", str(MAX_DETAIL_SIZE + 1)])
def test_bad_detail_size_exits_2_with_a_hint(tmp_path, run_backend, value):
    image, cams = write_job(tmp_path)
    out = tmp_path / "out"
    result = run_backend("generate", "--image", image, "--cameras", cams, "--out", out, "--model", "tiny",
                         "--detail-size", value, check=2)
    assert "--detail-size" in result.stderr and f"0 to {MAX_DETAIL_SIZE}" in result.stderr
    assert events_of(out)[-1]["event"] == "error" and not (out / "scene.ply").exists()


def test_a_model_that_shows_nothing_at_camera_0_puts_the_photo_on_a_far_plane():
    behind = Gaussians(means=torch.tensor([[0.0, 0.0, -1.0]]), log_scales=torch.full((1, 3), -3.0),
                       quats=torch.tensor([[1.0, 0, 0, 0]]), opacity_logits=torch.tensor([3.0]),
                       sh0=torch.zeros(1, 3), sh_rest=None)
    depth = detail_depth(behind, camera(12, 8, 10.0), torch.rand(16, 24, 3))
    assert torch.allclose(depth, torch.full((16, 24), FALLBACK_DEPTH))


def test_a_nearly_transparent_model_at_camera_0_puts_the_photo_on_the_far_plane_not_at_infinity():
    """One faint Gaussian, on a pixel centre: seen (alpha above 1e-4) but too faint for any window of the hole
    filling, so the empty pixels fall back to FALLBACK_DEPTH instead of inverse depth 0 (z = 1e6)."""
    faint = Gaussians(means=torch.tensor([[0.05 * 2, 0.05 * 2, 2.0]]), log_scales=torch.full((1, 3), -5.0),
                      quats=torch.tensor([[1.0, 0, 0, 0]]), opacity_logits=torch.logit(torch.tensor([0.006])),
                      sh0=torch.zeros(1, 3), sh_rest=None)
    cam = camera(12, 8, 10.0)
    with torch.no_grad():
        alpha = render(faint, cam).alpha
    assert 1e-4 < float(alpha.max()) < 9e-3 and int((alpha > 0).sum()) == 1
    depth = detail_depth(faint, cam, torch.rand(16, 24, 3))
    assert float(depth.max()) <= FALLBACK_DEPTH * 1.001 and float(depth.min()) > 0.9 * FALLBACK_DEPTH
