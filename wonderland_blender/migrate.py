"""Bring .blend files saved by older versions of the add-on up to the attribute contract when they load.

Older point clouds kept raw PLY twins (`f_dc`, `opacity_logit`, `log_scale`, `rot_raw`) beside activated
views (`color`, `opacity`, `scale`, `rotation`); the twins won over edits, and Cycles renders a `color`
attribute black (it reserves the name for volumes). On load the values are rebuilt from the twins (they
are exact), the old attributes removed, and the objects given the "Wonderland Splats" display. Display
modifiers made by an older version of the add-on get the current node group (display.refresh).
"""
from __future__ import annotations

import bpy
import numpy as np
from bpy.app.handlers import persistent

from .display import add_display, refresh
from .plyio import Splats
from .pointcloud import _get, attribute_values

OLD_RAW = {"f_dc": ('vector', 3), "opacity_logit": ('value', 1), "log_scale": ('vector', 3), "rot_raw": ('value', 4)}
OLD_ONLY = ("color",)  # removed with the twins; the other old names are current ones, rewritten


def _raw(cloud, name: str) -> np.ndarray:
    prop, width = OLD_RAW[name]
    return _get(cloud.attributes, name, prop, len(cloud.points), width)


def needs_migration(cloud) -> bool:
    return all(name in cloud.attributes for name in OLD_RAW)


def migrate_cloud(cloud) -> None:
    """Rewrite one old-layout point cloud's attributes in place (SH and positions are unchanged)."""
    n = len(cloud.points)
    splats = Splats(means=np.zeros((n, 3), np.float32), f_dc=_raw(cloud, "f_dc"),
                    f_rest=np.zeros((n, 0, 3), np.float32), opacity_logits=_raw(cloud, "opacity_logit"),
                    log_scales=_raw(cloud, "log_scale"), quats=_raw(cloud, "rot_raw"))
    attrs = cloud.attributes
    for name in (*OLD_RAW, *OLD_ONLY):
        if name in attrs:
            attrs.remove(attrs[name])
    for name, (kind, prop, values) in attribute_values(splats).items():
        if name in attrs and (attrs[name].data_type != kind or attrs[name].domain != 'POINT'):
            attrs.remove(attrs[name])
        attr = attrs.get(name) or attrs.new(name, kind, 'POINT')
        attr.data.foreach_set(prop, values.ravel())
    cloud.materials.clear()  # the old emission material; display.refresh removes it once unused


def migrate_file() -> list[str]:
    """Migrate every old-layout point cloud in the open file, and displays made by an older version;
    returns the changed objects' names."""
    clouds = [c for c in bpy.data.pointclouds if needs_migration(c)]
    for cloud in clouds:
        migrate_cloud(cloud)
    objects = [o for o in bpy.data.objects if o.type == 'POINTCLOUD' and o.data in clouds]
    for obj in objects:
        add_display(obj)
    refreshed = refresh([o for o in bpy.data.objects if o.type == 'POINTCLOUD'])
    return sorted({o.name for o in objects} | set(refreshed))


@persistent
def _on_load(*_args) -> None:
    names = migrate_file()
    if names:
        print(f"Wonderland: updated {len(names)} Gaussian object(s) saved by an older version: {', '.join(names)}")


def register():
    bpy.app.handlers.load_post.append(_on_load)


def unregister():
    if _on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load)
