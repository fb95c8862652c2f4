"""How Gaussians look in Blender: the "Wonderland Splats" geometry-nodes modifier and its materials.

Each Gaussian is drawn as a quad facing the scene camera, lying in the plane through its centre across the
view ray, shaped by the Gaussian's covariance projected onto that plane (exactly the 2D footprint a
splatting rasterizer draws, to first order: the perspective Jacobian ignores the ray direction), 3σ
wide, with a material whose alpha is opacity·exp(-r²/2) in those σ units. The quads are realized into one
mesh (1M instances would make 1M object instances for the renderers; one mesh draws fast) and the input
points are kept beside them, so the evaluated object's point-cloud component still holds the Gaussians
for `pointcloud.read_splats`. The points get a transparent material (and a zero radius in final renders):
Solid view shows them (spheres of their 1σ radius, the material's viewport colour: Blender 5.0 point clouds
have no active colour attribute for Workbench), while its quads are hidden there by a zero viewport alpha.

Transparency: EEVEE (5.0) blends "Blended" surfaces per object in primitive order, and "Dithered"
surfaces are order-free stochastic coverage that converges over samples to correct back-to-front
compositing. The quads are sorted back to front for the camera (Sort Elements), so Blended is right from
the scene camera in one sample and noise-free at the shipped model's low opacities (median 0.025), where
Dithered needs many samples; see benchmarks/RESULTS.md for the measured comparison.

In the viewport only a random subset of at most "Viewport Splats" quads is drawn (a full-count render
is unaffected), so a million Gaussians keep the viewport usable.
"""
from __future__ import annotations

import bpy

MODIFIER_NAME = "Wonderland Splats"
GROUP_NAME = "Wonderland Splats"
SPLAT_MATERIAL = "Wonderland Gaussians"
POINT_MATERIAL = "Wonderland Points"
SIGMAS = 3.0  # quads reach 3σ, where exp(-r²/2) = 1.1% of the peak
MIN_ALPHA = 1.0 / 255.0  # the rasterizers skip fainter Gaussians; so do we (fewer quads)
MAX_ALPHA = 0.99  # as 3DGS clamps alpha
VIEWPORT_SPLATS = 200_000
CYCLES_TRANSPARENT_BOUNCES = 128  # a ray crosses this many quads before Cycles stops it (8 by default)
UV_NAME = "UVMap"


class _Tree:
    """A node tree being built: nodes by type with properties and inputs, links by socket."""

    def __init__(self, tree):
        self.tree = tree

    def node(self, kind: str, *inputs, props: dict | None = None, **named):
        """A new node; positional inputs fill input sockets in order, named ones by socket name.
        A value that is a socket is linked; anything else is set as the default value."""
        node = self.tree.nodes.new(kind)
        for key, value in (props or {}).items():
            setattr(node, key, value)
        sockets = [s for s in node.inputs if s.enabled]
        for socket, value in list(zip(sockets, inputs)) + [(node.inputs[k], v) for k, v in named.items()]:
            if isinstance(value, bpy.types.NodeSocket):
                self.tree.links.new(value, socket)
            elif value is not None:
                socket.default_value = value
        return node

    def out(self, kind: str, *inputs, index=0, props: dict | None = None, **named):
        """The output socket `index` (number or name) of a new node."""
        return self.node(kind, *inputs, props=props, **named).outputs[index]

    def math(self, op: str, a, b=None):
        return self.out("ShaderNodeMath", a, b, props={"operation": op})

    def vmath(self, op: str, *inputs, index=0):
        return self.out("ShaderNodeVectorMath", *inputs, props={"operation": op}, index=index)


def _set_alpha_method(mat) -> None:
    """Blended in EEVEE 5.0 (`surface_render_method`), or Alpha Blend in 4.x material settings."""
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = 'BLENDED'
    if hasattr(mat, "blend_method"):
        mat.blend_method = 'BLEND'
    if hasattr(mat, "use_transparency_overlap"):
        mat.use_transparency_overlap = True  # overlapping quads of one object blend with each other


def _new_material(name: str):
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender 4.5; 5.0 materials always have nodes
        mat.use_nodes = True
    mat.node_tree.nodes.clear()
    return mat, _Tree(mat.node_tree)


def _attribute(t: _Tree, name: str, output: str):
    return t.out("ShaderNodeAttribute", props={"attribute_type": 'GEOMETRY', "attribute_name": name}, index=output)


def splat_material():
    """Emission of `splat_color` with alpha opacity·exp(-r²/2) over the quad (r in σ from its UV)."""
    mat = bpy.data.materials.get(SPLAT_MATERIAL)
    if mat is not None:
        return mat
    mat, t = _new_material(SPLAT_MATERIAL)
    uv = _attribute(t, UV_NAME, "Vector")
    r = t.vmath('MULTIPLY_ADD', uv, (2 * SIGMAS, 2 * SIGMAS, 0.0), (-SIGMAS, -SIGMAS, 0.0))
    r2 = t.vmath('DOT_PRODUCT', r, r, index="Value")
    falloff = t.math('EXPONENT', t.math('MULTIPLY', r2, -0.5))
    alpha = t.math('MINIMUM', t.math('MULTIPLY', falloff, _attribute(t, "opacity", "Fac")), MAX_ALPHA)
    emission = t.out("ShaderNodeEmission", _attribute(t, "splat_color", "Color"), 1.0)
    shader = t.out("ShaderNodeMixShader", alpha, t.out("ShaderNodeBsdfTransparent"), emission)
    t.node("ShaderNodeOutputMaterial", shader)
    _set_alpha_method(mat)
    mat.diffuse_color = (0.8, 0.8, 0.8, 0.0)  # Solid view: the quads are invisible, the points show
    return mat


def point_material():
    """Nothing in EEVEE and Cycles (the quads are the Gaussians there); the colour in Solid view."""
    mat = bpy.data.materials.get(POINT_MATERIAL)
    if mat is not None:
        return mat
    mat, t = _new_material(POINT_MATERIAL)
    t.node("ShaderNodeOutputMaterial", t.out("ShaderNodeBsdfTransparent"))
    _set_alpha_method(mat)
    return mat


def _interface(group) -> None:
    new = group.interface.new_socket
    new("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    viewport = new("Viewport Splats", in_out='INPUT', socket_type='NodeSocketInt')
    viewport.default_value, viewport.min_value = VIEWPORT_SPLATS, 0
    viewport.description = "At most this many splats are drawn in the viewport (a random subset); renders draw all"
    new("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')


def _footprint(t: _Tree):
    """(rotation, scale) of each point's quad: normal along the view ray from the scene camera, axes and
    half-sizes from the eigen-decomposition of the covariance R·diag(s²)·Rᵀ projected across the ray."""
    camera = t.out("GeometryNodeObjectInfo", t.out("GeometryNodeInputActiveCamera"),
                   props={"transform_space": 'RELATIVE'}, index="Location")
    ray = t.vmath('SUBTRACT', t.out("GeometryNodeInputPosition"), camera)
    facing = t.out("FunctionNodeAlignRotationToVector", None, 1.0, ray, props={"axis": 'Z'})
    u = t.out("FunctionNodeRotateVector", (1.0, 0.0, 0.0), facing)
    v = t.out("FunctionNodeRotateVector", (0.0, 1.0, 0.0), facing)
    rotation = t.out("GeometryNodeInputNamedAttribute", "rotation", props={"data_type": 'QUATERNION'})
    inverse = t.out("FunctionNodeInvertRotation", rotation)
    scale = t.out("GeometryNodeInputNamedAttribute", "scale", props={"data_type": 'FLOAT_VECTOR'})
    variance = t.vmath('MULTIPLY', scale, scale)
    u_local = t.out("FunctionNodeRotateVector", u, inverse)
    v_local = t.out("FunctionNodeRotateVector", v, inverse)

    def quadratic(p, q):  # pᵀ diag(s²) q in the Gaussian's frame
        return t.vmath('DOT_PRODUCT', t.vmath('MULTIPLY', p, q), variance, index="Value")

    a, b, c = quadratic(u_local, u_local), quadratic(u_local, v_local), quadratic(v_local, v_local)
    half_diff = t.math('MULTIPLY', t.math('SUBTRACT', a, c), 0.5)
    mean = t.math('MULTIPLY', t.math('ADD', a, c), 0.5)
    radius = t.math('SQRT', t.math('ADD', t.math('MULTIPLY', half_diff, half_diff), t.math('MULTIPLY', b, b)))
    angle = t.math('MULTIPLY', t.math('ARCTAN2', b, half_diff), 0.5)
    turn = t.out("FunctionNodeAxisAngleToRotation", (0.0, 0.0, 1.0), angle)
    quad_rotation = t.out("FunctionNodeRotateRotation", facing, turn, props={"rotation_space": 'LOCAL'})

    def sigma(variance_value):  # SIGMAS·σ; the quad mesh spans ±1
        return t.math('MULTIPLY', t.math('SQRT', t.math('MAXIMUM', variance_value, 0.0)), SIGMAS)

    size = t.out("ShaderNodeCombineXYZ", sigma(t.math('ADD', mean, radius)),
                 sigma(t.math('SUBTRACT', mean, radius)), 1.0)
    return quad_rotation, size, ray


def _drawn(t: _Tree, viewport_splats, geometry):
    """Which points get a quad: opacity ≥ 1/255, and in the viewport a random subset of at most
    `viewport_splats`."""
    opacity = t.out("GeometryNodeInputNamedAttribute", "opacity", props={"data_type": 'FLOAT'})
    visible = t.out("FunctionNodeCompare", opacity, MIN_ALPHA,
                    props={"data_type": 'FLOAT', "operation": 'GREATER_EQUAL'})
    count = t.out("GeometryNodeAttributeDomainSize", geometry, props={"component": 'POINTCLOUD'}, index="Point Count")
    share = t.math('DIVIDE', viewport_splats, t.math('MAXIMUM', count, 1.0))
    sampled = t.out("FunctionNodeRandomValue", props={"data_type": 'BOOLEAN'}, Probability=share, index=3)
    keep = t.out("FunctionNodeBooleanMath", t.out("GeometryNodeIsViewport"), sampled,
                 props={"operation": 'IMPLY'})
    return t.out("FunctionNodeBooleanMath", visible, keep, props={"operation": 'AND'})


def splat_node_group():
    """The "Wonderland Splats" geometry-nodes group (made once per .blend)."""
    group = bpy.data.node_groups.get(GROUP_NAME)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(GROUP_NAME, 'GeometryNodeTree')
    group.is_modifier = True
    _interface(group)
    t = _Tree(group)
    inputs = t.node("NodeGroupInput")
    points = inputs.outputs["Geometry"]
    quad_rotation, size, ray = _footprint(t)
    distance = t.vmath('LENGTH', ray, index="Value")
    far_first = t.out("GeometryNodeSortElements", points, None, None, t.math('MULTIPLY', distance, -1.0),
                      props={"domain": 'POINT'})
    grid = t.node("GeometryNodeMeshGrid", 2.0, 2.0, 2, 2)
    quad = t.out("GeometryNodeStoreNamedAttribute", grid.outputs["Mesh"], None, UV_NAME, grid.outputs["UV Map"],
                 props={"data_type": 'FLOAT2', "domain": 'CORNER'})
    instances = t.out("GeometryNodeInstanceOnPoints", far_first, _drawn(t, inputs.outputs["Viewport Splats"], points),
                      quad, Rotation=quad_rotation, Scale=size)
    for name in ("sh_rest_*", "scale", "rotation", "radius"):  # not needed on the quads: memory at 1M
        remove = t.node("GeometryNodeRemoveAttribute", instances, Name=name)
        if "Pattern Mode" in remove.inputs:  # a menu socket in 5.0, a property in 4.5
            remove.inputs["Pattern Mode"].default_value = 'Wildcard'
        else:
            remove.pattern_mode = 'WILDCARD'
        instances = remove.outputs[0]
    quads = t.out("GeometryNodeRealizeInstances", instances)
    quads = t.out("GeometryNodeSetMaterial", quads, None, splat_material())
    # Points show in Solid view (radius: their 1σ core); in renders their radius is 0, so Cycles does not
    # spend transparent bounces on them.
    final_render = t.out("FunctionNodeBooleanMath", t.out("GeometryNodeIsViewport"), props={"operation": 'NOT'})
    shown_points = t.out("GeometryNodeSetPointRadius", points, final_render, 0.0)
    shown_points = t.out("GeometryNodeSetMaterial", shown_points, None, point_material())
    joined = t.out("GeometryNodeJoinGeometry")
    group.links.new(shown_points, joined.node.inputs[0])
    group.links.new(quads, joined.node.inputs[0])
    t.node("NodeGroupOutput", joined)
    return group


def add_display(obj):
    """Give `obj` the display modifier, last in its stack (edit modifiers go before it); returns it. The
    scenes holding `obj` get enough Cycles transparent bounces for overlapping quads."""
    for scene in obj.users_scene:
        cycles = getattr(scene, "cycles", None)
        if cycles is not None and cycles.transparent_max_bounces < CYCLES_TRANSPARENT_BOUNCES:
            cycles.transparent_max_bounces = CYCLES_TRANSPARENT_BOUNCES
    modifier = obj.modifiers.get(MODIFIER_NAME)
    if modifier is None:
        modifier = obj.modifiers.new(MODIFIER_NAME, 'NODES')
        modifier.node_group = splat_node_group()
    obj.modifiers.move(list(obj.modifiers).index(modifier), len(obj.modifiers) - 1)
    return modifier
