"""The add-on's numpy PLY reader/writer (no bpy): bitwise round trips, other tools' layouts, clear errors."""
from __future__ import annotations

import numpy as np
import plyfile
import pytest

from wonderland_blender.plyio import SH_C0, PlyError, Splats, read_ply, write_ply

FIELDS = ("means", "f_dc", "f_rest", "opacity_logits", "log_scales", "quats")


def random_splats(n: int, k: int, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return Splats(f(n, 3), f(n, 3), f(n, k, 3), f(n), f(n, 3), f(n, 4))


def assert_same(a: Splats, b: Splats) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == np.float32 and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name} differs"


def columns(s: Splats) -> dict[str, np.ndarray]:
    """The standard PLY property columns of `s` (f_rest channel-major), for writing files with plyfile."""
    n, k = len(s), s.sh_rest_count
    cols = {name: s.means[:, i] for i, name in enumerate("xyz")}
    cols.update({f"f_dc_{i}": s.f_dc[:, i] for i in range(3)})
    rest = s.f_rest.transpose(0, 2, 1).reshape(n, 3 * k)
    cols.update({f"f_rest_{i}": rest[:, i] for i in range(3 * k)})
    cols["opacity"] = s.opacity_logits
    cols.update({f"scale_{i}": s.log_scales[:, i] for i in range(3)})
    cols.update({f"rot_{i}": s.quats[:, i] for i in range(4)})
    return cols


def write_with_plyfile(path, cols: dict[str, np.ndarray], order: list[str], byte_order="<", text=False,
                       dtype="f4", extra_elements=()):
    rows = np.empty(len(next(iter(cols.values()))), [(name, dtype) for name in order])
    for name in order:
        rows[name] = cols[name]
    vertex = plyfile.PlyElement.describe(rows, "vertex")
    plyfile.PlyData([*extra_elements, vertex], text=text, byte_order=byte_order).write(str(path))


@pytest.mark.parametrize("k", [0, 3, 15])
def test_round_trip_is_bitwise_and_standard_layout(tmp_path, k):
    s = random_splats(50, k)
    write_ply(tmp_path / "a.ply", s, comments=["wonderland"])
    result = read_ply(tmp_path / "a.ply")
    assert_same(result.splats, s)
    assert result.dropped == 0 and result.comments == ["wonderland"]
    # plyfile agrees on the layout: standard order, normals zero, f_rest channel-major.
    v = plyfile.PlyData.read(str(tmp_path / "a.ply"))["vertex"]
    names = [p.name for p in v.properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert not v["nx"].any()
    if k:
        assert np.array_equal(v["f_rest_1"], s.f_rest[:, 1, 0]) and np.array_equal(v[f"f_rest_{k}"], s.f_rest[:, 0, 1])


def test_reads_gsplat_exporter_file(tmp_path):
    torch = pytest.importorskip("torch")   # not in the numpy 2 venv (tests/test_numpy2.py)
    from gsplat.exporter import export_splats
    s = random_splats(40, 8, seed=1)
    export_splats(torch.from_numpy(s.means), torch.from_numpy(s.log_scales), torch.from_numpy(s.quats),
                  torch.from_numpy(s.opacity_logits), torch.from_numpy(s.f_dc)[:, None],
                  torch.from_numpy(s.f_rest), format="ply", save_to=str(tmp_path / "g.ply"))
    assert_same(read_ply(tmp_path / "g.ply").splats, s)


@pytest.mark.parametrize("byte_order,text,dtype", [(">", False, "f4"), ("<", True, "f4"), ("<", False, "f8")])
def test_any_encoding_property_order_and_extra_data(tmp_path, byte_order, text, dtype):
    s = random_splats(30, 3, seed=2)
    cols = columns(s)
    cols.update(red=np.full(30, 7.0), nx=np.zeros(30))
    order = list(cols)[::-1]  # reversed property order, extra properties in between
    extra = plyfile.PlyElement.describe(np.array([(1.0, 2.0)], [("fx", "f4"), ("fy", "f4")]), "intrinsic")
    write_with_plyfile(tmp_path / "x.ply", cols, order, byte_order, text, dtype, extra_elements=[extra])
    got = read_ply(tmp_path / "x.ply").splats
    if text:  # plyfile prints floats in ascii with enough digits for float32 exactness
        np.testing.assert_allclose(got.means, s.means, rtol=1e-6)
    else:
        assert_same(got, s)


def test_non_finite_rows_are_dropped_and_counted(tmp_path):
    s = random_splats(20, 3, seed=3)
    s.means[3, 1] = np.nan
    s.f_rest[7, 2, 0] = np.inf
    s.opacity_logits[11] = -np.inf
    write_ply(tmp_path / "nan.ply", s)
    result = read_ply(tmp_path / "nan.ply")
    assert result.dropped == 3
    keep = np.setdiff1d(np.arange(20), [3, 7, 11])
    assert_same(result.splats, s.select(keep))


def test_display_rgb_and_concatenate_pads_sh():
    a, b = random_splats(4, 0, seed=4), random_splats(3, 3, seed=5)
    np.testing.assert_allclose(a.display_rgb(), np.clip(0.5 + SH_C0 * a.f_dc, 0, 1))
    both = Splats.concatenate([a, b])
    assert len(both) == 7 and both.sh_rest_count == 3
    assert not both.f_rest[:4].any() and np.array_equal(both.f_rest[4:], b.f_rest)


def test_compressed_ply_is_refused_by_name(tmp_path):
    torch = pytest.importorskip("torch")   # not in the numpy 2 venv (tests/test_numpy2.py)
    from gsplat.exporter import export_splats
    s = random_splats(300, 0, seed=6)
    export_splats(torch.from_numpy(s.means), torch.from_numpy(s.log_scales), torch.from_numpy(s.quats),
                  torch.from_numpy(s.opacity_logits), torch.from_numpy(s.f_dc)[:, None],
                  torch.from_numpy(s.f_rest), format="ply_compressed", save_to=str(tmp_path / "c.ply"))
    with pytest.raises(PlyError, match="compressed PLY"):
        read_ply(tmp_path / "c.ply")


def test_missing_properties_are_named(tmp_path):
    cols = columns(random_splats(5, 0))
    order = [n for n in cols if n not in ("opacity", "rot_3")]
    write_with_plyfile(tmp_path / "m.ply", cols, order)
    with pytest.raises(PlyError, match=r"missing the Gaussian properties opacity, rot_3.*incomplete"):
        read_ply(tmp_path / "m.ply")
    mesh = {"x": np.zeros(3), "y": np.zeros(3), "z": np.zeros(3), "red": np.zeros(3)}
    write_with_plyfile(tmp_path / "mesh.ply", mesh, list(mesh))
    with pytest.raises(PlyError, match="point cloud or mesh, not 3D Gaussians"):
        read_ply(tmp_path / "mesh.ply")


def test_unreadable_files_give_clear_errors(tmp_path):
    with pytest.raises(PlyError, match="Cannot open"):
        read_ply(tmp_path / "absent.ply")
    (tmp_path / "img.ply").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(PlyError, match="not a PLY file"):
        read_ply(tmp_path / "img.ply")
    write_ply(tmp_path / "t.ply", random_splats(10, 0))
    data = (tmp_path / "t.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-30])
    with pytest.raises(PlyError, match="truncated: the header announces 10 Gaussians but the file holds 9"):
        read_ply(tmp_path / "t.ply")
    cols = columns(random_splats(5, 0))
    cols.update(f_rest_0=np.zeros(5), f_rest_1=np.zeros(5))
    write_with_plyfile(tmp_path / "r.ply", cols, list(cols))
    with pytest.raises(PlyError, match="f_rest"):
        read_ply(tmp_path / "r.ply")
