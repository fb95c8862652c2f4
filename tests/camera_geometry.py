"""Camera helpers shared by the data tests: a look-at pose and the pinhole projection of a world point."""
import numpy as np


def look_at(eye, target) -> np.ndarray:
    """OpenCV camera-to-world (x right, y down, z forward) at `eye` looking at `target`, world Z up."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    c2w[:3, 3] = eye
    return c2w


def project(K, c2w, point) -> np.ndarray:
    """Pixel coordinates of a world point in front of the camera."""
    K, c2w = np.asarray(K, float), np.asarray(c2w, float)
    cam = c2w[:3, :3].T @ (np.asarray(point, float) - c2w[:3, 3])
    assert cam[2] > 0
    return (K @ (cam / cam[2]))[:2]
