"""benchmarks/bench_checkpoints.py: every checkpoint of a train-lrm run scored through the full pipeline."""
import numpy as np
from test_train_lrm import train_lrm_cli, write_scene

from backend.models.model_dir import write_vae, write_video
from backend.pipelines.wonderland import load_pipeline


def test_scores_each_checkpoint_in_place_of_the_models_lalrm(tmp_path, capsys, bench_checkpoints):
    for i in range(2):
        write_scene(tmp_path / "data" / f"scene{i}", seed=i)
        (tmp_path / "data" / f"scene{i}" / "depth").mkdir()
        np.save(tmp_path / "data" / f"scene{i}" / "depth" / "0000.npy", np.full((64, 96), 2.0, np.float32))
    model = tmp_path / "model"
    tiny = load_pipeline("tiny")
    write_vae(model, tiny.vae)
    write_video(model, tiny.transformer, tiny.scheduler)
    assert train_lrm_cli("--data", tmp_path / "data", "--out", tmp_path / "run", "--model-config", "tiny",
                         "--vae", model, "--steps", "2", "--views", "1", "--render-size", "16", "24",
                         "--stride", "1", "1", "--perceptual-weight", "0", "--val-fraction", "0",
                         "--checkpoint-every", "1", "--export", model) == 0

    capsys.readouterr()
    assert bench_checkpoints.main(["--model", str(model), "--run", str(tmp_path / "run"),
                                   "--data", str(tmp_path / "data")]) == 0
    table = capsys.readouterr().out.split("\n\n")[-1]
    rows = {line.split("|")[1].strip(): line.split("|")[2:6] for line in table.splitlines()[2:]}
    assert rows["unchanged baseline"][3].strip() == "–" and float(rows["run/step_00000001"][3]) >= 0  # depth AbsRel
    assert list(rows) == ["unchanged baseline", f"{model} (its own)", "run/step_00000001", "run/step_00000002"]
    # the model folder holds the exported last step: same scores; the first step's weights score otherwise
    assert rows["run/step_00000002"] == rows[f"{model} (its own)"] != rows["run/step_00000001"]
