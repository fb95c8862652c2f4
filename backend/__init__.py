"""Wonderland backend: one image + a camera trajectory -> 3D Gaussians.

Never imports bpy. Everything here runs and is tested without Blender. Nothing here touches the
network: the Hugging Face libraries are put in offline mode before anyone imports them.
"""
import os as _os

_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

__version__ = "0.1.0"
