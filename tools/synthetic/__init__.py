"""Procedural room scenes for the synthetic training data (tools/synthetic_scenes.py): geometry, materials,
lights (rooms.py) and camera moves through them (cameras.py). Runs inside bpy."""
