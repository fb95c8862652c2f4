"""3DGS PLY I/O: bitwise round trips, gsplat's exporter, SuperSplat's compressed PLY, odd and broken files."""
import math

import numpy as np
import plyfile
import pytest
import torch
from gsplat.exporter import export_splats, sort_centers

from backend.errors import InputError
from backend.gaussians import SH_C0, Gaussians, sh_rest_count
from backend.ply import FORMAT_3DGS, FORMAT_SUPERSPLAT, body_size_check, property_names, read_ply, write_ply

FIELDS = ["means", "log_scales", "quats", "opacity_logits", "sh0", "sh_rest"]


def random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=gen) * 3,
        log_scales=torch.randn(n, 3, generator=gen) - 3,
        quats=torch.randn(n, 4, generator=gen),
        opacity_logits=torch.randn(n, generator=gen) * 2,
        sh0=torch.randn(n, 3, generator=gen),
        # inside [-3.9, 3.9]: away from the saturated ends of the compressed format's uint8 range
        sh_rest=(torch.rand(n, sh_rest_count(degree), 3, generator=gen) * 2 - 1) * 3.9,
    )


def assert_bitwise_equal(a: Gaussians, b: Gaussians) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == torch.float32, name
        assert x.shape == y.shape, name
        assert np.array_equal(x.numpy().view(np.uint32), y.numpy().view(np.uint32)), name


def write_vertex_ply(path, columns: dict[str, np.ndarray], extra: list[plyfile.PlyElement] = (), **kwargs):
    rows = np.empty(len(next(iter(columns.values()))), dtype=[(k, v.dtype) for k, v in columns.items()])
    for k, v in columns.items():
        rows[k] = v
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex"), *extra], **kwargs).write(str(path))


def standard_columns(g: Gaussians, dtype=np.float32) -> dict[str, np.ndarray]:
    f_rest = g.sh_rest.transpose(1, 2).reshape(len(g), -1)
    table = torch.cat([g.means, g.sh0, f_rest, g.opacity_logits[:, None], g.log_scales, g.quats], 1).numpy()
    names = [n for n in property_names(g.sh_degree) if n not in ("nx", "ny", "nz")]
    return {name: table[:, i].astype(dtype) for i, name in enumerate(names)}


# --- standard PLY -----------------------------------------------------------------------------------

@pytest.mark.parametrize("degree", [0, 1, 3])
def test_write_read_round_trip_is_bitwise(tmp_path, degree):
    g = random_gaussians(300, degree)
    path = tmp_path / "scene.ply"
    write_ply(path, g)
    back, report = read_ply(path)
    assert_bitwise_equal(back, g)
    assert (report.count, report.dropped_nonfinite, report.sh_degree) == (300, 0, degree)
    assert report.format == FORMAT_3DGS
    assert report.ignored_elements == [] and report.ignored_properties == [] and report.warnings == []
    header = plyfile.PlyData.read(str(path))
    assert header.byte_order == "<" and not header.text
    assert [p.name for p in header["vertex"].properties] == property_names(degree)
    assert {p.val_dtype for p in header["vertex"].properties} == {"f4"}
    assert not header["vertex"].data["nx"].any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]  # no temp file left beside it


def test_f_rest_is_channel_major(tmp_path):
    g = random_gaussians(2, 1)
    g.sh_rest = torch.arange(18, dtype=torch.float32).reshape(2, 3, 3)  # [n, k, channel]
    write_ply(tmp_path / "a.ply", g)
    data = plyfile.PlyData.read(str(tmp_path / "a.ply"))["vertex"].data
    # f_rest_0..2 are the red coefficients k=0..2, then green, then blue
    assert [float(data[0][f"f_rest_{i}"]) for i in range(9)] == [0, 3, 6, 1, 4, 7, 2, 5, 8]


def test_write_replaces_an_existing_file(tmp_path):
    path = tmp_path / "scene.ply"
    write_ply(path, random_gaussians(50, 3))
    write_ply(path, random_gaussians(7, 0, seed=1))
    back, report = read_ply(path)
    assert report.count == 7 and report.sh_degree == 0
    assert_bitwise_equal(back, random_gaussians(7, 0, seed=1))


def test_empty_file_loads_with_a_warning(tmp_path):
    write_ply(tmp_path / "empty.ply", random_gaussians(0, 0))
    g, report = read_ply(tmp_path / "empty.ply")
    assert len(g) == 0 and report.count == 0
    assert report.warnings == ["empty.ply holds no Gaussians"]


@pytest.mark.parametrize("degree", [0, 3])
def test_gsplat_export_loads_bitwise(tmp_path, degree):
    g = random_gaussians(500, degree)
    path = tmp_path / "gsplat.ply"
    # gsplat's "ply" format keeps the row order; it only drops rows with NaN/inf (there are none here)
    export_splats(g.means, g.log_scales, g.quats, g.opacity_logits, g.sh0[:, None, :], g.sh_rest,
                  format="ply", save_to=str(path))
    back, report = read_ply(path)
    assert_bitwise_equal(back, g)
    assert (report.count, report.sh_degree, report.format) == (500, degree, FORMAT_3DGS)


# --- SuperSplat compressed PLY ----------------------------------------------------------------------

def chunk_ranges(values: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Per row, the max - min of its chunk (rows in file order), per column."""
    out = torch.empty_like(values)
    for start in range(0, len(values), chunk):
        part = values[start:start + chunk]
        out[start:start + chunk] = part.max(0).values - part.min(0).values
    return out


@pytest.mark.parametrize("degree", [0, 3])
def test_gsplat_compressed_export_decodes_within_quantization_error(tmp_path, degree):
    g = random_gaussians(600, degree)
    g.opacity_logits[:5] = -9.0  # opacity < 1/255: gsplat's compressed exporter leaves these out
    path = tmp_path / "compressed.ply"
    export_splats(g.means, g.log_scales, g.quats, g.opacity_logits, g.sh0[:, None, :], g.sh_rest,
                  format="ply_compressed", save_to=str(path))
    back, report = read_ply(path)
    # Rebuild the exporter's row order: the same opacity filter, then its own Morton sort of the centres.
    kept = g[torch.sigmoid(g.opacity_logits) > 1 / 255]
    assert len(kept) <= 595
    assert (report.format, report.sh_degree, report.count) == (FORMAT_SUPERSPLAT, degree, len(kept))
    assert report.dropped_nonfinite == 0 and report.ignored_elements == []
    ref = kept[sort_centers(kept.means, torch.arange(len(kept)))]
    slack = 1e-5

    # positions and log-scales: 11, 10, 11 bits over each chunk's range, rounded to nearest
    step = torch.tensor([2047.0, 1023.0, 2047.0])
    for name in ["means", "log_scales"]:
        bound = chunk_ranges(getattr(ref, name)) / (2 * step) + slack
        assert bool(((getattr(back, name) - getattr(ref, name)).abs() <= bound).all()), name
    # colour: 8 bits over each chunk's rgb range, so sh0 is off by at most half a step / C0
    bound = chunk_ranges(ref.rgb) / (2 * 255 * SH_C0) + slack
    assert bool(((back.sh0 - ref.sh0).abs() <= bound).all())
    # opacity: 8 bits over [0, 1]
    assert bool(((back.opacities - ref.opacities).abs() <= 0.5 / 255 + slack).all())
    # rotation: unit quaternion with its largest component made positive; the other three in 10 bits
    # over [-1/sqrt2, 1/sqrt2] (error <= delta), the largest rebuilt from them (error <= 3 * delta)
    q = ref.quats / ref.quats.norm(dim=1, keepdim=True)
    q = q * torch.where(q.gather(1, q.abs().argmax(1, keepdim=True)) < 0, -1.0, 1.0)
    delta = 0.5 / 1023 * math.sqrt(2)
    assert bool(((back.quats - q).abs() <= 3 * delta + slack).all())
    # f_rest: uint8 over [-4, 4), truncated, decoded at the bin centre: at most half a bin, 4/256
    assert bool(((back.sh_rest - ref.sh_rest).abs() <= 4 / 256 + slack).all())
    assert back.sh_rest.shape == ref.sh_rest.shape


def test_compressed_bit_layout_without_chunk_colours(tmp_path):
    """A hand-packed SuperSplat file (one chunk, no colour ranges) decodes field by field."""
    chunk = np.zeros(1, dtype=[(n, "<f4") for n in
                               ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z", "min_scale_x",
                                "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z"]])
    chunk[0] = (-1, 0, 2, 3, 1, 6, -5, -4, -3, -1, -2, 0)
    vertex = np.zeros(1, dtype=[(n, "<u4") for n in
                                ["packed_position", "packed_rotation", "packed_scale", "packed_color"]])
    vertex[0] = ((2047 << 21) | (0 << 11) | 1023,
                 (2 << 30) | (767 << 20) | (256 << 10) | 511,
                 (0 << 21) | (1023 << 11) | 2047,
                 (255 << 24) | (0 << 16) | (51 << 8) | 128)
    sh = np.zeros(1, dtype=[(f"f_rest_{i}", "u1") for i in range(9)])
    sh[0] = (0, 255, 128, 1, 2, 3, 4, 5, 6)
    elements = [plyfile.PlyElement.describe(a, name)
                for a, name in [(chunk, "chunk"), (vertex, "vertex"), (sh, "sh")]]
    plyfile.PlyData(elements, byte_order="<").write(str(tmp_path / "c.ply"))
    g, report = read_ply(tmp_path / "c.ply")
    assert report.format == FORMAT_SUPERSPLAT and report.sh_degree == 1

    assert g.means[0].tolist() == pytest.approx([3.0, 0.0, 2 + 4 * 1023 / 2047])
    assert g.log_scales[0].tolist() == pytest.approx([-5.0, -2.0, 0.0])
    a, b, c = ((q / 1023 - 0.5) * math.sqrt(2) for q in (767, 256, 511))
    assert g.quats[0].tolist() == pytest.approx([a, b, math.sqrt(1 - a * a - b * b - c * c), c], abs=1e-6)
    assert (0.5 + SH_C0 * g.sh0[0]).tolist() == pytest.approx([1.0, 0.0, 0.2], abs=1e-6)
    assert g.opacities[0].item() == pytest.approx(128 / 255)
    centre = lambda q: ((q + 0.5) / 256 - 0.5) * 8  # noqa: E731
    # channel-major: f_rest_0..2 red k=0..2, f_rest_3..5 green, f_rest_6..8 blue; codes 0/255 saturate
    expected = [[-4.0, centre(1), centre(4)],
                [4.0, centre(2), centre(5)],
                [centre(128), centre(3), centre(6)]]
    assert g.sh_rest[0].flatten().tolist() == pytest.approx(np.ravel(expected).tolist())


# --- files from other tools -------------------------------------------------------------------------

def sharp_like_extras() -> list[plyfile.PlyElement]:
    def element(name, dtype, values):
        return plyfile.PlyElement.describe(np.array(values, dtype=[(name, dtype)]), name)
    return [element("extrinsic", "f4", [(v,) for v in np.eye(4).ravel()]),
            element("intrinsic", "f4", [(v,) for v in [500, 0, 320, 0, 500, 240, 0, 0, 1]]),
            element("image_size", "u4", [(640,), (480,)]),
            element("frame", "i4", [(1,), (2,)]),
            element("disparity", "f4", [(0.1,), (0.9,)]),
            element("color_space", "u1", [(1,)]),
            element("version", "u1", [(1,), (2,), (0,)])]


def test_shuffled_float64_file_without_normals_with_extras_and_a_nan_row(tmp_path):
    g = random_gaussians(40, 1)
    columns = standard_columns(g, np.float64)
    columns["opacity"][7] = np.nan
    columns["red"] = np.full(40, 200, dtype=np.uint8)
    names = list(columns)
    order = [names[i] for i in np.random.default_rng(0).permutation(len(names))]
    write_vertex_ply(tmp_path / "odd.ply", {n: columns[n] for n in order}, sharp_like_extras())
    back, report = read_ply(tmp_path / "odd.ply")
    keep = torch.ones(40, dtype=torch.bool)
    keep[7] = False
    # float64 in the file -> float32 values, which here are the original float32 values exactly
    assert_bitwise_equal(back, g[keep])
    assert (report.count, report.dropped_nonfinite, report.sh_degree) == (39, 1, 1)
    assert report.ignored_elements == ["extrinsic", "intrinsic", "image_size", "frame", "disparity",
                                       "color_space", "version"]
    assert report.ignored_properties == ["red"]
    assert any("1 of 40" in w for w in report.warnings)


@pytest.mark.parametrize("encoding", [{"text": True}, {"byte_order": ">"}])
def test_ascii_and_big_endian_files(tmp_path, encoding):
    g = random_gaussians(20, 3)
    write_vertex_ply(tmp_path / "other.ply", standard_columns(g), **encoding)
    back, report = read_ply(tmp_path / "other.ply")
    assert report.count == 20 and report.sh_degree == 3
    if encoding.get("text"):  # ascii keeps enough digits for float32 but not every bit
        for name in FIELDS:
            assert torch.allclose(getattr(back, name), getattr(g, name), rtol=1e-6, atol=1e-7), name
    else:
        assert_bitwise_equal(back, g)


# --- broken files -----------------------------------------------------------------------------------

def test_missing_properties_are_named(tmp_path):
    columns = standard_columns(random_gaussians(5, 0))
    del columns["opacity"], columns["rot_2"]
    write_vertex_ply(tmp_path / "bad.ply", columns)
    with pytest.raises(InputError) as err:
        read_ply(tmp_path / "bad.ply")
    assert "bad.ply" in err.value.message and "opacity, rot_2" in err.value.message
    assert "Gaussian Splatting" in err.value.hint


def test_plain_point_cloud_is_rejected(tmp_path):
    write_vertex_ply(tmp_path / "points.ply", {"x": np.zeros(3, "f4"), "y": np.zeros(3, "f4"),
                                               "z": np.zeros(3, "f4"), "red": np.zeros(3, "u1")})
    with pytest.raises(InputError, match="f_dc_0, f_dc_1, f_dc_2, opacity, scale_0"):
        read_ply(tmp_path / "points.ply")


def test_missing_position_is_named(tmp_path):
    columns = standard_columns(random_gaussians(5, 0))
    del columns["x"]
    write_vertex_ply(tmp_path / "nox.ply", columns)
    with pytest.raises(InputError) as err:
        read_ply(tmp_path / "nox.ply")
    assert err.value.message.endswith("nox.ply: the 'vertex' element lacks the properties x")


def test_f_rest_count_must_match_a_degree(tmp_path):
    columns = standard_columns(random_gaussians(5, 1))
    columns["f_rest_9"] = columns["f_rest_0"]
    write_vertex_ply(tmp_path / "ten.ply", columns)
    with pytest.raises(InputError, match="10 f_rest_"):
        read_ply(tmp_path / "ten.ply")
    del columns["f_rest_9"], columns["f_rest_4"]
    write_vertex_ply(tmp_path / "gap.ply", columns)
    with pytest.raises(InputError, match="lacks f_rest_4 "):
        read_ply(tmp_path / "gap.ply")


def test_not_a_ply(tmp_path):
    (tmp_path / "scene.ply").write_text("solid cube\nfacet normal 0 0 1\n")
    with pytest.raises(InputError, match="not a readable PLY"):
        read_ply(tmp_path / "scene.ply")
    with pytest.raises(InputError, match="no such file"):
        read_ply(tmp_path / "missing.ply")


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.ply"
    write_ply(path, random_gaussians(100, 0))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="cut short") as err:
        read_ply(path)
    assert "truncated" in err.value.hint


def test_ascii_body_size_counts_values_not_bytes(tmp_path):
    """An ascii value takes at least 2 characters ("0 "), whatever its binary type's size: a tiny valid file
    (3 floats of 4 bytes per vertex, written in 14 characters) is not refused as cut short."""
    header = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
    path = tmp_path / "tiny.ply"
    path.write_text(header + "end_header\n0 0 1\n1 0.5 0\n")
    assert body_size_check(path) is None
    assert len(plyfile.PlyData.read(str(path))["vertex"]) == 2
    path.write_text(header + "end_header\n0 0 1\n")
    with pytest.raises(InputError, match="cut short"):
        body_size_check(path)


def test_no_vertex_element(tmp_path):
    faces = np.zeros(2, dtype=[("vertex_indices", "i4", (3,))])
    plyfile.PlyData([plyfile.PlyElement.describe(faces, "face")]).write(str(tmp_path / "faces.ply"))
    with pytest.raises(InputError, match="no 'vertex' element .*face"):
        read_ply(tmp_path / "faces.ply")
