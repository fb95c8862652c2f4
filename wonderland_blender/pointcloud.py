"""Gaussians ⇄ Blender PointCloud objects, whole arrays at a time (no per-point Python).

One attribute per quantity, in the values an artist edits (the attribute contract): `position`,
`splat_color` (linear RGB; not `color`, which Cycles reserves for volumes), `opacity` (0..1), `scale`
(per-axis std-dev), `rotation` (unit wxyz), `sh_rest_NN` (SH beyond degree 0) and `radius` (display only,
derived). There are no raw twins: `read_splats` converts these back to the PLY's raw values (sRGB → f_dc,
logit, log), so whatever edits them (attribute editor, Edit Mode, geometry nodes) is what renders and
exports. Deleted points are gone, and the object transform is applied. Recipe: shared/design/gaussians.md.
"""
from __future__ import annotations

import re

import bpy
import numpy as np
from mathutils import Matrix

from .display import add_display
from .plyio import SH_C0, Splats

COLLECTION_NAME = "Wonderland"
RADIUS_PER_SCALE = 1.0  # radius = this × mean std-dev: the points' size with the display modifier off
# The attributes that make a point cloud a Gaussian one, and their types.
GAUSSIAN_ATTRIBUTES = {"splat_color": 'FLOAT_COLOR', "opacity": 'FLOAT', "scale": 'FLOAT_VECTOR',
                       "rotation": 'QUATERNION'}
_OPACITY_MAX = 1.0 - 2.0 ** -24  # the largest float32 below 1: its logit (16.6) is the largest exported
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_SH_REST = re.compile(r"sh_rest_(\d+)")


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve inverted (pow as exp∘log: numpy vectorizes those, not pow), in float64 for
    float64 input, else float32. Values outside 0..1 keep going (linear below 0, the power curve above 1),
    so SH colours beyond the display range survive a round trip through `linear_to_srgb`."""
    c = np.asarray(c)
    c = c if c.dtype == np.float64 else c.astype(np.float32)
    one = c.dtype.type(1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = np.exp(c.dtype.type(2.4) * np.log((c + c.dtype.type(0.055)) / c.dtype.type(1.055)))
    return np.where(c <= 0.04045, c * (one / c.dtype.type(12.92)), curve)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve, float64, the exact inverse of `srgb_to_linear` (also outside 0..1)."""
    c = np.asarray(c, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = 1.055 * np.exp(np.log(c) / 2.4) - 0.055
    return np.where(c <= 0.04045 / 12.92, c * 12.92, curve)


def f_dc_to_linear(f_dc: np.ndarray) -> np.ndarray:
    """SH DC coefficients → linear RGB (float64), unclamped: the display colour 0.5 + C0·f_dc is sRGB."""
    return srgb_to_linear(0.5 + SH_C0 * np.asarray(f_dc, np.float64))


def linear_to_f_dc(rgb: np.ndarray) -> np.ndarray:
    """Linear RGB → SH DC coefficients (float32), the inverse of `f_dc_to_linear`."""
    return ((linear_to_srgb(rgb) - 0.5) / SH_C0).astype(np.float32)


def opacity_to_logit(opacity: np.ndarray) -> np.ndarray:
    """Opacity → logit (float32); opacities of 0 and 1 (or beyond, after edits) are clamped so the logit
    stays finite (±87 and 16.6)."""
    p = np.clip(np.asarray(opacity, np.float64), _FLOAT32_TINY, _OPACITY_MAX)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def _normalized_quats(q: np.ndarray) -> np.ndarray:
    """Unit quaternions; a zero quaternion becomes the identity."""
    norm = np.sqrt(np.einsum("ij,ij->i", q, q))
    zero = norm == 0
    if zero.any():
        q, norm = q.copy(), norm.copy()
        q[zero] = (1.0, 0.0, 0.0, 0.0)
        norm[zero] = 1.0
    return q / norm[:, None]


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b of wxyz quaternions (b first, then a); a is [4] or [N, 4]."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def sh_basis(degree: int, dirs: np.ndarray) -> np.ndarray:
    """[M, 3] unit directions → [M, (degree+1)²] real SH basis values in the order and signs of 3DGS
    and gsplat (Sloan's formulas, as backend/render/sh.py), degree ≤ 4."""
    if not 0 <= degree <= 4:
        raise ValueError(f"SH degree {degree} is not supported (0..4)")
    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    out = [np.full_like(x, 0.2820947917738781)]
    if degree >= 1:
        out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    z2, fc1, fs1 = z * z, x * x - y * y, 2 * x * y
    sh6 = 0.9461746957575601 * z2 - 0.3153915652525201
    if degree >= 2:
        out += [0.5462742152960395 * fs1, -1.092548430592079 * z * y, sh6, -1.092548430592079 * z * x,
                0.5462742152960395 * fc1]
    fc2, fs2 = x * fc1 - y * fs1, x * fs1 + y * fc1
    sh12 = z * (1.865881662950577 * z2 - 1.119528997770346)
    if degree >= 3:
        tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
        out += [-0.5900435899266435 * fs2, 1.445305721320277 * z * fs1, tmp_c * y, sh12, tmp_c * x,
                1.445305721320277 * z * fc1, -0.5900435899266435 * fc2]
    if degree >= 4:
        fc3, fs3 = x * fc2 - y * fs2, x * fs2 + y * fc2
        tmp_d = z * (-4.683325804901025 * z2 + 2.007139630671868)
        tmp_c = 3.31161143515146 * z2 - 0.47308734787878
        out += [0.6258357354491763 * fs3, -1.770130769779931 * z * fs2, tmp_c * fs1, tmp_d * y,
                1.984313483298443 * z * sh12 - 1.006230589874905 * sh6, tmp_d * x, tmp_c * fc1,
                -1.770130769779931 * z * fc2, 0.6258357354491763 * fc3]
    return np.stack(out, axis=-1)


def rotate_sh_rest(f_rest: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """SH coefficients beyond DC [N, K, 3] of Gaussians turned by the rotation matrix `rot`: the new
    colour seen along rot·d is the old colour seen along d.

    Each band's rotation matrix is found by least squares on sample directions (exact up to rounding:
    a band is closed under rotation), so no Wigner-D formulas are needed.
    """
    k = f_rest.shape[1]
    degree = round((k + 1) ** 0.5) - 1
    dirs = np.random.default_rng(0).normal(size=(4 * (k + 1), 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # basis(rot⁻¹ d) = basis(d) @ X, and the rotated coefficients are X @ c.
    x = np.linalg.lstsq(sh_basis(degree, dirs)[:, 1:], sh_basis(degree, dirs @ rot)[:, 1:], rcond=None)[0]
    return np.einsum("ji,nic->njc", x, f_rest.astype(np.float64)).astype(np.float32)


def _matrices_to_quats(m: np.ndarray) -> np.ndarray:
    """[N, 3, 3] rotation matrices → [N, 4] unit wxyz quaternions (Shepperd's method, branch per row)."""
    trace = np.trace(m, axis1=1, axis2=2)
    diagonal = np.diagonal(m, axis1=1, axis2=2)
    pick = np.where(trace > diagonal.max(axis=1), 3, diagonal.argmax(axis=1))  # largest of 4|w|², 4|x|²…
    q = np.empty((len(m), 4))
    w = pick == 3
    r = np.sqrt(np.maximum(1.0 + trace[w], 1e-300)) * 2
    q[w] = np.stack([r / 4, (m[w, 2, 1] - m[w, 1, 2]) / r, (m[w, 0, 2] - m[w, 2, 0]) / r,
                     (m[w, 1, 0] - m[w, 0, 1]) / r], axis=1)
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        sel = pick == i
        mm = m[sel]
        r = np.sqrt(np.maximum(1.0 + mm[:, i, i] - mm[:, j, j] - mm[:, k, k], 1e-300)) * 2
        out = np.empty((len(mm), 4))
        out[:, 0] = (mm[:, k, j] - mm[:, j, k]) / r
        out[:, 1 + i] = r / 4
        out[:, 1 + j] = (mm[:, j, i] + mm[:, i, j]) / r
        out[:, 1 + k] = (mm[:, k, i] + mm[:, i, k]) / r
        q[sel] = out
    return q


def _quats_to_matrices(q: np.ndarray) -> np.ndarray:
    """[N, 4] unit wxyz quaternions → [N, 3, 3] rotation matrices."""
    w, x, y, z = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1).reshape(-1, 3, 3)


def is_similarity(matrix) -> bool:
    """Whether the linear part of a 4×4 transform is a rotation times a positive uniform scale."""
    a = np.array(matrix, np.float64).reshape(4, 4)[:3, :3]
    gram = a.T @ a
    uniform = np.eye(3) * np.trace(gram) / 3
    return np.linalg.det(a) > 0 and np.allclose(gram, uniform, rtol=0, atol=1e-6 * np.trace(gram))


def transform_warning(matrix, splats: Splats) -> str | None:
    """What a transform cannot carry over exactly, or None: shapes always are exact (the covariance
    A·Σ·Aᵀ is re-diagonalized), but view-dependent colour (SH beyond degree 0) follows only the nearest
    rotation or mirror when the transform also stretches or shears."""
    if splats.sh_rest_count and not is_similarity(matrix):
        return ("its non-uniform scale or shear is applied exactly to the Gaussians' shapes, but their "
                "view-dependent colour (SH) only follows the nearest rotation; apply a uniform scale "
                "for an exact result")
    return None


def transform_splats(splats: Splats, matrix) -> Splats:
    """Apply a 4×4 affine transform: positions fully; SH coefficients by its nearest rotation (or mirror);
    shapes exactly: a similarity turns the quaternions and shifts the log-scales, anything else (non-uniform
    scale, shear, mirror) re-diagonalizes each covariance A·R·S²·Rᵀ·Aᵀ. Identity returns the input
    unchanged, so untransformed objects keep every bit."""
    m = np.array(matrix, np.float64).reshape(4, 4)
    if np.array_equal(m, np.eye(4)):
        return splats
    a, t = m[:3, :3], m[:3, 3]
    det = np.linalg.det(a)
    if abs(det) < 1e-12:
        raise ValueError("The object transform flattens the Gaussians (a zero scale); give the object a "
                         "non-zero scale on every axis and try again.")
    u, _, vt = np.linalg.svd(a)
    orthogonal = u @ vt  # nearest rotation or mirror (polar decomposition)
    f_rest = rotate_sh_rest(splats.f_rest, orthogonal) if splats.sh_rest_count else splats.f_rest
    if is_similarity(m):
        q_rot = np.array(Matrix(orthogonal.tolist()).to_quaternion(), np.float64)
        log_scales = splats.log_scales.astype(np.float64) + np.log(det) / 3
        quats = _quat_multiply(q_rot, splats.quats)
    else:
        rot = _quats_to_matrices(_normalized_quats(splats.quats.astype(np.float64)))
        axes = a @ rot * np.exp(splats.log_scales.astype(np.float64))[:, None, :]  # A·R·S
        variances, vectors = np.linalg.eigh(axes @ axes.transpose(0, 2, 1))
        vectors[np.linalg.det(vectors) < 0, :, 0] *= -1  # a proper rotation
        log_scales = 0.5 * np.log(np.maximum(variances, 1e-300))
        quats = _matrices_to_quats(vectors)
    return Splats(means=(splats.means.astype(np.float64) @ a.T + t).astype(np.float32), f_dc=splats.f_dc,
                  f_rest=f_rest, opacity_logits=splats.opacity_logits, log_scales=log_scales.astype(np.float32),
                  quats=quats.astype(np.float32))


def is_gaussian_object(obj) -> bool:
    """A point cloud made by this add-on (it carries the Gaussian attributes)."""
    return obj is not None and obj.type == 'POINTCLOUD' and \
        all(name in obj.data.attributes for name in GAUSSIAN_ATTRIBUTES)


def _layer_collection(layer_collection, name: str):
    if layer_collection.name == name:
        return layer_collection
    for child in layer_collection.children:
        found = _layer_collection(child, name)
        if found is not None:
            return found
    return None


def ensure_collection(scene, view_layer) -> bpy.types.Collection:
    """The "Wonderland" collection, created and linked into the scene if missing, and shown in the view
    layer so that what is imported into it is seen."""
    coll = bpy.data.collections.get(COLLECTION_NAME)
    if coll is None:
        coll = bpy.data.collections.new(COLLECTION_NAME)
    if coll not in scene.collection.children_recursive:
        scene.collection.children.link(coll)
    layer = _layer_collection(view_layer.layer_collection, coll.name)
    layer.exclude = False
    layer.hide_viewport = False
    return coll


def _set(attributes, name: str, kind: str, prop: str, values: np.ndarray) -> None:
    attr = attributes.new(name, kind, 'POINT')
    attr.data.foreach_set(prop, np.ascontiguousarray(values, np.float32).ravel())


def _get(attributes, name: str, prop: str, n: int, width: int) -> np.ndarray:
    out = np.empty(n * width, np.float32)
    attributes[name].data.foreach_get(prop, out)
    return out.reshape(n, width) if width > 1 else out


def _select_only(view_layer, obj) -> None:
    for other in view_layer.objects:
        if other.select_get(view_layer=view_layer):
            other.select_set(False, view_layer=view_layer)
    obj.select_set(True, view_layer=view_layer)
    view_layer.objects.active = obj


def attribute_values(splats: Splats) -> dict[str, tuple[str, str, np.ndarray]]:
    """The point attributes holding `splats`: {name: (type, foreach property, float32 values)}."""
    n = len(splats)
    with np.errstate(over="ignore"):  # exp overflows to inf for logits below -88: opacity 0, as it should
        opacity = 1.0 / (1.0 + np.exp(-splats.opacity_logits.astype(np.float64)))
    scales = np.exp(splats.log_scales.astype(np.float64))
    color = np.ones((n, 4), np.float32)
    color[:, :3] = f_dc_to_linear(splats.f_dc)
    values = {"splat_color": ('FLOAT_COLOR', "color", color),
              "opacity": ('FLOAT', "value", opacity),
              "scale": ('FLOAT_VECTOR', "vector", scales),
              "rotation": ('QUATERNION', "value", _normalized_quats(splats.quats)),
              "radius": ('FLOAT', "value", scales.mean(axis=1) * RADIUS_PER_SCALE)}
    for k in range(splats.sh_rest_count):
        values[f"sh_rest_{k:02d}"] = ('FLOAT_VECTOR', "vector", splats.f_rest[:, k, :])
    return {name: (kind, prop, np.ascontiguousarray(v, np.float32)) for name, (kind, prop, v) in values.items()}


def _mesh_with_attributes(name: str, splats: Splats) -> bpy.types.Mesh:
    mesh = bpy.data.meshes.new(name)
    try:
        mesh.vertices.add(len(splats))
        attrs = mesh.attributes
        attrs["position"].data.foreach_set("vector", np.ascontiguousarray(splats.means, np.float32).ravel())
        for attr_name, (kind, prop, values) in attribute_values(splats).items():
            _set(attrs, attr_name, kind, prop, values)
    except BaseException:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


def create_object(context, name: str, splats: Splats) -> bpy.types.Object:
    """A new PointCloud object holding `splats`, in the "Wonderland" collection, selected and active.

    Call in object mode. On failure nothing new stays in the .blend (no object, mesh, collection or
    material).
    """
    mesh = _mesh_with_attributes(name, splats)
    obj = bpy.data.objects.new(name, mesh)
    view_layer = context.view_layer
    # Convert in the scene's root collection, which is always in the view layer; move it afterwards.
    context.scene.collection.objects.link(obj)
    try:
        _select_only(view_layer, obj)
        with context.temp_override(active_object=obj, object=obj, selected_objects=[obj],
                                   selected_editable_objects=[obj]):
            bpy.ops.object.convert(target='POINTCLOUD')
        if obj.type != 'POINTCLOUD':
            raise RuntimeError("Blender could not convert the imported mesh to a point cloud "
                               "(object.convert to POINTCLOUD needs Blender 4.5 or newer).")
    except BaseException:
        cloud = obj.data if obj.type == 'POINTCLOUD' else None
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
        if cloud is not None:
            bpy.data.pointclouds.remove(cloud)
        raise
    if mesh.users == 0:
        bpy.data.meshes.remove(mesh)
    cloud = obj.data
    cloud.name = name
    for helper in [a.name for a in cloud.attributes if a.name.startswith(".")]:
        cloud.attributes.remove(cloud.attributes[helper])
    add_display(obj)
    ensure_collection(context.scene, view_layer).objects.link(obj)
    context.scene.collection.objects.unlink(obj)
    _select_only(view_layer, obj)
    return obj


def read_splats(obj) -> Splats:
    """The Gaussians of a point-cloud object (original or evaluated: pass the evaluated one so modifiers
    count) converted back to raw PLY values, with the object's world transform applied.

    Round trip of an import (float32 attributes): f_dc within 1e-6·(1 + |f_dc|), log-scales within 1e-6,
    rotations normalized, opacity logits exact to float32 opacity (|Δσ| ≤ 6e-8, logits clamped to 16.6).
    """
    if not is_gaussian_object(obj):
        raise ValueError(f"'{obj.name}' is not a Wonderland Gaussian point cloud (it lacks the "
                         f"attributes {', '.join(GAUSSIAN_ATTRIBUTES)}); import a 3DGS PLY first.")
    attrs = obj.data.attributes
    n = len(obj.data.points)
    rest_ids = sorted(int(m.group(1)) for a in attrs if (m := _SH_REST.fullmatch(a.name)))
    if rest_ids != list(range(len(rest_ids))):
        raise ValueError(f"'{obj.name}' has SH attributes sh_rest_* with gaps ({rest_ids}); "
                         "re-import the PLY.")
    f_rest = np.empty((n, len(rest_ids), 3), np.float32)
    for k in rest_ids:
        f_rest[:, k, :] = _get(attrs, f"sh_rest_{k:02d}", "vector", n, 3)
    scales = np.maximum(_get(attrs, "scale", "vector", n, 3).astype(np.float64), _FLOAT32_TINY)
    splats = Splats(means=_get(attrs, "position", "vector", n, 3),
                    f_dc=linear_to_f_dc(_get(attrs, "splat_color", "color", n, 4)[:, :3]), f_rest=f_rest,
                    opacity_logits=opacity_to_logit(_get(attrs, "opacity", "value", n, 1)),
                    log_scales=np.log(scales).astype(np.float32),
                    quats=_normalized_quats(_get(attrs, "rotation", "value", n, 4)).astype(np.float32))
    return transform_splats(splats, obj.matrix_world)
