"""Blender tests run inside the real bpy module (headless). Every test starts from factory settings."""
from __future__ import annotations

import bpy  # first: importing bpy puts Blender's script modules (addon_utils, bpy_extras) on sys.path
import addon_utils
import pytest

ADDON = "wonderland_blender"


@pytest.fixture(autouse=True)
def factory_blender():
    """An empty factory-settings Blender before each test, so tests do not see each other's scenes."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield
    if ADDON in bpy.context.preferences.addons:
        addon_utils.disable(ADDON, default_set=True)


@pytest.fixture
def addon():
    """The add-on enabled the way Blender enables it (so its preferences exist); disabled afterwards."""
    module = addon_utils.enable(ADDON, default_set=True, handle_error=None)
    assert module is not None, f"enabling {ADDON} failed"
    yield module
    addon_utils.disable(ADDON, default_set=True)


@pytest.fixture
def scene(addon):
    """The context scene with the add-on enabled."""
    return bpy.context.scene


@pytest.fixture
def make_camera(scene):
    """make_camera(name, location, rotation): a perspective camera linked to the scene and made its camera."""
    def make(name="Cam", location=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0)):
        obj = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        obj.location, obj.rotation_euler = location, rotation
        scene.collection.objects.link(obj)
        scene.camera = obj
        return obj
    return make
