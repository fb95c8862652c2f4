"""Wonderland backend: one image + a camera trajectory -> 3D Gaussians.

Never imports bpy. Everything here runs and is tested without Blender. Nothing here touches the
network: the Hugging Face libraries are put in offline mode before anyone imports them.
"""
import os as _os

_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
# OpenMP threads that spin while waiting cost nothing on an idle machine but, beside Blender or other
# jobs, made the CPU rasterizer ~7x slower (27 s instead of 4 s per 1M-Gaussian frame on 2 cores).
# It only takes effect when set before torch loads, as it is for `python -m backend`.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
