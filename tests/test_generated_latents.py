"""Latent caches of the video model's samples (backend.data.generated_latents, `generate-latents`) and
fine-tuning the LaLRM on them (`train-lrm --latent-cache VAE GENERATED --init MODEL`), with the tiny model."""
import argparse
import dataclasses

import pytest
import torch
from test_clips import make_scene
from test_train_lrm import train_lrm_cli

from backend.data import ClipDataset
from backend.data.generated_latents import build_generated_cache
from backend.data.latent_cache import LatentCacheDataset, build_latent_cache, clip_generator
from backend.errors import InputError
from backend.models.lalrm import LaLRM
from backend.models.model_dir import write_lalrm, write_vae, write_video
from backend.models.weights import load_state_dict
from backend.pipelines.camera_i2v import sample_video_latents
from backend.pipelines.wonderland import load_pipeline
from backend.training.diffusion import clip_plucker


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """The tiny pipeline, a VAE latent cache of two textured clips, and a generated cache of it (2 samples)."""
    root = tmp_path_factory.mktemp("caches")
    pipe = load_pipeline("tiny")
    scenes = [make_scene(root, name, 9, 96, 64, texture=True) for name in "ab"]
    build_latent_cache(pipe.vae, ClipDataset(scenes, 9, 64, 96, fixed=True), root / "vae")
    source = LatentCacheDataset(root / "vae", vae=pipe.vae)
    progress = []
    build_generated_cache(pipe.transformer, pipe.scheduler, source, root / "generated", samples=2, steps=2,
                          batch_size=3, on_progress=lambda *p: progress.append(p))
    return pipe, source, root / "generated", progress


def test_generated_cache_holds_the_video_models_samples_of_each_clip(caches):
    pipe, source, path, progress = caches
    assert progress == [(0, 4), (3, 4), (4, 4)]
    generated = LatentCacheDataset(path, vae=pipe.vae, num_frames=9, height=64, width=96)
    assert len(generated) == 4 and generated.signature["generated"]["samples"] == 2
    for index in range(4):
        item, clip = generated[index], source[index // 2]
        assert item["scene"] == clip["scene"]
        assert torch.equal(item["frames"], clip["frames"]) and torch.equal(item["c2w"], clip["c2w"])
        assert torch.equal(item["latents"][0], clip["latents"][0])         # the condition, kept as generate keeps it
        assert (item["latents"][1:] - clip["latents"][1:]).abs().mean() > 0.1  # sampled, not the clip's encoding
    assert (generated[0]["latents"][1:] - generated[1]["latents"][1:]).abs().mean() > 0.1  # two noises

    # entry 3 (clip 1, sample 1) is what the sampler makes for that clip alone: the batch does not matter
    clip = source[1]
    plucker = clip_plucker(clip["K"][None], clip["c2w"][None], 96, 64, *source.latent_shape[-2:])
    alone = sample_video_latents(pipe.transformer, pipe.scheduler, clip["latents"][None, :1], plucker, steps=2,
                                 generator=[clip_generator(0, 3)], keep_image_frame=True)
    torch.testing.assert_close(generated[3]["latents"], alone[0], atol=1e-5, rtol=1e-5)


def test_generated_cache_resumes_and_refuses_a_wrong_source(caches):
    pipe, source, path, _ = caches
    files = {p: p.stat().st_mtime_ns for p in path.glob("clip_*.safetensors")}
    progress = []
    build_generated_cache(pipe.transformer, pipe.scheduler, source, path, samples=2, steps=2,
                          on_progress=lambda *p: progress.append(p))
    assert progress == [(4, 4)]
    assert files == {p: p.stat().st_mtime_ns for p in path.glob("clip_*.safetensors")}
    with pytest.raises(InputError, match="already holds generated latents"):
        build_generated_cache(pipe.transformer, pipe.scheduler, LatentCacheDataset(path), path.parent / "again")
    with pytest.raises(InputError, match="is the source cache"):
        build_generated_cache(pipe.transformer, pipe.scheduler, source, source.path)


def test_generate_latents_command_and_fine_tuning_from_a_model_folder(caches, tmp_path):
    from backend.commands import generate_latents
    pipe, source, _, _ = caches
    model = tmp_path / "model"
    write_vae(model, pipe.vae)
    write_video(model, pipe.transformer, pipe.scheduler)
    write_lalrm(model, pipe.lalrm)
    parser = argparse.ArgumentParser()
    generate_latents.add_arguments(parser)
    out = tmp_path / "generated"
    assert generate_latents.run(parser.parse_args(["--model", str(model), "--latent-cache", str(source.path),
                                                   "--out", str(out), "--steps", "1", "--device", "cpu"])) == 0
    assert len(LatentCacheDataset(out, vae=pipe.vae)) == len(source)

    # lr 0: the exported LaLRM is exactly the --init weights, after steps over both caches
    common = ["--out", tmp_path / "run", "--model-config", "tiny", "--vae", model, "--steps", "2", "--views", "1",
              "--render-size", "16", "24", "--perceptual-weight", "0", "--val-fraction", "0", "--lr", "0"]
    assert train_lrm_cli(*common, "--latent-cache", source.path, out, "--init", model,
                         "--export", tmp_path / "exported") == 0
    exported = load_state_dict(tmp_path / "exported" / "lalrm.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in pipe.lalrm.state_dict().items())

    narrow = tmp_path / "narrow.safetensors"
    LaLRM(dataclasses.replace(pipe.lalrm.config, hidden_size=16, num_heads=2)).save_pretrained(narrow)
    with pytest.raises(InputError, match="--init .*narrow.safetensors: weights in state dict do not fit LaLRM: "
                                         "tensor '.*' has shape"):
        train_lrm_cli(*common, "--out", tmp_path / "run2", "--latent-cache", source.path, "--init", narrow)
