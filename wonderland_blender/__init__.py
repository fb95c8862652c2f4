"""Wonderland for Blender: one picture + a camera move → 3D Gaussians, made by a backend child process.

This package imports bpy and numpy only; it talks to the backend through job folders and a subprocess.
"""
from __future__ import annotations

import importlib

# Registered in this order, unregistered in reverse. Adding a module is one line here; each module has
# register() and unregister().
MODULE_NAMES = (
    "properties",
    "preferences",
    "ops_io",
    "ops_edit",
    "migrate",
    "render_engine",
    "mixing",
    "ops_trajectory",
    "previews",
    "ops_generate",
    "ops_install",
    "ops_depthmesh",
    "ops_photo_camera",
    "panel",
)


def _modules():
    return [importlib.import_module(f".{name}", __package__) for name in MODULE_NAMES]


def register():
    registered = []
    try:
        for module in _modules():
            module.register()
            registered.append(module)
    except Exception:
        for module in reversed(registered):  # leave Blender as it was
            module.unregister()
        raise


def unregister():
    for module in reversed(_modules()):
        module.unregister()
