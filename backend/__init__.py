"""Wonderland backend: one image + a camera trajectory -> 3D Gaussians.

Never imports bpy. Everything here runs and is tested without Blender. Nothing here touches the
network: the Hugging Face libraries are put in offline mode before anyone imports them.
"""
import os as _os

_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
# OpenMP threads that spin while waiting gain ~10% on an idle machine, but beside a busy neighbour (Blender)
# they fight it for the cores: a 1M-Gaussian CPU frame took 7.7 s spinning vs 4.1 s passive on 2 cores
# with one busy (benchmarks/RESULTS.md). Only takes effect before torch loads, as in `python -m backend`.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
