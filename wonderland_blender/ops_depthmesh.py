"""Wonderland ▸ Input View as Mesh: the active result's detail layer as a textured depth mesh.

A mesh renders natively in EEVEE and Cycles (shadows, occlusion, displacement, physics), which Gaussians
do not, and its UV map is camera 0's projection, so it suits camera-projection work (re-painting, matte
extension). The maths is in depthmesh.py; here the job folder is found (obj["wonderland_job"], as
housekeeping.py links a result to its job) and the mesh, texture and material are made.
"""
from __future__ import annotations

import bpy
import numpy as np
from bpy.props import FloatProperty

from .depthmesh import (DEFAULT_MAX_JUMP, DepthMeshError, grid_faces, grid_uvs, pad_grid, read_job,
                        texture_pixels)
from .housekeeping import RESULT_KEY
from .plyio import PlyError, read_ply
from .pointcloud import is_gaussian_object


def detail_gaussians(obj) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(positions [n, 3] and display colours [n, 3] (sRGB 0..1) as scene.ply holds them, camera 0's centre,
    (w, h)) of a generated result's detail layer; DepthMeshError when it has none."""
    if not is_gaussian_object(obj):
        raise DepthMeshError("Select a Wonderland result (a Gaussian point cloud) to make its input view mesh.")
    if RESULT_KEY not in obj:
        raise DepthMeshError(f"'{obj.name}' was not generated here (an imported PLY has no job folder and no "
                             "detail layer); use Generate, then make the mesh from its result.")
    job_dir = bpy.path.abspath(obj[RESULT_KEY])
    (w, h), centre = read_job(job_dir)
    try:
        read = read_ply(f"{job_dir}/scene.ply")
    except PlyError as e:
        raise DepthMeshError(str(e)) from e
    if read.dropped:  # the detail grid is found by position: without these rows it would be shifted
        raise DepthMeshError(f"{job_dir}/scene.ply holds {read.dropped} Gaussian(s) with NaN or infinite values; "
                             "the job folder is damaged, generate again.")
    splats = read.splats
    if len(splats) < w * h:
        raise DepthMeshError(f"{job_dir}/scene.ply holds {len(splats)} Gaussians, fewer than its {w}x{h} "
                             "detail grid; the job folder is damaged, generate again.")
    detail = splats.select(slice(len(splats) - w * h, None))  # the detail layer is written last
    return detail.means.astype(np.float64), detail.display_rgb(), centre, (w, h)


def mesh_vertices(obj, max_jump: float):
    """(world positions of the padded grid's vertices, row-major, then of the twins (the object's transform
    applied), the Grid, colours [w·h, 3], (w, h))."""
    means, rgb, centre, (w, h) = detail_gaussians(obj)
    means = pad_grid(means.reshape(h, w, 3)).reshape(-1, 3)
    grid = grid_faces(np.linalg.norm(means - centre, axis=1).reshape(h + 2, w + 2), max_jump)
    twins = centre + (means[grid.twins] - centre) * grid.twin_scale[:, None]
    m = np.array(obj.matrix_world, np.float64)
    return np.concatenate([means, twins]) @ m[:3, :3].T + m[:3, 3], grid, rgb, (w, h)


def _material(name: str, image) -> bpy.types.Material:
    """A diffuse, non-glossy surface coloured by `image` through the UV map: under a white world of strength
    1 it shows the photo's colours; lights, shadows and occlusion act on it as on any mesh."""
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender 4.5; 5.0 materials always have nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = nodes.new("ShaderNodeTexImage")
    tex.image, tex.interpolation, tex.extension = image, 'Linear', 'EXTEND'
    tex.location = (-400, 0)
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = 1.0
    bsdf.inputs["Specular IOR Level"].default_value = 0.0
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (300, 0)
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


def build_mesh_object(obj, max_jump: float) -> bpy.types.Object:
    """A new mesh object '<result> Input View' beside `obj` (same collections), textured with the detail
    colours (image packed into the .blend); nothing new stays when it fails."""
    positions, grid, rgb, (w, h) = mesh_vertices(obj, max_jump)
    loop_vertices, loop_starts = grid.loops()
    name = f"{obj.name} Input View"
    mesh = bpy.data.meshes.new(name)
    image = material = None
    try:
        mesh.vertices.add(len(positions))
        mesh.vertices.foreach_set("co", positions.astype(np.float32).ravel())
        mesh.loops.add(len(loop_vertices))
        mesh.loops.foreach_set("vertex_index", loop_vertices)
        mesh.polygons.add(len(loop_starts))
        mesh.polygons.foreach_set("loop_start", loop_starts)
        mesh.update(calc_edges=True)
        mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", grid_uvs(w, h, grid.twins)[loop_vertices].ravel())
        mesh.shade_smooth()
        image = bpy.data.images.new(name, w, h, alpha=False)
        image.pixels.foreach_set(texture_pixels(rgb, w, h))
        image.pack()
        material = _material(name, image)
        mesh.materials.append(material)
        if mesh.validate():
            raise DepthMeshError("Blender rejected the mesh built from the detail grid (mesh.validate)")
        new = bpy.data.objects.new(name, mesh)
    except BaseException:
        bpy.data.meshes.remove(mesh)
        for block, data in ((material, bpy.data.materials), (image, bpy.data.images)):
            if block is not None:
                data.remove(block)
        raise
    for collection in obj.users_collection:
        collection.objects.link(new)
    return new


class WONDERLAND_OT_input_view_mesh(bpy.types.Operator):
    """Turn the active result's input view (its detail layer) into a textured depth mesh, cut at depth jumps;
    it renders in EEVEE and Cycles with shadows and occlusion, and its UVs are camera 0's projection"""
    bl_idname = "wonderland.input_view_mesh"
    bl_label = "Input View as Mesh"
    bl_options = {'REGISTER', 'UNDO'}

    max_jump: FloatProperty(
        name="Depth Jump", default=DEFAULT_MAX_JUMP, min=0.001, soft_max=1.0,
        description="Neighbouring pixels whose distances from the camera differ by more than this fraction "
                    "are not joined (silhouettes stay cut instead of stretching into rubber sheets)")

    @classmethod
    def poll(cls, context):
        return is_gaussian_object(context.active_object)

    def execute(self, context):
        obj = context.active_object
        if context.mode != 'OBJECT':
            bpy.ops.object.mode_set(mode='OBJECT')
        try:
            new = build_mesh_object(obj, self.max_jump)
        except DepthMeshError as e:
            self.report({'ERROR'}, str(e))
            return {'CANCELLED'}
        for other in context.view_layer.objects:
            other.select_set(False)
        if new.name in context.view_layer.objects:
            new.select_set(True)
            context.view_layer.objects.active = new
        faces = len(new.data.polygons)
        self.report({'INFO'}, f"'{new.name}': {len(new.data.vertices):,} vertices, {faces:,} faces")
        return {'FINISHED'}


def register():
    bpy.utils.register_class(WONDERLAND_OT_input_view_mesh)


def unregister():
    bpy.utils.unregister_class(WONDERLAND_OT_input_view_mesh)
