"""File ▸ Import of SPZ, compressed PLY and .splat, and File ▸ Export as SPZ, in the real bpy."""
from __future__ import annotations

import gzip
from pathlib import Path

import bpy
import numpy as np
import pytest

from wonderland_blender import ops_io
from wonderland_blender.formats import read_gaussians
from wonderland_blender.formats.spz import encode_spz, read_spz
from wonderland_blender.plyio import read_ply
from wonderland_blender.pointcloud import read_splats

FIXTURES = Path(__file__).parents[1] / "fixtures" / "splat_formats"


@pytest.fixture
def io_ops():
    ops_io.register()
    yield
    ops_io.unregister()


@pytest.mark.parametrize("name", ["source.spz", "source.compressed.ply", "source.splat"])
def test_import_reads_each_format_into_a_gaussian_cloud(io_ops, name):
    assert bpy.ops.wonderland.import_gaussians(filepath=str(FIXTURES / name)) == {'FINISHED'}
    obj = bpy.context.active_object
    expected = read_gaussians(FIXTURES / name).splats
    assert obj.type == 'POINTCLOUD' and len(obj.data.points) == len(expected) == 40
    got = read_splats(obj)
    np.testing.assert_allclose(got.means, expected.means, atol=1e-6)
    np.testing.assert_allclose(got.f_dc, expected.f_dc, atol=1e-5)
    np.testing.assert_allclose(got.f_rest, expected.f_rest, atol=1e-6)
    np.testing.assert_allclose(got.log_scales, expected.log_scales, atol=1e-6)


def test_import_refuses_a_broken_file_with_its_reason(io_ops, tmp_path):
    (tmp_path / "v4.spz").write_bytes(b"NGSP\x04\x00\x00\x00" + bytes(24))
    with pytest.raises(RuntimeError, match="version 4"):
        bpy.ops.wonderland.import_gaussians(filepath=str(tmp_path / "v4.spz"))
    assert not bpy.data.objects


def test_export_spz_writes_what_niantic_encodes(io_ops, tmp_path):
    bpy.ops.wonderland.import_gaussians(filepath=str(FIXTURES / "source.ply"))
    out = tmp_path / "out.spz"
    assert bpy.ops.wonderland.export_spz(filepath=str(out)) == {'FINISHED'}
    source = read_ply(FIXTURES / "source.ply").splats
    assert gzip.decompress(out.read_bytes()) == encode_spz(source)
    assert gzip.decompress(out.read_bytes()) == gzip.decompress((FIXTURES / "source.spz").read_bytes())
    assert len(read_spz(out).splats) == 40


def test_forward_minus_y_up_minus_z_turns_an_early_spz_back(io_ops):
    """spz-js (like Niantic's early code) stored the PLY's axes; the README's import options undo our turn."""
    bpy.ops.wonderland.import_gaussians(filepath=str(FIXTURES / "spzjs_v2.spz"), axis_forward='-Y', axis_up='-Z')
    got = read_splats(bpy.context.active_object)
    source = read_ply(FIXTURES / "source.ply").splats
    np.testing.assert_allclose(got.means, source.means, atol=0.5 / 4096 + 1e-6)
    np.testing.assert_allclose(got.f_rest, source.f_rest, atol=8.5 / 128 + 1e-6)
