"""Meshes among the Gaussians with the Wonderland engine: depth compositing with a second scene.

A scene renders with one engine, and the Wonderland engine draws Gaussians only. So
`wonderland.setup_mesh_mixing` makes (or refreshes) a companion scene "<scene> Meshes" that links the
same objects except the Gaussian clouds, shares the camera, World and frame settings, and renders with
EEVEE (or Cycles, the user's choice there). The Gaussian scene's compositor then takes both Render
Layers with their Depth passes into a Z Combine, so whichever is nearer wins per pixel, with alpha
(a semi-transparent splat lets the mesh behind it show through). F12 on the Gaussian scene renders both
scenes and writes the mix. When the Gaussian scene is not transparent, the World colour is put behind
the mix by an Alpha Over, as both scenes render transparent here.

Mesh edits (moving, adding materials) show on the next F12; objects added later, and a changed
resolution or frame range, need Set Up again. Depth is camera z in both engines, and both write 1e10
where nothing is seen, so empty pixels never win.
"""
from __future__ import annotations

import bpy

from .pointcloud import is_gaussian_object
from .render_engine import ENGINE_ID, world_background

MESH_SCENE_SUFFIX = " Meshes"
NODE_GROUP_NAME = "Wonderland Mix"
COMPANION_KEY = "wonderland_mesh_scene"  # on the Gaussian scene: the name of its companion scene
WORLD_KEY = "wonderland_mix_world"  # on the Gaussian scene: whether the mix goes over the World colour
_COPIED_RENDER_SETTINGS = ("resolution_x", "resolution_y", "resolution_percentage", "pixel_aspect_x",
                           "pixel_aspect_y", "use_border", "use_crop_to_border", "border_min_x", "border_min_y",
                           "border_max_x", "border_max_y", "fps", "fps_base")


class MixingError(Exception):
    """The scene cannot be set up for mixing; the message says why and what to do."""


def mesh_objects(scene, view_layer) -> list:
    """The objects of the view layer that are not Gaussian clouds (meshes, lights, instancers, the camera)."""
    return [obj for obj in view_layer.objects if not is_gaussian_object(obj)]


def eevee_id() -> str:
    """EEVEE's engine name: BLENDER_EEVEE_NEXT in Blender 4.2–4.5, BLENDER_EEVEE again from 5.0."""
    engines = {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    return 'BLENDER_EEVEE_NEXT' if 'BLENDER_EEVEE_NEXT' in engines else 'BLENDER_EEVEE'


def companion_scene(scene, view_layer):
    """The mesh scene of `scene` (EEVEE when new), made when missing; its settings and objects follow `scene`."""
    name = scene.get(COMPANION_KEY) or f"{scene.name}{MESH_SCENE_SUFFIX}"
    meshes = bpy.data.scenes.get(name)
    if meshes is None:
        meshes = bpy.data.scenes.new(name)
        meshes.render.engine = eevee_id()
    scene[COMPANION_KEY] = meshes.name
    for key in _COPIED_RENDER_SETTINGS:
        setattr(meshes.render, key, getattr(scene.render, key))
    meshes.render.film_transparent = True
    meshes.frame_start, meshes.frame_end, meshes.frame_step = scene.frame_start, scene.frame_end, scene.frame_step
    meshes.camera, meshes.world = scene.camera, scene.world
    meshes.view_settings.view_transform = scene.view_settings.view_transform
    meshes.view_settings.look = scene.view_settings.look
    for obj in list(meshes.collection.objects):
        meshes.collection.objects.unlink(obj)
    for obj in mesh_objects(scene, view_layer):
        meshes.collection.objects.link(obj)
    meshes.view_layers[0].use_pass_z = True
    return meshes


def _compositor(scene) -> tuple[bpy.types.NodeTree, bpy.types.Node]:
    """An emptied compositor tree of `scene` and its output node: Blender 5 composites through a node
    group (and a Group Output), 4.5 through the scene's own tree (and a Composite node)."""
    if hasattr(scene, "compositing_node_group"):
        tree = bpy.data.node_groups.get(NODE_GROUP_NAME) or bpy.data.node_groups.new(NODE_GROUP_NAME,
                                                                                     'CompositorNodeTree')
        tree.nodes.clear()
        if not any(item.item_type == 'SOCKET' and item.in_out == 'OUTPUT' for item in tree.interface.items_tree):
            tree.interface.new_socket("Image", in_out='OUTPUT', socket_type='NodeSocketColor')
        scene.compositing_node_group = tree
        return tree, tree.nodes.new('NodeGroupOutput')
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    return tree, tree.nodes.new('CompositorNodeComposite')


def build_compositor(scene, meshes, over_world: bool) -> bpy.types.NodeTree:
    """The Gaussian scene's compositor: Z Combine of its own Render Layers and the mesh scene's.
    Sockets are taken by position where 4.5 and 5 name them differently."""
    tree, output = _compositor(scene)
    gaussians = tree.nodes.new('CompositorNodeRLayers')
    gaussians.scene, gaussians.location = scene, (-500, 200)
    mesh_layer = tree.nodes.new('CompositorNodeRLayers')
    mesh_layer.scene, mesh_layer.location = meshes, (-500, -200)
    combine = tree.nodes.new('CompositorNodeZcombine')
    combine.inputs["Use Alpha"].default_value = True
    combine.inputs["Anti-Alias"].default_value = True
    links = tree.links
    links.new(gaussians.outputs["Image"], combine.inputs[0])
    links.new(gaussians.outputs["Depth"], combine.inputs[1])
    links.new(mesh_layer.outputs["Image"], combine.inputs[2])
    links.new(mesh_layer.outputs["Depth"], combine.inputs[3])
    result = combine.outputs[0]
    if over_world and scene.world is not None:
        over = tree.nodes.new('CompositorNodeAlphaOver')
        over.location = (200, 0)
        background = over.inputs.get("Background") or over.inputs[1]  # 4.5: Fac, Image, Image
        foreground = over.inputs.get("Foreground") or over.inputs[2]
        rgb, _ = world_background(scene.world)
        background.default_value = (*rgb.tolist(), 1.0)
        links.new(result, foreground)
        result = over.outputs["Image"]
    output.location = (400, 0)
    links.new(result, output.inputs[0])
    return tree


def setup_mesh_mixing(context) -> bpy.types.Scene:
    """Make the current Wonderland scene render its meshes too (see the module docstring); the mesh scene."""
    scene = context.scene
    if scene.render.engine != ENGINE_ID:
        raise MixingError("the scene does not render with Wonderland Gaussians: mixing is for that engine "
                          "(EEVEE and Cycles show the splat display and meshes together by themselves)")
    if scene.camera is None:
        raise MixingError("the scene has no camera: add one and set it as the scene camera")
    meshes = companion_scene(scene, context.view_layer)
    for layer in scene.view_layers:
        layer.use_pass_z = True
    # The mix needs the Gaussians without background: the World goes behind the mix in the compositor
    # when the scene was not transparent before the first set-up.
    if WORLD_KEY not in scene:
        scene[WORLD_KEY] = not scene.render.film_transparent
    build_compositor(scene, meshes, bool(scene[WORLD_KEY]))
    scene.render.film_transparent = True
    scene.render.use_compositing = True
    return meshes


class WONDERLAND_OT_setup_mesh_mixing(bpy.types.Operator):
    """Render the scene's meshes with EEVEE in a companion scene and depth-composite them with the Gaussians
    (run again after adding objects or changing the resolution)"""
    bl_idname = "wonderland.setup_mesh_mixing"
    bl_label = "Mix Meshes with Gaussians"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        try:
            meshes = setup_mesh_mixing(context)
        except MixingError as e:
            self.report({'ERROR'}, str(e))
            return {'CANCELLED'}
        self.report({'INFO'}, f"Meshes render in scene '{meshes.name}' ({meshes.render.engine}) and are "
                              "depth-composited with the Gaussians on F12")
        return {'FINISHED'}


def register():
    bpy.utils.register_class(WONDERLAND_OT_setup_mesh_mixing)


def unregister():
    bpy.utils.unregister_class(WONDERLAND_OT_setup_mesh_mixing)
