"""Scene readers on small datasets written here: the cameras they return put a known 3D point on the
pixel where the test drew it, and bad files are reported with file and line."""
import json
from pathlib import Path

import camera_geometry
import numpy as np
import pytest
import torch
from PIL import Image

from backend.data import DataProblem, Scene, load_scenes, require_scenes, split_scenes
from backend.cameras import CameraBatch
from backend.errors import InputError

POINT = np.array([0.8, 4.0, 0.6])  # world point seen by every test camera (world Z up), off their axes
TARGET = np.array([0.0, 4.0, 0.0])


def look_at(eye, target=TARGET) -> np.ndarray:
    return camera_geometry.look_at(eye, target)


def project(K, c2w, point=POINT) -> np.ndarray:
    return camera_geometry.project(K, c2w, point)


def intrinsics(fx, fy, cx, cy) -> np.ndarray:
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def dot_image(path: Path, width: int, height: int, uv) -> None:
    """A black image with a white 3x3 square on the pixel that holds point uv (pixel-edge coordinates)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    i, j = int(np.floor(uv[0])), int(np.floor(uv[1]))
    pixels[max(j - 1, 0):j + 2, max(i - 1, 0):i + 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def assert_sees_point(scene: Scene) -> None:
    """Every frame's camera projects POINT onto a white pixel of that frame's image."""
    for n, path in enumerate(scene.frames):
        u, v = project(scene.cameras.K[n].double().numpy(), scene.cameras.c2w[n].double().numpy())
        pixels = np.asarray(Image.open(path).convert("L"))
        assert pixels.shape == (scene.cameras.height, scene.cameras.width)
        assert pixels[int(v), int(u)] == 255, (path, u, v)


EYES = [(0.0, 0.0, 0.5), (0.4, 0.2, 0.6), (0.8, 0.5, 0.4)]


# --- RealEstate10K ---------------------------------------------------------------------------------

def write_re10k(camera_file: Path, frame_dir: Path, width: int, height: int, Ks, c2ws, timestamps) -> None:
    lines = ["https://www.youtube.com/watch?v=test"]
    for t, K, c2w in zip(timestamps, Ks, c2ws):
        w2c = np.linalg.inv(c2w)[:3]
        values = [K[0, 0] / width, K[1, 1] / height, K[0, 2] / width, K[1, 2] / height, 0, 0, *w2c.reshape(-1)]
        lines.append(" ".join([str(t)] + [repr(float(x)) for x in values]))
        dot_image(frame_dir / f"{t}.png", width, height, project(K, c2w))
    camera_file.parent.mkdir(parents=True, exist_ok=True)
    camera_file.write_text("\n".join(lines) + "\n")


def test_realestate10k_cameras_project_onto_the_drawn_dot_in_both_layouts(tmp_path):
    width, height = 64, 48
    Ks = [intrinsics(50.0, 52.0, 33.0, 23.5), intrinsics(40.0, 41.0, 31.0, 25.0), intrinsics(45.0, 45.0, 32.0, 24.0)]
    c2ws = [look_at(e) for e in EYES]
    stamps = [0, 33366, 66733]
    # usual layout: ROOT/train/ID.txt + ROOT/frames/ID/; and frames beside the camera file: ROOT/test/ID/
    write_re10k(tmp_path / "train" / "aaa.txt", tmp_path / "frames" / "aaa", width, height, Ks, c2ws, stamps)
    write_re10k(tmp_path / "test" / "bbb.txt", tmp_path / "test" / "bbb", width, height, Ks[:2], c2ws[:2], stamps[:2])
    (tmp_path / "README.txt").write_text("not a camera file\n")

    scenes, problems = load_scenes(tmp_path)

    assert problems == []
    assert [s.name for s in scenes] == ["bbb", "aaa"]  # depth first, in name order: test/ before train/
    aaa = scenes[1]
    assert aaa.source == str(tmp_path / "train" / "aaa.txt")
    assert [p.name for p in aaa.frames] == ["0.png", "33366.png", "66733.png"]
    assert (aaa.cameras.width, aaa.cameras.height) == (width, height)
    torch.testing.assert_close(aaa.cameras.K.double(), torch.tensor(np.stack(Ks)), atol=1e-5, rtol=0)
    torch.testing.assert_close(aaa.cameras.c2w.double(), torch.tensor(np.stack(c2ws)), atol=1e-5, rtol=0)
    for scene in scenes:
        assert_sees_point(scene)


def test_realestate10k_malformed_lines_are_reported_with_file_and_line(tmp_path):
    width, height = 32, 24
    K, c2w = intrinsics(30.0, 30.0, 16.0, 12.0), look_at(EYES[0])
    write_re10k(tmp_path / "good.txt", tmp_path / "good", width, height, [K, K], [c2w, c2w], [0, 1])
    write_re10k(tmp_path / "short.txt", tmp_path / "short", width, height, [K, K], [c2w, c2w], [0, 1])
    lines = (tmp_path / "short.txt").read_text().splitlines()
    (tmp_path / "short.txt").write_text("\n".join(lines[:2] + [" ".join(lines[2].split()[:18])]) + "\n")
    write_re10k(tmp_path / "skew.txt", tmp_path / "skew", width, height, [K], [c2w], [0])
    fields = (tmp_path / "skew.txt").read_text().splitlines()[1].split()
    fields[7] = "2.0"  # r11: no longer a rotation
    (tmp_path / "skew.txt").write_text("url\n" + " ".join(fields) + "\n")
    write_re10k(tmp_path / "nan.txt", tmp_path / "nan", width, height, [K], [c2w], [0])
    fields = (tmp_path / "nan.txt").read_text().splitlines()[1].split()
    fields[2] = "nan"
    (tmp_path / "nan.txt").write_text("url\n" + " ".join(fields) + "\n")
    write_re10k(tmp_path / "gap.txt", tmp_path / "gap", width, height, [K, K], [c2w, c2w], [0, 1])
    (tmp_path / "gap" / "1.png").unlink()

    scenes, problems = load_scenes(tmp_path, format="realestate10k")

    assert [s.name for s in scenes] == ["good"]
    by_file = {p.path.name: p for p in problems}
    assert set(by_file) == {"short.txt", "skew.txt", "nan.txt", "gap.txt"}
    assert by_file["short.txt"].line == 3 and "expected 19 fields" in by_file["short.txt"].reason
    assert by_file["skew.txt"].line == 2 and "not a rotation" in by_file["skew.txt"].reason
    assert by_file["nan.txt"].line == 2 and "field 3 is nan" in by_file["nan.txt"].reason
    assert by_file["gap.txt"].line is None and "1 of 2 frames have no image" in by_file["gap.txt"].reason
    assert str(by_file["short.txt"]) == f"{tmp_path / 'short.txt'}:3: {by_file['short.txt'].reason}"


# --- nerfstudio / DL3DV ----------------------------------------------------------------------------

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def test_nerfstudio_opengl_poses_become_opencv_and_K_follows_the_downscaled_images(tmp_path):
    scene_dir = tmp_path / "dl3dv" / "0a1b"
    full_w, full_h = 80, 60
    K_full = intrinsics(70.0, 68.0, 41.0, 29.0)
    c2ws = [look_at(e) for e in EYES]
    frames = []
    for n, c2w in reversed(list(enumerate(c2ws))):  # listed out of order: the reader sorts by file name
        frames.append({"file_path": f"images/frame_{n + 1:05d}.png",
                       "transform_matrix": (c2w @ GL_TO_CV).tolist()})  # OpenGL camera-to-world
        # only the 2x downscaled copies exist, as in DL3DV's downloads
        dot_image(scene_dir / "images_2" / f"frame_{n + 1:05d}.png", full_w // 2, full_h // 2,
                  project(K_full, c2w) / 2)
    transforms = {"camera_model": "OPENCV", "fl_x": 70.0, "fl_y": 68.0, "cx": 41.0, "cy": 29.0,
                  "w": full_w, "h": full_h, "k1": 0.01, "frames": frames}
    (scene_dir / "transforms.json").write_text(json.dumps(transforms, indent=2))

    scenes, problems = load_scenes(tmp_path)

    assert problems == []
    [scene] = scenes
    assert scene.name == "dl3dv/0a1b"
    assert [p.relative_to(scene_dir).as_posix() for p in scene.frames] == [
        "images_2/frame_00001.png", "images_2/frame_00002.png", "images_2/frame_00003.png"]
    assert (scene.cameras.width, scene.cameras.height) == (40, 30)
    expected_K = intrinsics(35.0, 34.0, 20.5, 14.5)
    torch.testing.assert_close(scene.cameras.K.double(), torch.tensor(expected_K).expand(3, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(scene.cameras.c2w.double(), torch.tensor(np.stack(c2ws)), atol=1e-6, rtol=0)
    assert_sees_point(scene)


def test_nerfstudio_identity_opengl_camera_looks_down_minus_z(tmp_path):
    """Hand-computed: OpenGL identity (looking down -Z, +Y up) is OpenCV diag(1, -1, -1, 1)."""
    dot_image(tmp_path / "s" / "images" / "a.png", 20, 10, (10.5, 5.5))
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(
        {"fl_x": 10.0, "fl_y": 10.0, "cx": 10.0, "cy": 5.0, "w": 20, "h": 10,
         "frames": [{"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist()}]}))
    [scene], _ = load_scenes(tmp_path, format="nerfstudio")
    torch.testing.assert_close(scene.cameras.c2w[0], torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))
    # a point 2 units in front of the camera (world -Z) and 1 unit up (world +Y) is above the centre
    u, v = project(scene.cameras.K[0].double().numpy(), scene.cameras.c2w[0].double().numpy(),
                   np.array([0.0, 1.0, -2.0]))
    assert (u, v) == pytest.approx((10.0, 0.0))


def test_nerfstudio_malformed_files_are_reported_with_file_and_line(tmp_path):
    (tmp_path / "broken").mkdir()
    broken = '{\n "fl_x": 10,\n "frames": [\n  {"file_path": "a.png",}\n ]\n}\n'  # trailing comma, line 4
    (tmp_path / "broken" / "transforms.json").write_text(broken)
    good_frame = {"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist()}
    bad_frame = {"file_path": "images/b.png", "transform_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    (tmp_path / "badframe" / "images").mkdir(parents=True)
    text = json.dumps({"fl_x": 10.0, "w": 20, "h": 10, "frames": [good_frame, bad_frame]}, indent=1)
    (tmp_path / "badframe" / "transforms.json").write_text(text)
    bad_line = text.splitlines().index('   "file_path": "images/b.png",')  # the line before opens the frame
    (tmp_path / "fisheye").mkdir()
    (tmp_path / "fisheye" / "transforms.json").write_text(json.dumps(
        {"camera_model": "OPENCV_FISHEYE", "fl_x": 10.0, "frames": [good_frame]}))

    scenes, problems = load_scenes(tmp_path)

    assert scenes == []
    by_scene = {p.path.parent.name: p for p in problems}
    assert by_scene["broken"].path == tmp_path / "broken" / "transforms.json"
    assert by_scene["broken"].line == 4 and "not valid JSON" in by_scene["broken"].reason
    assert by_scene["badframe"].line == bad_line and "frames[1].transform_matrix" in by_scene["badframe"].reason
    assert "not a perspective camera" in by_scene["fisheye"].reason


# --- our folder format -----------------------------------------------------------------------------

def write_folder_scene(directory: Path, width: int, height: int, Ks, c2ws, image_scale: int = 1,
                       files: dict | None = None) -> None:
    frames = []
    for n, (K, c2w) in enumerate(zip(Ks, c2ws)):
        entry = {"frame": n + 1, "K": K.tolist(), "c2w": c2w.tolist()}
        name = (files or {}).get(n, f"{n:04d}.png")
        if name != f"{n:04d}.png":
            entry["file"] = name
        frames.append(entry)
        dot_image(directory / "frames" / name, width * image_scale, height * image_scale,
                  project(K, c2w) * image_scale)
    (directory / "cameras.json").write_text(json.dumps({"width": width, "height": height, "frames": frames},
                                                       indent=1))


def test_folder_format_reads_cameras_json_and_rescales_K_to_the_images(tmp_path):
    Ks = [intrinsics(40.0, 40.0, 24.0, 16.0)] * 3
    c2ws = [look_at(e) for e in EYES]
    write_folder_scene(tmp_path / "synthetic" / "scene_a", 48, 32, Ks, c2ws, files={1: "custom.png"})
    write_folder_scene(tmp_path / "synthetic" / "scene_b", 48, 32, Ks, c2ws, image_scale=2)

    scenes, problems = load_scenes([tmp_path / "synthetic"], format="folder")

    assert problems == []
    a, b = scenes
    assert (a.name, b.name) == ("scene_a", "scene_b")
    assert [p.name for p in a.frames] == ["0000.png", "custom.png", "0002.png"]
    assert a.cameras.frames == [1, 2, 3]
    torch.testing.assert_close(a.cameras.K.double(), torch.tensor(np.stack(Ks)), atol=1e-6, rtol=0)
    torch.testing.assert_close(a.cameras.c2w.double(), torch.tensor(np.stack(c2ws)), atol=1e-6, rtol=0)
    assert (b.cameras.width, b.cameras.height) == (96, 64)
    torch.testing.assert_close(b.cameras.K.double(), 2 * torch.tensor(np.stack(Ks)) * torch.tensor(
        [1.0, 1.0, 0.5]).reshape(3, 1), atol=1e-6, rtol=0)
    for scene in scenes:
        assert_sees_point(scene)


def test_folder_format_problems_name_the_file_and_frame_line(tmp_path):
    Ks, c2ws = [intrinsics(40.0, 40.0, 24.0, 16.0)] * 2, [look_at(e) for e in EYES[:2]]
    write_folder_scene(tmp_path / "mirrored", 48, 32, Ks, c2ws)
    data = json.loads((tmp_path / "mirrored" / "cameras.json").read_text())
    data["frames"][1]["c2w"][0][0] *= -1
    text = json.dumps(data, indent=1)
    (tmp_path / "mirrored" / "cameras.json").write_text(text)
    write_folder_scene(tmp_path / "missing", 48, 32, Ks, c2ws)
    (tmp_path / "missing" / "frames" / "0001.png").unlink()

    scenes, problems = load_scenes(tmp_path, min_frames=2)

    assert scenes == []
    by_scene = {p.path.parent.name: p for p in problems}
    assert by_scene["mirrored"].line == text.splitlines().index('   "frame": 2,')
    assert "frames[1] (frame 2).c2w" in by_scene["mirrored"].reason
    assert "frames/0001.png is missing" in by_scene["missing"].reason


def test_min_frames_and_too_few_scenes_give_a_clear_input_error(tmp_path):
    Ks, c2ws = [intrinsics(40.0, 40.0, 24.0, 16.0)] * 2, [look_at(e) for e in EYES[:2]]
    write_folder_scene(tmp_path / "two_frames", 48, 32, Ks, c2ws)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "transforms.json").write_text("{")

    scenes, problems = load_scenes(tmp_path, min_frames=3)

    assert scenes == [] and len(problems) == 2
    with pytest.raises(InputError) as info:
        require_scenes(scenes, problems, 1, "video training data")
    message = str(info.value)
    assert "video training data: 0 usable scene(s), at least 1 needed; 2 problem(s) found" in message
    assert str(tmp_path / "junk" / "transforms.json") + ":1: not valid JSON" in message
    assert "fewer than the 3 needed" in message
    with pytest.raises(InputError, match="no scene found"):
        require_scenes([], [], 1, "LaLRM data")
    with pytest.raises(InputError, match="does not exist"):
        load_scenes(tmp_path / "nowhere")
    with pytest.raises(InputError, match="unknown data format"):
        load_scenes(tmp_path, format="colmap")


def test_split_by_scene_is_disjoint_deterministic_and_order_independent():
    cams = CameraBatch(torch.eye(3)[None], torch.eye(4)[None], 8, 8)
    scenes = [Scene(f"scene_{i:02d}", [Path("x.png")], cams, "x") for i in range(40)]
    scenes.append(Scene("scene_07", [Path("y.png")], cams, "y"))  # same name twice: stays together

    train, val = split_scenes(scenes, 0.25, seed=3)
    train2, val2 = split_scenes(list(reversed(scenes)), 0.25, seed=3)
    _, val_other = split_scenes(scenes, 0.25, seed=4)

    names = lambda ss: {s.name for s in ss}  # noqa: E731
    assert len(names(val)) == 10 and names(train) | names(val) == names(scenes)
    assert names(train).isdisjoint(names(val))
    assert names(val2) == names(val) and names(train2) == names(train)
    assert names(val_other) != names(val)
    assert len(train) + len(val) == len(scenes)
    assert split_scenes(scenes[:2], 0.01, seed=0)[1] != []  # at least one validation scene
    assert [s.name for s in split_scenes(scenes, 0.0, seed=0)[0]] == [s.name for s in scenes]
    assert split_scenes(scenes, 0.0, seed=0)[1] == []
    with pytest.raises(InputError, match="outside"):
        split_scenes(scenes, 1.0, seed=0)


def test_data_problem_formats_path_and_line():
    assert str(DataProblem(Path("a/b.txt"), 7, "bad")) == "a/b.txt:7: bad"
    assert str(DataProblem(Path("a/b.txt"), None, "bad")) == "a/b.txt: bad"
