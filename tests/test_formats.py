"""SPZ, SuperSplat compressed PLY and .splat codecs against files made by independent implementations
(PlayCanvas' splat-transform with Niantic's SPZ library, gsplat's exporter): tests/fixtures/splat_formats."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from wonderland_blender.formats import FormatError, read_gaussians
from wonderland_blender.formats.compressed_ply import read_compressed_ply
from wonderland_blender.formats.splat import read_splat
from wonderland_blender.formats.spz import encode_spz, read_spz, swap_rdf_rub, write_spz
from wonderland_blender.plyio import SH_C0, Splats, read_ply

FIXTURES = Path(__file__).parent / "fixtures" / "splat_formats"


@pytest.fixture(scope="module")
def source() -> Splats:
    return read_ply(FIXTURES / "source.ply").splats


def sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def same_rotation(a, b, tol):
    """Quaternions equal up to sign and normalization, within `tol` per component."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    b = b * np.sign((a * b).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(a, b, atol=tol)


def by_position(ref: Splats, got: Splats, tol: float) -> Splats:
    """`ref` reordered to `got`'s rows (writers may sort by Morton code), each matched within `tol`."""
    dist = np.linalg.norm(got.means[:, None] - ref.means[None], axis=2)
    order = dist.argmin(axis=1)
    assert len(got) == len(ref) and sorted(order) == list(range(len(ref)))
    assert dist[np.arange(len(got)), order].max() <= tol
    return ref.select(order)


def assert_close(a: Splats, b: Splats, *, pos, dc, rest, alpha, log_scale, rot):
    np.testing.assert_allclose(a.means, b.means, atol=pos)
    np.testing.assert_allclose(a.f_dc, b.f_dc, atol=dc)
    assert a.sh_rest_count == b.sh_rest_count
    np.testing.assert_allclose(a.f_rest, b.f_rest, atol=rest)
    np.testing.assert_allclose(sigmoid(a.opacity_logits), sigmoid(b.opacity_logits), atol=alpha)
    np.testing.assert_allclose(a.log_scales, b.log_scales, atol=log_scale)
    same_rotation(a.quats, b.quats, rot)


# SPZ quantization (nianticlabs/spz): half a step of each field; SH codes (steps of 1/128) are rounded
# to buckets of 8 (degree 1) or 16 (higher degrees) codes.
SPZ_TOLERANCE = dict(pos=0.5 / 4096 + 1e-6, dc=0.5 / (0.15 * 255) + 1e-5, alpha=0.5 / 255 + 1e-6,
                     log_scale=0.5 / 16 + 1e-6, rot=2e-3)
SH_REST = 8.5 / 128 + 1e-6


def test_spz_from_splat_transform_reads_within_quantization(source):
    got = read_spz(FIXTURES / "source.spz")
    assert got.dropped == 0
    assert_close(got.splats, source, rest=SH_REST, **SPZ_TOLERANCE)
    sh1, higher = np.abs(got.splats.f_rest - source.f_rest)[:, :3], np.abs(got.splats.f_rest - source.f_rest)[:, 3:]
    assert sh1.max() <= 4.5 / 128 + 1e-6 and higher.max() <= SH_REST


def test_spz_encoding_is_byte_identical_to_the_reference(source):
    assert encode_spz(source) == gzip.decompress((FIXTURES / "source.spz").read_bytes())


def test_spz_we_wrote_reads_back_in_splat_transform(source):
    """ours.spz was written by write_spz; splat-transform decoded it to ours_by_splat_transform.ply."""
    theirs = read_ply(FIXTURES / "ours_by_splat_transform.ply").splats
    assert_close(theirs, source, rest=SH_REST, **SPZ_TOLERANCE)
    assert_close(read_spz(FIXTURES / "ours.spz").splats, theirs, pos=1e-6, dc=1e-5, rest=1e-6, alpha=1e-6,
                 log_scale=1e-6, rot=1e-6)


def test_spz_write_then_read_round_trip(tmp_path, source):
    write_spz(tmp_path / "a.spz", source)
    assert gzip.decompress((tmp_path / "a.spz").read_bytes()) == encode_spz(source)
    assert_close(read_spz(tmp_path / "a.spz").splats, source, rest=SH_REST, **SPZ_TOLERANCE)
    assert [p.name for p in tmp_path.iterdir()] == ["a.spz"]  # no temporary file left


def test_spz_version_2_from_spz_js_reads_within_quantization(source):
    """spz-js writes version 2: x y z of the w ≥ 0 quaternion in 8 bits each, w derived (so its error grows as
    w nears 0, why version 3 changed the encoding); like Niantic's early code it stores the PLY frame
    without turning it to RUB, so the reader's RUB → PLY turn is undone here (the turn is its own inverse)."""
    got = swap_rdf_rub(read_spz(FIXTURES / "spzjs_v2.spz").splats)
    assert_close(got, source, rest=SH_REST, **{**SPZ_TOLERANCE, "rot": 0.05})
    q = source.quats / np.linalg.norm(source.quats, axis=1, keepdims=True)
    upright = np.abs(q[:, 0]) > 0.5
    same_rotation(got.quats[upright], source.quats[upright], 1.5 / 127.5)


def test_spz_refuses_what_it_cannot_read_with_a_reason(tmp_path, source):
    (tmp_path / "v4.spz").write_bytes(b"NGSP" + struct.pack("<I", 4) + bytes(24))
    with pytest.raises(FormatError, match="version 4.*--spz-version 3"):
        read_spz(tmp_path / "v4.spz")
    (tmp_path / "plain.spz").write_bytes(b"not gzip at all")
    with pytest.raises(FormatError, match="not gzip"):
        read_spz(tmp_path / "plain.spz")
    data = gzip.decompress((FIXTURES / "source.spz").read_bytes())
    (tmp_path / "short.spz").write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(FormatError, match="truncated"):
        read_spz(tmp_path / "short.spz")
    far = source.select(np.arange(2))  # a copy
    far.means[0, 0] = 5000.0
    with pytest.raises(FormatError, match="±2048 units"):
        write_spz(tmp_path / "far.spz", far)
    assert not (tmp_path / "far.spz").exists()


# SuperSplat compressed PLY: per chunk 11/10/11-bit positions and log-scales, 8-bit colour and opacity,
# 10-bit smallest-three rotations, 8-bit SH over [-4, 4].
def test_compressed_ply_from_splat_transform_matches_its_own_decoder(source):
    ours = read_compressed_ply(FIXTURES / "source.compressed.ply")
    theirs = read_ply(FIXTURES / "compressed_by_splat_transform.ply").splats
    assert ours.dropped == 0
    assert_close(ours.splats, theirs, pos=1e-6, dc=1e-5, rest=1e-6, alpha=1e-6, log_scale=1e-5, rot=1e-6)
    extent = float((source.means.max(axis=0) - source.means.min(axis=0)).max())
    ref = by_position(source, ours.splats, tol=extent / 1023 * 2)
    scale_extent = float((source.log_scales.max(axis=0) - source.log_scales.min(axis=0)).max())
    assert_close(ours.splats, ref, pos=extent / 1023, dc=1 / 255 / SH_C0 * 2, rest=8 / 256 + 1e-6,
                 alpha=1 / 255, log_scale=scale_extent / 1023, rot=2e-3)


def test_gaussians_reader_picks_the_format_by_content(tmp_path):
    plain = read_gaussians(FIXTURES / "source.ply")
    assert plain.splats.means.tobytes() == read_ply(FIXTURES / "source.ply").splats.means.tobytes()
    compressed = read_gaussians(FIXTURES / "source.compressed.ply")
    np.testing.assert_array_equal(compressed.splats.means,
                                  read_compressed_ply(FIXTURES / "source.compressed.ply").splats.means)
    (tmp_path / "renamed.ply").write_bytes((FIXTURES / "source.spz").read_bytes())
    np.testing.assert_array_equal(read_gaussians(tmp_path / "renamed.ply").splats.means,
                                  read_spz(FIXTURES / "source.spz").splats.means)
    with pytest.raises(FormatError, match="Cannot open"):
        read_gaussians(tmp_path / "missing.spz")
    (tmp_path / "x.obj").write_bytes(b"v 0 0 0\n")
    with pytest.raises(FormatError, match="not a splat file"):
        read_gaussians(tmp_path / "x.obj")


# antimatter15 .splat: float32 positions and scales, 8-bit RGBA and rotation, no SH beyond DC.
def test_splat_from_gsplat_matches_splat_transform_and_source(source):
    ours = read_splat(FIXTURES / "source.splat")
    theirs = read_ply(FIXTURES / "splat_by_splat_transform.ply").splats
    np.testing.assert_array_equal(ours.splats.means, theirs.means)
    assert_close(ours.splats, theirs, pos=0, dc=1e-5, rest=0, alpha=1e-6, log_scale=1e-6, rot=1e-2)
    ref = by_position(source, ours.splats, tol=0)
    shown = np.clip(0.5 + SH_C0 * ref.f_dc, 0, 1)  # gsplat clamps colours to the displayable range
    np.testing.assert_allclose(0.5 + SH_C0 * ours.splats.f_dc, shown, atol=1 / 255 + 1e-6)
    assert ours.splats.sh_rest_count == 0
    np.testing.assert_allclose(sigmoid(ours.splats.opacity_logits), sigmoid(ref.opacity_logits), atol=1 / 255)
    np.testing.assert_allclose(ours.splats.log_scales, ref.log_scales, atol=1e-6)
    same_rotation(ours.splats.quats, ref.quats, 2 / 128)


def test_splat_refuses_a_partial_record(tmp_path):
    (tmp_path / "bad.splat").write_bytes((FIXTURES / "source.splat").read_bytes()[:-5])
    with pytest.raises(FormatError, match="32-byte"):
        read_splat(tmp_path / "bad.splat")
