"""Add-on preferences, and where the backend's Python and the job folders are found."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from .torch_choice import CUDA_BUILDS, TorchChoiceError

ENV_BACKEND_PYTHON = "WONDERLAND_BACKEND_PYTHON"
DEFAULT_MODEL = "default"   # the backend's shipped model (backend/weights/default)
INSTALLER_VENV = "venv"      # the "Install backend" venv, inside extension_path_user
JOBS_FOLDER = "jobs"
# The add-on runs from a source checkout when its folder sits beside the backend's pyproject.toml.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def is_extension() -> bool:
    """True when installed as an extension (package bl_ext.<repo>.<id>), False when run from a checkout."""
    return __package__.startswith("bl_ext.")


def venv_python(venv: str | os.PathLike) -> Path:
    return Path(venv) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def get_preferences(context=None):
    """This add-on's preferences, or None when it was registered without being enabled as an add-on."""
    addon = (context or bpy.context).preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def _explicit(path: str, where: str) -> tuple[str | None, str]:
    if Path(path).is_file():
        return path, where
    return None, f"{where} points at {path}, which is not a file: fix it or clear it"


def resolve_backend_python(prefs) -> tuple[str | None, str]:
    """(python executable or None, where it came from or why none was found).

    Order: the WONDERLAND_BACKEND_PYTHON environment variable, the preference, the .venv of the source
    checkout the add-on runs from, the venv that "Install backend" made. A setting that points at a
    missing file is reported, not skipped, so the user learns why their choice is not used.
    """
    env = os.environ.get(ENV_BACKEND_PYTHON, "").strip()
    if env:
        return _explicit(env, f"the {ENV_BACKEND_PYTHON} environment variable")
    pref = bpy.path.abspath(prefs.backend_python).strip() if prefs is not None else ""
    if pref:
        return _explicit(pref, "the add-on preference Backend Python")
    if not is_extension() and (SOURCE_ROOT / "pyproject.toml").is_file():
        candidate = venv_python(SOURCE_ROOT / ".venv")
        if candidate.is_file():
            return str(candidate), f"the source checkout's virtual environment ({SOURCE_ROOT / '.venv'})"
    if is_extension():
        candidate = venv_python(bpy.utils.extension_path_user(__package__, path=INSTALLER_VENV))
        if candidate.is_file():
            return str(candidate), "the backend installed by the add-on"
    return None, (f"no backend found: install it from the add-on preferences, or set Backend Python "
                  f"(or {ENV_BACKEND_PYTHON}) to the python of an environment that has wonderland-backend")


def output_root(prefs) -> str:
    """The folder job folders go into: the preference, else the extension's user folder, else a temp folder.

    Not created here (the panel shows it on every redraw); the job runner creates it.
    """
    chosen = bpy.path.abspath(prefs.output_dir).strip() if prefs is not None else ""
    if chosen:
        return chosen
    if is_extension():
        return bpy.utils.extension_path_user(__package__, path=JOBS_FOLDER)
    return os.path.join(tempfile.gettempdir(), "wonderland", JOBS_FOLDER)


class WonderlandPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(
        name="Backend Python", subtype='FILE_PATH',
        description=(f"Python executable of the environment with the backend (empty: {ENV_BACKEND_PYTHON}, "
                     "then the source checkout's .venv, then the installed backend)"))
    default_model: StringProperty(name="Default Model", default=DEFAULT_MODEL,
                                  description="A shipped model name or a model folder")
    torch_build: EnumProperty(name="Torch Build", default='auto', items=(
        ('auto', "Auto", "A CUDA build for an NVIDIA GPU (newest its driver runs), the macOS build on Apple "
                         "silicon (MPS), else the CPU build"),
        ('cpu', "CPU", "The CPU build (Linux, Windows): small, slow"),
        ('macos', "macOS", "The standard macOS build (Apple silicon: MPS)"),
        *((tag, f"CUDA {cuda}", f"NVIDIA GPU, driver {needs['Linux']}+ on Linux, {needs['Windows']}+ on Windows")
          for tag, cuda, needs in CUDA_BUILDS)),
        description="The torch build Install Backend puts into the backend's environment")
    device: EnumProperty(name="Device", default='auto', items=(
        ('auto', "Auto", "CUDA if available, else Apple MPS, else CPU"),
        ('cuda', "CUDA", "NVIDIA GPU"),
        ('mps', "MPS", "Apple GPU"),
        ('cpu', "CPU", "Slow, but works everywhere")))
    precision: EnumProperty(name="Precision", default='auto', items=(
        ('auto', "Auto", "bf16 where the device supports it, else fp16 on GPUs, fp32 on the CPU"),
        ('fp32', "FP32", "Full precision"),
        ('bf16', "BF16", "bfloat16"),
        ('fp16', "FP16", "float16")))
    default_steps: IntProperty(name="Default Steps", min=0, soft_max=100, default=0,
                               description="Denoising steps when the scene does not set them "
                                           "(0: the model's own, 50 for the shipped default)")
    default_seed: IntProperty(name="Default Seed", min=0, default=42,
                              description="Random seed when the scene does not set one")
    output_dir: StringProperty(name="Output Folder", subtype='DIR_PATH',
                               description="Where job folders go (empty: a folder of the add-on's own)")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "backend_python")
        path, where = resolve_backend_python(self)
        layout.label(text=f"Using {path} ({where})" if path else where, icon='CHECKMARK' if path else 'ERROR')
        if hasattr(bpy.types, "WONDERLAND_OT_install_backend"):
            from .ops_install import install_status, torch_for_this_machine
            layout.prop(self, "torch_build")
            try:
                layout.label(text=f"Install Backend will install {torch_for_this_machine(self.torch_build).reason}",
                             icon='INFO')
            except TorchChoiceError as e:
                layout.label(text=str(e), icon='ERROR')
            layout.operator("wonderland.install_backend", icon='IMPORT')
            running, text = install_status()
            if text:
                layout.label(text=text, icon='TIME' if running else 'INFO')
        layout.prop(self, "default_model")
        layout.prop(self, "device")
        layout.prop(self, "precision")
        layout.prop(self, "default_steps")
        layout.prop(self, "default_seed")
        layout.prop(self, "output_dir")
        if not self.output_dir:
            layout.label(text=f"Jobs go to {output_root(self)}", icon='FILE_FOLDER')


def register():
    bpy.utils.register_class(WonderlandPreferences)


def unregister():
    bpy.utils.unregister_class(WonderlandPreferences)
