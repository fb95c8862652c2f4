"""Blender camera maths with numpy only (no bpy), so it is testable without Blender.

The formulas are those of shared/design/cameras.md; they reproduce
`bpy_extras.object_utils.world_to_camera_view` for every sensor fit, orientation, pixel aspect and shift.
"""
from __future__ import annotations

import numpy as np

SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
# Blender camera axes (x right, y up, looking down -z) to OpenCV axes (x right, y down, z forward).
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
ORTHONORMAL_TOLERANCE = 1e-4  # max |RᵀR - I| accepted after removing the object scale
ASPECT_TOLERANCE = 0.01  # the backend warns when image and camera aspects differ by more (pipelines/wonderland.py)


def render_size(resolution_x: int, resolution_y: int, percentage: int) -> tuple[int, int]:
    """The rendered image size in pixels: Blender truncates resolution × percentage / 100."""
    return resolution_x * percentage // 100, resolution_y * percentage // 100


def border_region(width: int, height: int, border: tuple[float, float, float, float] | None
                  ) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) in pixels, y0 counted from the TOP row, of the Render Region `border` =
    (min_x, min_y, max_x, max_y) in 0..1 (Blender's, y up) of a width × height frame; the whole frame for None.

    Blender truncates border × size in single precision (render_init_from_main), and so do we: the
    region must be exactly the size of the render result Blender hands the engine.
    """
    if border is None:
        return 0, 0, width, height
    min_x, min_y, max_x, max_y = (np.float32(v) for v in border)
    x0, x1 = int(min_x * np.float32(width)), int(max_x * np.float32(width))
    y0, y1 = int(min_y * np.float32(height)), int(max_y * np.float32(height))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the Render Region is empty ({x1 - x0}×{y1 - y0} pixels): draw a larger region "
                         "(Ctrl+B in the camera view) or turn Render Region off")
    return x0, height - y1, x1 - x0, y1 - y0


def region_intrinsics(K: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """K of the sub-image whose top-left pixel corner is (x0, y0) in the full frame (same focal length)."""
    out = np.array(K, np.float64)
    out[0, 2] -= x0
    out[1, 2] -= y0
    return out


def resolve_sensor_fit(sensor_fit: str, width: int, height: int,
                       pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0) -> str:
    """'HORIZONTAL' or 'VERTICAL': AUTO follows the wider side of the frame, counted in aspect-corrected pixels."""
    if sensor_fit not in SENSOR_FITS:
        raise ValueError(f"sensor_fit must be one of {SENSOR_FITS}, got {sensor_fit!r}")
    if sensor_fit == "AUTO":
        return "HORIZONTAL" if pixel_aspect_x * width >= pixel_aspect_y * height else "VERTICAL"
    return sensor_fit


def intrinsics_matrix(*, lens: float, sensor_width: float, sensor_height: float, sensor_fit: str,
                      width: int, height: int, pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0,
                      shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
    """K (3×3, float64, pixels at width × height) of a perspective Blender camera.

    AUTO measures the sensor with sensor_width on whichever axis it resolves to; an explicit VERTICAL fit
    uses sensor_height. Shifts are fractions of the fitted side `vf`; the principal point is in pixel-edge
    coordinates (the image spans [0, W] × [0, H], so a centred camera has cx = W/2).
    """
    if lens <= 0:
        raise ValueError(f"lens must be > 0 mm, got {lens}")
    if width <= 0 or height <= 0:
        raise ValueError(f"the render size must be positive, got {width}×{height}")
    if pixel_aspect_x <= 0 or pixel_aspect_y <= 0:
        raise ValueError(f"pixel aspect must be positive, got {pixel_aspect_x}:{pixel_aspect_y}")
    fit = resolve_sensor_fit(sensor_fit, width, height, pixel_aspect_x, pixel_aspect_y)
    sensor = sensor_height if sensor_fit == "VERTICAL" else sensor_width
    if sensor <= 0:
        raise ValueError(f"the sensor size must be > 0 mm, got {sensor}")
    vf = width if fit == "HORIZONTAL" else height * pixel_aspect_y / pixel_aspect_x
    fx = lens / sensor * vf
    fy = fx * pixel_aspect_x / pixel_aspect_y
    cx = width / 2 - shift_x * vf
    cy = height / 2 + shift_y * vf * pixel_aspect_x / pixel_aspect_y
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def opencv_c2w(matrix_world) -> np.ndarray:
    """Camera-to-world in OpenCV axes from a Blender camera's world matrix, with its scale removed.

    Like `Matrix.normalized()` (which world_to_camera_view uses), each rotation column is divided by its
    length. A mirrored (negative-scale) camera or a sheared one (non-uniform parent scale under rotation)
    has no rigid pose and is refused with a message that says how to fix it.
    """
    m = np.asarray(matrix_world, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError("the camera's world matrix must be a finite 4×4 matrix")
    lengths = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(lengths < 1e-12):
        raise ValueError("the camera has zero scale on an axis: set its scale (and its parents') to non-zero")
    rigid = m.copy()
    rigid[:3, :3] = m[:3, :3] / lengths
    rigid[3] = (0.0, 0.0, 0.0, 1.0)
    R = rigid[:3, :3]
    if np.linalg.det(R) < 0:
        raise ValueError("the camera is mirrored (negative scale on it or a parent): make every scale positive")
    if np.abs(R.T @ R - np.eye(3)).max() > ORTHONORMAL_TOLERANCE:
        raise ValueError("the camera is sheared by a non-uniform parent scale under rotation: "
                         "give the parents a uniform scale or apply it")
    return rigid @ BLENDER_TO_OPENCV


def pitch_deg(c2w: np.ndarray) -> float:
    """How far an OpenCV camera-to-world pose looks up (+) or down (−) from level, in degrees (world Z up)."""
    forward = np.asarray(c2w, np.float64)[:3, 2]
    return float(np.degrees(np.arcsin(np.clip(forward[2] / np.linalg.norm(forward), -1.0, 1.0))))


def center_crop_size(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[float, float]:
    """(w, h) of the largest centred box of aspect dst_w/dst_h inside src_w × src_h (the backend's crop)."""
    if min(src_w, src_h, dst_w, dst_h) <= 0:
        raise ValueError(f"sizes must be positive, got {src_w}×{src_h} → {dst_w}×{dst_h}")
    if src_w * dst_h >= dst_w * src_h:
        return src_h * dst_w / dst_h, float(src_h)
    return float(src_w), src_w * dst_h / dst_w


def model_crop(image_w: int, image_h: int, camera_w: int, camera_h: int, model_w: int, model_h: int
               ) -> tuple[tuple[float, float, float, float], bool]:
    """((x0, y0, w, h) of the input image the model sees, whether the image's aspect differs from the
    camera's): the backend's crop policy (pipelines/wonderland.py `model_inputs`), computed the same way.

    The image is first centre-cropped to the cameras' aspect, then image and cameras take the same centred
    crop to the model's aspect, so a 720×477 photo with a 1920×1080 camera and a 96×64 model shows
    607.5×405 pixels of the photo.
    """
    aspect_w, aspect_h = center_crop_size(image_w, image_h, camera_w, camera_h)
    cam_w, cam_h = center_crop_size(camera_w, camera_h, model_w, model_h)
    s = aspect_w / camera_w
    x0 = (image_w - aspect_w) / 2 + (camera_w - cam_w) / 2 * s
    y0 = (image_h - aspect_h) / 2 + (camera_h - cam_h) / 2 * s
    differs = abs((image_w / image_h) / (camera_w / camera_h) - 1.0) > ASPECT_TOLERANCE
    return (x0, y0, cam_w * s, cam_h * s), differs


def relative_motion(c2ws) -> tuple[float, float]:
    """(largest camera distance from camera 0, largest rotation from camera 0 in degrees) of [N, 4, 4] poses."""
    c2w = np.asarray(c2ws, dtype=np.float64).reshape(-1, 4, 4)
    distance = float(np.linalg.norm(c2w[:, :3, 3] - c2w[0, :3, 3], axis=-1).max())
    rel = np.einsum("ji,njk->nik", c2w[0, :3, :3], c2w[:, :3, :3])  # R0ᵀ Ri
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    return distance, float(np.degrees(np.arccos(cos)).max())
