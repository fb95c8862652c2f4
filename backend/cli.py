"""`python -m backend <command> …`: the command line the add-on, users and scripts call.

Each command lives in backend/commands/<name>.py with `add_arguments(parser)` and `run(args) -> int`;
modules are imported only when their command runs, so `info` never pays for diffusers.
Exit codes (architecture.md): 0 done, 1 other failure, 2 bad input, 3 cancelled.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from backend.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILURE, Cancelled, InputError
from backend.job import imports_done

COMMANDS = {
    "generate": ("backend.commands.generate", "image + cameras.json -> scene.ply, previews, meta.json"),
    "render": ("backend.commands.render", "render a PLY from every camera of a cameras.json"),
    "info": ("backend.commands.info", "summarize a Gaussian PLY file"),
    "render-worker": ("backend.commands.render_worker", "long-lived renderer for Blender's render engine"),
    "warm-render": ("backend.commands.warm_render", "compile the CPU rasterizer once (run at install)"),
    "train-vae": ("backend.commands.train_vae", "train a small video VAE (small configs only)"),
    "train-video": ("backend.commands.train_video", "train the camera-controlled video model"),
    "train-lrm": ("backend.commands.train_lrm", "train the LaLRM (latents -> Gaussians)"),
    "train-refiner": ("backend.commands.train_refiner", "train the detail layer's refiner (LaLRM frozen)"),
    "train-depth-prior": ("backend.commands.train_depth_prior", "train the depth prior (photo -> metric depth)"),
    "generate-latents": ("backend.commands.generate_latents",
                         "the video model's latents for a latent cache's clips (to fine-tune the LaLRM on)"),
}


def _load(name: str):
    return importlib.import_module(COMMANDS[name][0])


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only the chosen command's module is imported
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser(argv).parse_args(argv)  # imports the command's module: a signal may come in it
        imports_done()
        return _load(args.command).run(args)
    except InputError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt as e:
        print(f"cancelled: {e}" if str(e) else "cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001 - the last line of defence prints one line, not a traceback
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE
