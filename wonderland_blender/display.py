"""How Gaussians look in Blender: the "Wonderland Splats" geometry-nodes modifier and its materials.

Each Gaussian is drawn as a quad facing the scene camera, lying in the plane through its centre across the
view ray, shaped by the Gaussian's covariance projected onto that plane (exactly the 2D footprint a
splatting rasterizer draws, to first order: the perspective Jacobian ignores the ray direction), 3σ
wide, with a material whose alpha is opacity·exp(-r²/2) in those σ units. The quads are realized into one
mesh (1M instances would make 1M object instances for the renderers; one mesh draws fast) and the input
points are kept beside them (radius 0: nothing draws them), so the evaluated object's point-cloud component
still holds the Gaussians for `pointcloud.read_splats`.

Solid view (Workbench) knows no shader nodes: it draws each material's viewport colour and alpha, or with
Color ▸ Attribute the mesh's active colour attribute, opaque, and has no per-element alpha. So in the mesh
each quad is only as large as the area its alpha covers, ∫ opacity·exp(-r²/2σ²) dA = 2πσ²·opacity (half-
sizes σ·√(π·opacity/2)), and opaque in the viewport colour; the material's displacement, which only EEVEE
and Cycles run, moves its corners out to the full footprint. Where the Gaussians do not overlap, a region
of Solid view then shows their colour in the share a splat renderer gives it; a faint Gaussian (opacity
0.025) is a dot of 0.2σ, not a ball. Geometry nodes cannot mark a colour attribute active, but Realize
Instances keeps an instanced mesh's active colour name, so the quads are instances of a helper mesh object
(in no scene) whose active colour name is `splat_color` (the name only: an attribute of its own would shadow
the instances' `splat_color` when realized). Squares, not discs: a separate disc mesh doubled the modifier's
evaluation time, and a few pixels wide they look alike.

Transparency: EEVEE (5.0) blends "Blended" surfaces per object in primitive order, and "Dithered"
surfaces are order-free stochastic coverage that converges over samples to correct back-to-front
compositing. The quads are sorted back to front for the camera (Sort Elements), so Blended is right from
the scene camera in one sample and noise-free at the shipped model's low opacities (median 0.025), where
Dithered needs many samples; see benchmarks/RESULTS.md for the measured comparison.

In the viewport only a random subset of at most "Viewport Splats" Gaussians is drawn (a full-count render
is unaffected), so a million Gaussians keep the viewport usable.
"""
from __future__ import annotations

import math

import bpy

from .node_graph import NodeGraph

MODIFIER_NAME = "Wonderland Splats"
GROUP_NAME = "Wonderland Splats"
SPLAT_MATERIAL = "Wonderland Gaussians"
QUAD_OBJECT = "Wonderland Splat Quad"  # the helper mesh object the quads instance
SIGMAS = 3.0  # quads reach at most 3σ, where exp(-r²/2) = 1.1% of the peak
MIN_ALPHA = 1.0 / 255.0  # the rasterizers skip fainter Gaussians; so do we (fewer quads)
MAX_ALPHA = 0.99  # as 3DGS clamps alpha
VIEWPORT_SPLATS = 200_000
CYCLES_TRANSPARENT_BOUNCES = 128  # a ray crosses this many quads before Cycles stops it (8 by default)
UV_NAME = "UVMap"
COLOR_NAME = "splat_color"
EXTENT_NAME = "splat_extent"  # a quad's half-size in σ, on the quads only
GROWTH_NAMES = ("splat_grow_u", "splat_grow_v")  # a quad's half-axes from Solid view's to the full footprint
SOLID_GREY = (0.8, 0.8, 0.8, 1.0)  # the quads in Solid view's Material colour mode
VERSION = 3  # of the group, material and quad; a .blend's older ones are replaced when it loads (migrate.py)
_VERSION_KEY = "wonderland_display_version"
_NAMES = (GROUP_NAME, SPLAT_MATERIAL, QUAD_OBJECT, "Wonderland Points")  # the last: version 2's


def _set_alpha_method(mat) -> None:
    """Blended in EEVEE 5.0 (`surface_render_method`), or Alpha Blend in 4.x material settings."""
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = 'BLENDED'
    if hasattr(mat, "blend_method"):
        mat.blend_method = 'BLEND'
    if hasattr(mat, "use_transparency_overlap"):
        mat.use_transparency_overlap = True  # overlapping quads of one object blend with each other


def _current(blocks, name: str):
    """The data-block `name` if this version made it, else None; an older one is renamed out of the way."""
    block = blocks.get(name)
    if block is None or block.get(_VERSION_KEY) == VERSION:
        return block
    block.name = f"{name} (old)"
    return None


def _outdated(block) -> bool:
    return block.get(_VERSION_KEY) != VERSION and block.name.startswith(_NAMES)


def refresh(objects) -> list[str]:
    """Give display modifiers made by an older version the current group, and remove older groups and
    materials nothing uses any more; returns the names of the objects changed."""
    changed = []
    for obj in objects:
        modifier = obj.modifiers.get(MODIFIER_NAME)
        if modifier is not None and (modifier.node_group is None or _outdated(modifier.node_group)):
            modifier.node_group = splat_node_group()
            _prepare_scenes(obj)
            changed.append(obj.name)
    for blocks in (bpy.data.node_groups, bpy.data.objects, bpy.data.materials):  # users first
        for block in [b for b in blocks if _outdated(b) and b.users == 0]:
            blocks.remove(block)
    return changed


def _new_material(name: str):
    mat = bpy.data.materials.new(name)
    mat[_VERSION_KEY] = VERSION
    if mat.node_tree is None:  # Blender 4.5; 5.0 materials always have nodes
        mat.use_nodes = True
    mat.node_tree.nodes.clear()
    return mat, NodeGraph(mat.node_tree)


def _attribute(t: NodeGraph, name: str, output: str):
    return t.out("ShaderNodeAttribute", attribute_type='GEOMETRY', attribute_name=name, output=output)


def splat_material():
    """Emission of `splat_color` with alpha opacity·exp(-r²/2) over the quad (r in σ: its UV times its
    extent)."""
    mat = _current(bpy.data.materials, SPLAT_MATERIAL)
    if mat is not None:
        return mat
    mat, t = _new_material(SPLAT_MATERIAL)
    uv = _attribute(t, UV_NAME, "Vector")
    centred = t.vmath('MULTIPLY_ADD', uv, (2.0, 2.0, 0.0), (-1.0, -1.0, 0.0))
    r = t.vmath('SCALE', centred, named={"Scale": _attribute(t, EXTENT_NAME, "Fac")})
    r2 = t.vmath('DOT_PRODUCT', r, r, output="Value")
    falloff = t.math('EXPONENT', t.math('MULTIPLY', r2, -0.5))
    alpha = t.math('MINIMUM', t.math('MULTIPLY', falloff, _attribute(t, "opacity", "Fac")), MAX_ALPHA)
    emission = t.out("ShaderNodeEmission", _attribute(t, COLOR_NAME, "Color"), 1.0)
    shader = t.out("ShaderNodeMixShader", alpha, t.out("ShaderNodeBsdfTransparent"), emission)
    u, v = (t.vmath('SCALE', _attribute(t, name, "Vector"), named={"Scale": c})
            for name, c in zip(GROWTH_NAMES, t.node("ShaderNodeSeparateXYZ", centred).outputs))
    grown = t.out("ShaderNodeVectorDisplacement", t.vmath('ADD', u, v), 0.0, 1.0, space='OBJECT')
    t.node("ShaderNodeOutputMaterial", shader, named={"Displacement": grown})
    mat.displacement_method = 'DISPLACEMENT'  # full-size quads only where shaders run: EEVEE and Cycles
    _set_alpha_method(mat)
    mat.diffuse_color = SOLID_GREY
    return mat


def splat_quad():
    """The helper object every Gaussian's quad instances: ±1 in XY with the UV map, the splat material, and
    `splat_color` as its active (and render) colour name; in no scene."""
    obj = _current(bpy.data.objects, QUAD_OBJECT)
    if obj is not None:
        return obj
    mesh = bpy.data.meshes.new(QUAD_OBJECT)
    mesh.from_pydata([(-1.0, -1.0, 0.0), (1.0, -1.0, 0.0), (1.0, 1.0, 0.0), (-1.0, 1.0, 0.0)], [], [(0, 1, 2, 3)])
    mesh.uv_layers.new(name=UV_NAME).data.foreach_set("uv", (0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0))
    mesh.color_attributes.active_color_name = mesh.color_attributes.default_color_name = COLOR_NAME
    mesh.materials.append(splat_material())
    obj = bpy.data.objects.new(QUAD_OBJECT, mesh)
    obj[_VERSION_KEY] = VERSION
    return obj


def _interface(group) -> None:
    new = group.interface.new_socket
    new("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    viewport = new("Viewport Splats", in_out='INPUT', socket_type='NodeSocketInt')
    viewport.default_value, viewport.min_value = VIEWPORT_SPLATS, 0
    viewport.description = "At most this many splats are drawn in the viewport (a random subset); renders draw all"
    new("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')


def _opacity(t: NodeGraph):
    return t.attribute("opacity", 'FLOAT')


def _extent(t: NodeGraph):
    """Each quad's half-size in σ: where opacity·exp(-r²/2) falls below 1/255, the rasterizers' cut-off,
    at most 3σ. The shipped model's faint Gaussians (opacity 0.025) need 1.9σ: 2.4× fewer fragments."""
    ratio = t.math('MAXIMUM', t.math('MULTIPLY', _opacity(t), 1.0 / MIN_ALPHA), 1.0)
    log_ratio = t.math('LOGARITHM', ratio, math.e)
    return t.math('MINIMUM', t.math('SQRT', t.math('MULTIPLY', log_ratio, 2.0)), SIGMAS)


def _footprint(t: NodeGraph):
    """(rotation, σ along its x and y, view ray) of each point's quad: normal along the view ray from the scene
    camera, axes and σ from the eigen-decomposition of the covariance R·diag(s²)·Rᵀ projected across the ray."""
    camera = t.out("GeometryNodeObjectInfo", t.out("GeometryNodeInputActiveCamera"), transform_space='RELATIVE',
                   output="Location")
    ray = t.vmath('SUBTRACT', t.out("GeometryNodeInputPosition"), camera)
    facing = t.out("FunctionNodeAlignRotationToVector", None, 1.0, ray, axis='Z')
    u = t.out("FunctionNodeRotateVector", (1.0, 0.0, 0.0), facing)
    v = t.out("FunctionNodeRotateVector", (0.0, 1.0, 0.0), facing)
    inverse = t.out("FunctionNodeInvertRotation", t.attribute("rotation", 'QUATERNION'))
    scale = t.attribute("scale", 'FLOAT_VECTOR')
    variance = t.vmath('MULTIPLY', scale, scale)
    u_local = t.out("FunctionNodeRotateVector", u, inverse)
    v_local = t.out("FunctionNodeRotateVector", v, inverse)

    def quadratic(p, q):  # pᵀ diag(s²) q in the Gaussian's frame
        return t.vmath('DOT_PRODUCT', t.vmath('MULTIPLY', p, q), variance, output="Value")

    a, b, c = quadratic(u_local, u_local), quadratic(u_local, v_local), quadratic(v_local, v_local)
    half_diff = t.math('MULTIPLY', t.math('SUBTRACT', a, c), 0.5)
    mean = t.math('MULTIPLY', t.math('ADD', a, c), 0.5)
    radius = t.math('SQRT', t.math('ADD', t.math('MULTIPLY', half_diff, half_diff), t.math('MULTIPLY', b, b)))
    angle = t.math('MULTIPLY', t.math('ARCTAN2', b, half_diff), 0.5)
    turn = t.out("FunctionNodeAxisAngleToRotation", (0.0, 0.0, 1.0), angle)
    quad_rotation = t.out("FunctionNodeRotateRotation", facing, turn, rotation_space='LOCAL')

    def sigma(variance_value):
        return t.math('SQRT', t.math('MAXIMUM', variance_value, 0.0))

    return quad_rotation, sigma(t.math('ADD', mean, radius)), sigma(t.math('SUBTRACT', mean, radius)), ray


def _drawn(t: NodeGraph, viewport_splats, geometry):
    """Which points get a quad: opacity ≥ 1/255, and in the viewport a random subset of at most
    `viewport_splats`."""
    visible = t.out("FunctionNodeCompare", _opacity(t), MIN_ALPHA, data_type='FLOAT', operation='GREATER_EQUAL')
    count = t.out("GeometryNodeAttributeDomainSize", geometry, component='POINTCLOUD', output="Point Count")
    share = t.math('DIVIDE', viewport_splats, t.math('MAXIMUM', count, 1.0))
    sampled = t.out("FunctionNodeRandomValue", data_type='BOOLEAN', named={"Probability": share})
    return t.logic('AND', visible, t.logic('IMPLY', t.out("GeometryNodeIsViewport"), sampled))


def splat_node_group():
    """The "Wonderland Splats" geometry-nodes group (made once per .blend)."""
    group = _current(bpy.data.node_groups, GROUP_NAME)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(GROUP_NAME, 'GeometryNodeTree')
    group[_VERSION_KEY] = VERSION
    group.is_modifier = True
    _interface(group)
    t = NodeGraph(group)
    inputs = t.node("NodeGroupInput")
    points = inputs.outputs["Geometry"]
    extent = _extent(t)
    rotation, sigma_x, sigma_y, ray = _footprint(t)
    # Drop the points without a quad first: the random subset then follows the points' own order (stable
    # while the camera moves), and only the drawn ones are sorted.
    drawn = t.out("GeometryNodeSeparateGeometry", points, _drawn(t, inputs.outputs["Viewport Splats"], points),
                  domain='POINT', output="Selection")
    far_first = t.out("GeometryNodeSortElements", drawn, None, None,
                      t.math('MULTIPLY', t.vmath('LENGTH', ray, output="Value"), -1.0), domain='POINT')
    far_first = t.out("GeometryNodeStoreNamedAttribute", far_first, None, EXTENT_NAME, extent,
                      data_type='FLOAT', domain='POINT')
    # The footprint evaluated once (each node that reads a field evaluates it again).
    capture = t.node("GeometryNodeCaptureAttribute", far_first, domain='POINT')
    for kind, name, field in (('ROTATION', "Rotation", rotation),
                              ('VECTOR', "Sigma", t.out("ShaderNodeCombineXYZ", sigma_x, sigma_y))):
        capture.capture_items.new(kind, name)
        t.link(field, capture, name)
    far_first, rotation = capture.outputs["Geometry"], capture.outputs["Rotation"]
    sigma_x, sigma_y = t.node("ShaderNodeSeparateXYZ", capture.outputs["Sigma"]).outputs[:2]
    solid = t.math('SQRT', t.math('MULTIPLY', t.math('MINIMUM', _opacity(t), MAX_ALPHA), math.pi / 2.0))
    for name, axis, sigma in zip(GROWTH_NAMES, ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), (sigma_x, sigma_y)):
        growth = t.vmath('SCALE', axis, named={"Scale": t.math('MULTIPLY', sigma, t.math('SUBTRACT', extent, solid))})
        far_first = t.out("GeometryNodeStoreNamedAttribute", far_first, None, name,
                          t.out("FunctionNodeRotateVector", growth, rotation), data_type='FLOAT_VECTOR',
                          domain='POINT')
    quad = t.out("GeometryNodeObjectInfo", splat_quad(), transform_space='ORIGINAL', output="Geometry")
    size = t.out("ShaderNodeCombineXYZ", t.math('MULTIPLY', sigma_x, solid), t.math('MULTIPLY', sigma_y, solid), 1.0)
    quads = t.out("GeometryNodeInstanceOnPoints", far_first, None, quad, named={"Rotation": rotation, "Scale": size})
    for name in ("sh_rest_*", "scale", "rotation", "radius"):  # not needed on the quads: memory at 1M
        remove = t.node("GeometryNodeRemoveAttribute", quads, named={"Name": name})
        if "Pattern Mode" in remove.inputs:  # a menu socket in 5.0, a property in 4.5
            remove.inputs["Pattern Mode"].default_value = 'Wildcard'
        else:
            remove.pattern_mode = 'WILDCARD'
        quads = remove.outputs[0]
    quads = t.out("GeometryNodeRealizeInstances", quads)
    # The points draw nowhere (radius 0, so Cycles spends no transparent bounces on them either).
    hidden_points = t.out("GeometryNodeSetPointRadius", points, None, 0.0)
    joined = t.out("GeometryNodeJoinGeometry")
    for part in (hidden_points, quads):
        t.link(part, joined.node)
    t.node("NodeGroupOutput", joined)
    return group


def _prepare_scenes(obj) -> None:
    """The scenes holding `obj` get enough Cycles transparent bounces for overlapping quads."""
    for scene in obj.users_scene:
        cycles = getattr(scene, "cycles", None)
        if cycles is not None and cycles.transparent_max_bounces < CYCLES_TRANSPARENT_BOUNCES:
            cycles.transparent_max_bounces = CYCLES_TRANSPARENT_BOUNCES


def add_display(obj):
    """Give `obj` the display modifier, last in its stack (edit modifiers go before it); returns it."""
    _prepare_scenes(obj)
    modifier = obj.modifiers.get(MODIFIER_NAME)
    if modifier is None:
        modifier = obj.modifiers.new(MODIFIER_NAME, 'NODES')
        modifier.node_group = splat_node_group()
    obj.modifiers.move(list(obj.modifiers).index(modifier), len(obj.modifiers) - 1)
    return modifier


def show_colors_in_solid_views() -> int:
    """Set Color to Attribute in every 3D view that is in Solid view (it shows the Gaussians grey
    otherwise; the setting is the view's, not the scene's); returns how many changed. Views in other shading
    modes keep theirs: their Solid settings are the user's choice until they use them."""
    changed = 0
    for screen in bpy.data.screens:
        for area in screen.areas:
            for space in area.spaces:
                if space.type == 'VIEW_3D' and space.shading.type == 'SOLID' and space.shading.color_type != 'VERTEX':
                    space.shading.color_type = 'VERTEX'
                    changed += 1
    return changed


def solid_view_note() -> str:
    """Show the colours in Solid views and say so, for an import's report ("" when none changed)."""
    changed = show_colors_in_solid_views()
    return f"; Solid view set to Color ▸ Attribute in {changed} 3D view(s), to show the Gaussians' colours" \
        if changed else ""
