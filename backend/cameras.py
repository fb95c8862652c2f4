"""Camera batches in the OpenCV convention (x right, y down, z forward), as cameras.json stores them.

See shared/design/cameras.md for the file format and the maths.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.atomic import atomic_write_text
from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.rotations import quat_multiply, quat_to_rotmat, rotmat_to_quat, slerp


@dataclass
class CameraBatch:
    K: Tensor      # [N, 3, 3] intrinsics in pixels at width x height
    c2w: Tensor    # [N, 4, 4] camera-to-world, OpenCV axes
    width: int
    height: int
    frames: list[int] = field(default_factory=list)  # source frame numbers, informative only

    def __len__(self) -> int:
        return self.K.shape[0]

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def w2c(self) -> Tensor:
        return torch.linalg.inv(self.c2w)

    def to(self, *args, **kwargs) -> "CameraBatch":
        return CameraBatch(self.K.to(*args, **kwargs), self.c2w.to(*args, **kwargs),
                           self.width, self.height, list(self.frames))

    def __getitem__(self, index) -> "CameraBatch":
        """A sub-batch; an int keeps the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        frames = list(torch.arange(len(self))[index].tolist()) if not self.frames else \
            [self.frames[i] for i in torch.arange(len(self))[index].tolist()]
        return CameraBatch(self.K[index], self.c2w[index], self.width, self.height, frames)


# ---------------------------------------------------------------------------------------------
# cameras.json: reading (with validation), writing
# ---------------------------------------------------------------------------------------------

FORMAT_HINT = "see shared/design/cameras.md for the cameras.json format, or export it again from Blender"
FLOAT32_MAX = 3.4028234663852886e38  # the cameras are float32 tensors: a larger value would become infinite
MAX_SIDE = 65536  # pixels: beyond every image format the backend reads (JPEG stops at 65535)
ROTATION_TOLERANCE = 1e-3  # |det(R) - 1| and max |RᵀR - I|: generous for hand-written 6-digit values


def _matrix(value, rows: int, where: str, source: str) -> list[list[float]]:
    """A rows x rows list of finite numbers, or an InputError saying what is wrong with it."""
    if not isinstance(value, list) or len(value) != rows or \
            not all(isinstance(r, list) and len(r) == rows for r in value):
        raise InputError(f"{source}: {where} must be a {rows}x{rows} list of rows, got {json.dumps(value)[:120]}",
                         FORMAT_HINT)
    for r, row in enumerate(value):
        for c, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise InputError(f"{source}: {where}[{r}][{c}] must be a number, got {json.dumps(x)}",
                                 FORMAT_HINT)
            if not math.isfinite(x):
                raise InputError(f"{source}: {where}[{r}][{c}] is {x}, not a finite number",
                                 "check the exporter for a degenerate camera (zero scale, zero lens)")
            if abs(x) > FLOAT32_MAX:
                raise InputError(f"{source}: {where}[{r}][{c}] is {x}, beyond 32-bit floats (±3.4e38)",
                                 "cameras hold metres and pixels: a value this large is a broken export")
    return value


def _check_frame(frame, i: int, source: str) -> tuple[int, list, list]:
    if not isinstance(frame, dict):
        raise InputError(f"{source}: frames[{i}] must be an object with K and c2w, got {json.dumps(frame)[:80]}",
                         FORMAT_HINT)
    number = frame.get("frame", i)
    if isinstance(number, bool) or not isinstance(number, int):
        raise InputError(f"{source}: frames[{i}].frame must be an integer frame number, got {json.dumps(number)}",
                         FORMAT_HINT)
    where = f"frames[{i}] (frame {number})"
    for key in ("K", "c2w"):
        if key not in frame:
            raise InputError(f"{source}: {where} has no '{key}'", FORMAT_HINT)
    K = _matrix(frame["K"], 3, f"{where}.K", source)
    if K[2] != [0, 0, 1]:
        raise InputError(f"{source}: {where}.K last row is {K[2]}, must be [0, 0, 1]",
                         "K holds pixel intrinsics [[fx,0,cx],[0,fy,cy],[0,0,1]]")
    if not (K[0][0] > 0 and K[1][1] > 0):
        raise InputError(f"{source}: {where}.K has fx = {K[0][0]}, fy = {K[1][1]}; both must be > 0",
                         "focal lengths are in pixels and positive; a negative one means a flipped axis, "
                         "put flips into c2w instead")
    c2w = _matrix(frame["c2w"], 4, f"{where}.c2w", source)
    if c2w[3] != [0, 0, 0, 1]:
        raise InputError(f"{source}: {where}.c2w last row is {c2w[3]}, must be [0, 0, 0, 1]",
                         "c2w is a rigid camera-to-world transform")
    R = torch.tensor([row[:3] for row in c2w[:3]], dtype=torch.float64)
    det = torch.linalg.det(R).item()
    err = (R.T @ R - torch.eye(3, dtype=torch.float64)).abs().max().item()
    if err > ROTATION_TOLERANCE:
        raise InputError(f"{source}: {where}.c2w rotation is not orthonormal (max |RᵀR - I| = {err:.3g}, "
                         f"det = {det:.6g})",
                         "c2w must be rigid: remove the object scale (a uniform scale shows as det != 1) "
                         "and any shear from the camera transform")
    if abs(det - 1) > ROTATION_TOLERANCE:
        raise InputError(f"{source}: {where}.c2w rotation has determinant {det:.6g}, must be +1",
                         "a mirrored (left-handed) camera: were Blender's axes converted with "
                         "diag(1, -1, -1)? See cameras.md")
    return number, K, c2w


def cameras_from_dict(d, source: str = "cameras.json", dtype: torch.dtype = torch.float32) -> CameraBatch:
    """Validate a parsed cameras.json and build a CameraBatch; errors name `source` and the frame."""
    if not isinstance(d, dict):
        raise InputError(f"{source}: top level must be an object with width, height and frames", FORMAT_HINT)
    for key in ("width", "height"):
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_SIDE:
            raise InputError(f"{source}: '{key}' must be a positive integer (pixels) up to {MAX_SIDE}, "
                             f"got {json.dumps(v)}", FORMAT_HINT)
    frames = d.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{source}: 'frames' must be a non-empty list of cameras, got {json.dumps(frames)[:80]}",
                         "at least one camera is needed; in Blender, check the frame range")
    checked = [_check_frame(f, i, source) for i, f in enumerate(frames)]
    return CameraBatch(K=torch.tensor([k for _, k, _ in checked], dtype=dtype),
                       c2w=torch.tensor([c for _, _, c in checked], dtype=dtype),
                       width=d["width"], height=d["height"], frames=[n for n, _, _ in checked])


def cameras_to_dict(batch: CameraBatch) -> dict:
    """The cameras.json object for a batch (float values written exactly, so a round trip is bitwise)."""
    numbers = batch.frames if batch.frames else list(range(len(batch)))
    K, c2w = batch.K.detach().cpu().tolist(), batch.c2w.detach().cpu().tolist()
    return {"width": int(batch.width), "height": int(batch.height),
            "frames": [{"frame": int(f), "K": k, "c2w": c} for f, k, c in zip(numbers, K, c2w)]}


def load_cameras(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> CameraBatch:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"camera file {path} does not exist",
                         "pass --cameras pointing at the cameras.json the add-on wrote") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read camera file {path}: {e}", "pass a UTF-8 JSON file") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})",
                         FORMAT_HINT) from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read", FORMAT_HINT) from None
    return cameras_from_dict(d, source=str(path), dtype=dtype)


def save_cameras(batch: CameraBatch, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(cameras_to_dict(batch), indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# Resampling a trajectory to the model's frame count
# ---------------------------------------------------------------------------------------------

def resample(batch: CameraBatch, n: int) -> CameraBatch:
    """`n` cameras spread evenly over the trajectory (by frame index, not arc length).

    Output i sits at source position i·(N-1)/(n-1): centres and K are interpolated linearly, rotations
    by slerp. Outputs that land on a source camera (always the first and last, all of them when n == N)
    are copied bitwise. A single source camera is repeated.
    """
    if n < 1:
        raise ValueError(f"resample needs n >= 1 frames, got {n}")
    device, batch = batch.device, batch.to("cpu")  # float64 maths on the CPU: a few cameras, any device
    N = len(batch)
    src = [0] * n if N == 1 or n == 1 else [i * (N - 1) // (n - 1) for i in range(n)]
    num = [0] * n if N == 1 or n == 1 else [i * (N - 1) % (n - 1) for i in range(n)]
    den = max(n - 1, 1)
    j0 = torch.tensor(src)
    j1 = (j0 + 1).clamp(max=N - 1)
    exact = torch.tensor([k == 0 for k in num])[:, None, None]
    t = torch.tensor([k / den for k in num], dtype=torch.float64)

    K64, c2w64 = batch.K.double(), batch.c2w.double()
    q = rotmat_to_quat(c2w64[:, :3, :3])
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = quat_to_rotmat(slerp(q[j0], q[j1], t))
    c2w[:, :3, 3] = torch.lerp(c2w64[j0, :3, 3], c2w64[j1, :3, 3], t[:, None])
    K = torch.lerp(K64[j0], K64[j1], t[:, None, None])
    c2w = torch.where(exact, batch.c2w[j0], c2w.to(batch.c2w.dtype))
    K = torch.where(exact, batch.K[j0], K.to(batch.K.dtype))
    numbers = batch.frames if batch.frames else list(range(N))
    frames = [round(numbers[a] + (numbers[min(a + 1, N - 1)] - numbers[a]) * k / den) for a, k in zip(src, num)]
    return CameraBatch(K.to(device), c2w.to(device), batch.width, batch.height, frames)


# ---------------------------------------------------------------------------------------------
# Crop and resize: the intrinsics that go with the image the model sees
# ---------------------------------------------------------------------------------------------

def center_crop_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[float, float, float, float]:
    """(x0, y0, w, h): the largest centred box of aspect dst_w/dst_h inside a src_w x src_h image.

    Floats, in source pixels (pixel edges: the image spans [0, src_w] x [0, src_h]). Give it to Pillow
    unrounded as `img.resize((dst_w, dst_h), box=(x0, y0, x0 + w, y0 + h))`, which honours fractional
    boxes, so the image and the intrinsics see the very same mapping.
    """
    if src_w * dst_h >= dst_w * src_h:  # source is wider: full height, crop the sides
        w, h = src_h * dst_w / dst_h, float(src_h)
    else:
        w, h = float(src_w), src_w * dst_h / dst_w
    return (src_w - w) / 2, (src_h - h) / 2, w, h


def crop_resize_intrinsics(K: Tensor, crop_box: tuple[float, float, float, float], dst_w: int, dst_h: int) -> Tensor:
    """K [..., 3, 3] for the image cropped to box (x0, y0, w, h) and resized to dst_w x dst_h.

    A source point x (pixel-edge coordinates, like cx = W/2) lands at (x - x0) · dst_w / w, so
    fx' = fx · dst_w / w and cx' = (cx - x0) · dst_w / w (same for y). Exact, no half-pixel terms.
    """
    x0, y0, w, h = crop_box
    out = K.clone()
    out[..., 0, 2] = out[..., 0, 2] - x0
    out[..., 1, 2] = out[..., 1, 2] - y0
    out[..., 0, :] = out[..., 0, :] * (dst_w / w)
    out[..., 1, :] = out[..., 1, :] * (dst_h / h)
    return out


def fit_cameras(batch: CameraBatch, dst_w: int, dst_h: int,
                crop_box: tuple[float, float, float, float] | None = None) -> CameraBatch:
    """The cameras for images cropped to `crop_box` (default: center_crop_box) and resized to dst_w x dst_h."""
    box = crop_box if crop_box is not None else center_crop_box(batch.width, batch.height, dst_w, dst_h)
    return CameraBatch(crop_resize_intrinsics(batch.K, box, dst_w, dst_h), batch.c2w.clone(),
                       dst_w, dst_h, list(batch.frames))


# ---------------------------------------------------------------------------------------------
# Normalization relative to camera 0 (shared by training and inference)
# ---------------------------------------------------------------------------------------------

SCALE_RADIUS = 1.0
MIN_TRANSLATION = 1e-6  # below this largest camera distance (world units) the trajectory has no translation


def _rigid_inverse(T: Tensor) -> Tensor:
    R, t = T[..., :3, :3], T[..., :3, 3:]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3:] = -R.transpose(-1, -2) @ t
    out[..., 3, 3] = 1
    return out


@dataclass
class Normalization:
    """The map from normalized coordinates (camera 0 = identity, scale s) back to the caller's world.

    world = R0 · (s · x) + t0 with c2w0 = [R0 | t0]. c2w0 is float64 on the CPU; every method returns
    its input's dtype and device and is differentiable in its input.
    """
    c2w0: Tensor  # [4, 4] camera 0's camera-to-world in the caller's world
    scale: float  # s: normalized unit length in world units

    def _R0_t0(self, like: Tensor) -> tuple[Tensor, Tensor]:
        T = self.c2w0.to(device=like.device, dtype=like.dtype)
        return T[:3, :3], T[:3, 3]

    def points_to_world(self, x: Tensor) -> Tensor:
        R0, t0 = self._R0_t0(x)
        return (self.scale * x) @ R0.T + t0

    def points_to_normalized(self, x: Tensor) -> Tensor:
        R0, t0 = self._R0_t0(x)
        return ((x - t0) @ R0) / self.scale

    def gaussians_to_world(self, g: Gaussians) -> Gaussians:
        """Gaussians from normalized coordinates into the world: means and quaternions rotated,
        log-scales + log s; opacities and colours untouched (SH is left in the normalized frame)."""
        q0 = rotmat_to_quat(self.c2w0[:3, :3]).to(device=g.quats.device, dtype=g.quats.dtype)
        return Gaussians(means=self.points_to_world(g.means),
                         log_scales=g.log_scales + math.log(self.scale),
                         quats=quat_multiply(q0, g.quats),
                         opacity_logits=g.opacity_logits, sh0=g.sh0, sh_rest=g.sh_rest)

    def cameras_to_world(self, batch: CameraBatch) -> CameraBatch:
        """The exact inverse of `normalize` for the cameras."""
        c2w = batch.c2w.cpu().double().clone()
        c2w[:, :3, 3] *= self.scale
        c2w = self.c2w0 @ c2w
        return CameraBatch(batch.K.clone(), c2w.to(device=batch.device, dtype=batch.c2w.dtype),
                           batch.width, batch.height, list(batch.frames))


    def cameras_to_normalized(self, batch: CameraBatch) -> CameraBatch:
        """Any cameras (e.g. supervision views beyond a clip's inputs) in this normalized frame."""
        c2w = _rigid_inverse(self.c2w0) @ batch.c2w.cpu().double()
        c2w[:, :3, 3] /= self.scale
        return CameraBatch(batch.K.clone(), c2w.to(device=batch.device, dtype=batch.c2w.dtype),
                           batch.width, batch.height, list(batch.frames))


def normalize(batch: CameraBatch, radius: float = SCALE_RADIUS, by_path: bool = True
              ) -> tuple[CameraBatch, Normalization]:
    """Poses relative to camera 0, scaled so the trajectory has a fixed size.

    The rule (training and inference must agree, the ray-distance head's near/far are in these units):
      c2w_i' = c2w_0⁻¹ · c2w_i (camera 0 becomes the identity), then every translation is divided by
      s = max_i |t_i'| / radius, the largest distance of any camera centre from camera 0 mapped to
      `radius`; s = 1 when that distance is below 1e-6 world units (pure rotation, single camera).
    `by_path=False` keeps the world's unit (s = 1 always): the frame of a metric-scale LaLRM
    (ModelConfig.scene_scale "metric"), where a 0.25 m dolly stays 0.25 units long.
    Computed in float64; returns the batch's dtype and device and the Normalization that undoes it.
    """
    if not radius > 0:
        raise ValueError(f"normalize needs radius > 0, got {radius}")
    c2w = batch.c2w.cpu().double()
    rel = _rigid_inverse(c2w[0]) @ c2w
    distance = torch.linalg.norm(rel[:, :3, 3], dim=-1).max().item()
    scale = distance / radius if by_path and distance >= MIN_TRANSLATION else 1.0
    normalization = Normalization(c2w0=c2w[0].clone(), scale=scale)
    normalized = normalization.cameras_to_normalized(batch)
    normalized.c2w[0] = torch.eye(4, dtype=normalized.c2w.dtype)  # exactly, not up to rounding
    return normalized, normalization


def sampled_at(field: Tensor, points: Tensor, K: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Where points [N, 3] in a camera's own frame (OpenCV axes; intrinsics K [3, 3] at width × height) fall
    in its picture: a field [C, h, w] over that picture sampled there bilinearly (pixel centres at i + 0.5;
    beyond the picture, its outer half-pixels), [C, N]; whether each falls inside the picture, [N]; and whether
    it lies in front of the camera, [N]."""
    z = points[:, 2]
    depth = z.clamp_min(1e-6)
    u, v = K[0, 0] * points[:, 0] / depth + K[0, 2], K[1, 1] * points[:, 1] / depth + K[1, 2]
    grid = torch.stack([2 * u / width - 1, 2 * v / height - 1], dim=-1).to(field)
    values = F.grid_sample(field[None], grid[None, None], mode="bilinear", padding_mode="border",
                           align_corners=False)[0, :, 0]
    in_front = z > 1e-6
    return values, in_front & (grid.abs() <= 1).all(dim=-1), in_front
