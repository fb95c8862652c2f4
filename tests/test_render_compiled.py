"""The compiled CPU rasterizer against the torch reference, and the fallbacks when a fast path is missing
(numba not installed, gsplat's CUDA build failing)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.gaussians import Gaussians, sh_rest_count
from backend.render import pick_backend, render

ROOT = Path(__file__).resolve().parents[1]
compiled = pytest.importorskip("backend.render.compiled")
if compiled.unavailable_reason():
    pytest.skip(compiled.unavailable_reason(), allow_module_level=True)


def random_scene(count: int, sh_degree: int = 0, seed: int = 0, spread: float = 0.7) -> Gaussians:
    """Gaussians of 0.3-5 pixels in front of a camera at the origin looking down +z (some behind it)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(count, generator=gen) * 5 - 0.5  # 10% behind the camera or before the near plane
    xy = (torch.rand(count, 2, generator=gen) * 2 - 1) * spread * z.abs()[:, None]
    return Gaussians(means=torch.cat([xy, z[:, None]], 1),
                     log_scales=math.log(0.02) + 0.8 * torch.randn(count, 3, generator=gen),
                     quats=torch.randn(count, 4, generator=gen),
                     opacity_logits=2 * torch.randn(count, generator=gen),
                     sh0=torch.randn(count, 3, generator=gen),
                     sh_rest=0.3 * torch.randn(count, sh_rest_count(sh_degree), 3, generator=gen))


def camera(width: int, height: int, c2w: torch.Tensor | None = None) -> CameraBatch:
    K = torch.tensor([[0.9 * width, 0.0, width / 2], [0.0, 0.9 * width, height / 2], [0.0, 0.0, 1.0]])
    return CameraBatch(K[None], (torch.eye(4) if c2w is None else c2w)[None], width, height)


def both(gaussians, cameras, **kw):
    with torch.no_grad():
        return render(gaussians, cameras, backend="compiled", **kw), render(gaussians, cameras, backend="torch", **kw)


def assert_close(ours, ref, rgb_p99=2e-3, depth_p99=1e-3):
    """A high percentile of the error is bounded, not the max: a 1/255 or 1e-4 cut-off that falls the
    other way under float rounding changes a few pixels by a visible amount."""
    for name, tol in (("rgb", rgb_p99), ("alpha", rgb_p99)):
        err = (getattr(ours, name) - getattr(ref, name)).abs().flatten()
        assert err.quantile(0.99) < tol, (name, err.quantile(0.99), err.max())
        assert err.mean() < tol / 4, (name, err.mean())
    rel = ((ours.depth - ref.depth).abs() / ref.depth.clamp_min(1e-3)).flatten()
    assert rel.quantile(0.99) < depth_p99, rel.quantile(0.99)


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_compiled_matches_reference_sh_degrees_odd_size(sh_degree):
    gaussians = random_scene(3000, sh_degree, seed=sh_degree)
    # 37x29: smaller than a tile and not a multiple of any tile size; a rotated, translated camera so SH directions vary
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[math.cos(0.2), 0, math.sin(0.2)], [0, 1, 0], [-math.sin(0.2), 0, math.cos(0.2)]])
    c2w[:3, 3] = torch.tensor([0.1, -0.05, 0.2])
    ours, ref = both(gaussians, camera(37, 29, c2w), background=(0.2, 0.4, 0.6))
    assert ref.alpha.mean() > 0.5 and ours.rgb.shape == (1, 29, 37, 3)
    assert_close(ours, ref)


def test_compiled_matches_reference_at_other_size_and_camera_batch():
    gaussians = random_scene(20000, 1, seed=7, spread=0.5)
    c2w = torch.eye(4)
    c2w[2, 3] = -0.3
    cameras = CameraBatch(camera(64, 48).K.expand(2, 3, 3), torch.stack([torch.eye(4), c2w]), 64, 48)
    ours, ref = both(gaussians, cameras, width=101, height=75)
    assert ours.rgb.shape == (2, 75, 101, 3)
    assert (ours.rgb[0] - ours.rgb[1]).abs().mean() > 0.01  # the two views differ
    assert_close(ours, ref)


def test_default_model_scene_matches_reference(default_scene):
    gaussians, cameras = default_scene
    ours, ref = both(gaussians, cameras[2], width=90, height=60)
    assert ref.alpha.mean() > 0.9
    assert_close(ours, ref)


@pytest.fixture(scope="module")
def default_scene(tmp_path_factory):
    """The shipped default model's Gaussians for the demo room picture."""
    from backend.cameras import load_cameras
    from backend.images import load_rgb
    from backend.pipelines.wonderland import DEFAULT_MODEL, generate, load_pipeline
    from test_backend_generate import write_job

    _, cams = write_job(tmp_path_factory.mktemp("job"))
    result = generate(load_pipeline(DEFAULT_MODEL), load_rgb(ROOT / "tools" / "demo_inputs" / "room.png"),
                      load_cameras(cams), preview_count=0)
    return result.gaussians, load_cameras(cams)


def test_empty_behind_camera_and_off_screen_scenes_render_background():
    nothing = random_scene(0)
    behind = random_scene(500)
    behind.means[:, 2] = -behind.means[:, 2].abs() - 0.02
    off_screen = random_scene(500)
    off_screen.means[:, 0] += 100
    for gaussians in (nothing, behind, off_screen):
        ours, ref = both(gaussians, camera(20, 17), background=(1.0, 0.5, 0.0))
        assert torch.equal(ours.alpha, torch.zeros(1, 17, 20, 1)) and torch.equal(ours.depth, ours.alpha)
        assert torch.allclose(ours.rgb, torch.tensor([1.0, 0.5, 0.0]).expand(1, 17, 20, 3))
        assert_close(ours, ref)


def test_auto_picks_compiled_for_inference_and_torch_for_gradients():
    gaussians = random_scene(10)
    with torch.no_grad():
        assert pick_backend(gaussians) == "compiled"
    assert pick_backend(gaussians) == "compiled"  # nothing requires grad
    gaussians.means.requires_grad_(True)
    assert pick_backend(gaussians) == "torch"
    render(gaussians, camera(16, 16)).rgb.sum().backward()
    assert gaussians.means.grad is not None


def test_compiled_refuses_gaussians_that_want_gradients():
    """The compiled rasterizer gives no gradients: asked for them, it says so instead of training nothing."""
    gaussians = random_scene(10)
    gaussians.opacity_logits.requires_grad_(True)
    with pytest.raises(InputError, match="compiled renderer returns images without gradients") as err:
        render(gaussians, camera(16, 16), backend="compiled")
    assert "torch.no_grad()" in err.value.hint
    with torch.no_grad():
        assert render(gaussians, camera(16, 16), backend="compiled").rgb.shape == (1, 16, 16, 3)


def test_thread_count_is_clamped_and_does_not_change_the_image():
    gaussians = random_scene(5000, seed=3)
    with torch.no_grad():
        assert compiled.set_threads(1) == 1
        one = render(gaussians, camera(48, 40), backend="compiled")
        all_threads = compiled.set_threads(None)
        assert all_threads == compiled.set_threads(10_000) >= 1
        many = render(gaussians, camera(48, 40), backend="compiled")
    assert torch.equal(one.rgb, many.rgb) and torch.equal(one.depth, many.depth)  # tiles never share pixels


def test_cache_dir_is_per_user_and_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv("WONDERLAND_CACHE_DIR", str(tmp_path))
    assert compiled.cache_dir() == tmp_path / "numba"
    monkeypatch.delenv("WONDERLAND_CACHE_DIR")
    assert "wonderland" in compiled.cache_dir().parts and compiled.cache_dir().is_relative_to(Path.home())


def test_a_numba_cache_dir_that_is_set_is_used_and_no_other_folder_made(tmp_path):
    code = ("import os; from backend.render import compiled; assert compiled.unavailable_reason() is None\n"
            "print(os.environ['NUMBA_CACHE_DIR'])")
    done = run_child(code, {"NUMBA_CACHE_DIR": str(tmp_path / "mine"), "WONDERLAND_CACHE_DIR": str(tmp_path / "ours")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "mine") and not (tmp_path / "ours").exists()


def run_child(code: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


SCENE = """
import torch
from backend.gaussians import Gaussians
from backend.cameras import CameraBatch
from backend.render import render, pick_backend
g = Gaussians(means=torch.tensor([[0.0, 0.0, 2.0]]), log_scales=torch.full((1, 3), -3.0),
              quats=torch.tensor([[1.0, 0, 0, 0]]), opacity_logits=torch.zeros(1), sh0=torch.zeros(1, 3), sh_rest=None)
cams = CameraBatch(torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]]), torch.eye(4)[None], 16, 16)
"""


def test_missing_numba_falls_back_to_torch_with_one_clear_warning():
    # sys.modules[name] = None makes `import numba` raise ImportError, as where it is not installed.
    code = "import sys; sys.modules['numba'] = None\n" + SCENE + """
with torch.no_grad():
    a = render(g, cams); b = render(g, cams)
print(pick_backend(g), float(a.alpha.max()))
try:
    render(g, cams, backend="compiled")
except Exception as e:
    print(type(e).__name__)
"""
    result = run_child(code)
    assert result.returncode == 0, result.stderr
    backend, alpha, error = result.stdout.split()
    assert backend == "torch" and float(alpha) > 0.2 and error == "InputError"
    assert result.stderr.count("RuntimeWarning") == 1, result.stderr
    assert "pip install numba==" in result.stderr and "PyTorch rasterizer" in result.stderr


def test_failing_gsplat_build_warns_once_and_falls_back(tmp_path):
    """A CUDA_HOME whose nvcc fails: gsplat's JIT build really runs and fails; we say so once, quickly."""
    nvcc = tmp_path / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\necho 'nvcc: this toolkit is broken' >&2\nexit 1\n")
    nvcc.chmod(0o755)
    code = """
from backend.render import gsplat_backend
first, second = gsplat_backend.unavailable_reason(), gsplat_backend.unavailable_reason()
assert first and first == second
print("ok")
"""
    env = {"CUDA_HOME": str(nvcc.parents[1]), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    for extra in (env, {"PATH": "/usr/bin:/bin", "CUDA_HOME": "", "CUDA_PATH": ""}):  # broken nvcc; none at all
        result = run_child(code, extra, timeout=120)
        assert result.returncode == 0 and result.stdout.split()[-1] == "ok", result.stderr
        warnings = [line for line in result.stderr.splitlines() if "RuntimeWarning" in line]
        assert len(warnings) == 1, result.stderr
        assert "gsplat is unavailable" in warnings[0] and "own rasterizer" in warnings[0]
        assert "CUDA toolkit" in warnings[0] and "ninja" in warnings[0]



def test_equal_depths_composite_in_input_order_across_tiles_and_binning_parts():
    """Each tile sorts its own records by depth: ties must keep input order, as the reference's stable sort,
    also between Gaussians that different threads binned."""
    gaussians = random_scene(3000, seed=11)
    gaussians.means[:, 2] = 2.0  # one depth for all
    gaussians.means[:, :2] = (torch.rand(3000, 2, generator=torch.Generator().manual_seed(1)) - 0.5) * 1.6
    with torch.no_grad():
        for threads in (1, 2):
            compiled.set_threads(threads)
            ours, ref = both(gaussians, camera(96, 72))
            assert_close(ours, ref)
    compiled.set_threads(None)


def test_reused_work_arrays_give_the_same_image_as_fresh_ones():
    """Arrays kept from a bigger scene (more Gaussians, more tile records, another size) hold stale values:
    a smaller render after it must not see them."""
    small, big = random_scene(2000, seed=21), random_scene(20_000, seed=22)
    with torch.no_grad():
        compiled.free_buffers()
        fresh = render(small, camera(40, 30), backend="compiled")
        render(big, camera(64, 48), backend="compiled")
        assert compiled.BUFFERS.held_bytes() > 20_000 * 32
        reused = render(small, camera(40, 30), backend="compiled")
    for name in ("rgb", "alpha", "depth"):
        assert torch.equal(getattr(fresh, name), getattr(reused, name)), name


def test_renders_in_two_threads_at_once_match_renders_one_after_the_other():
    import threading
    scenes = [(random_scene(6000, seed=s), camera(56, 40)) for s in (31, 32)]
    with torch.no_grad():
        alone = [render(g, c, backend="compiled").rgb for g, c in scenes]
        together: dict[int, list] = {0: [], 1: []}

        def work(i):
            for _ in range(4):
                together[i].append(render(*scenes[i], backend="compiled").rgb)
        threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in (0, 1):
        assert len(together[i]) == 4 and all(torch.equal(rgb, alone[i]) for rgb in together[i])
