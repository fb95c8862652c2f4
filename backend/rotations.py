"""Rotations as unit quaternions (w, x, y, z) and 3x3 matrices; batched, any device and dtype.

The quaternion order wxyz is the one PLY files, gsplat and backend.gaussians use.
"""
from __future__ import annotations

import torch
from torch import Tensor


def quat_to_rotmat(q: Tensor) -> Tensor:
    """[..., 4] wxyz (any norm > 0) -> [..., 3, 3] rotation matrix. q is normalized first."""
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def rotmat_to_quat(R: Tensor) -> Tensor:
    """[..., 3, 3] rotation matrix -> [..., 4] unit quaternion wxyz with w >= 0.

    Shepperd's method: of the four ways to recover the quaternion, use the one whose divisor
    (4 * the largest of |w|, |x|, |y|, |z|) is largest, so no branch divides by a small number.
    """
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    trace = m00 + m11 + m22
    # 4 * squared component for each candidate: w, x, y, z.
    four_sq = torch.stack([1 + trace, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    # Candidate i is 4 * q_i * q (exact up to the scale 4 * q_i).
    candidates = torch.stack([
        torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m21 + m12], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], -1),
    ], -2)  # [..., 4, 4]
    best = four_sq.argmax(dim=-1, keepdim=True)
    q = torch.take_along_dim(candidates, best[..., None].expand(*best.shape, 4), dim=-2).squeeze(-2)
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a ⊗ b of wxyz quaternions (rotation b first, then a); broadcasts."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def slerp(q0: Tensor, q1: Tensor, t: Tensor | float) -> Tensor:
    """Spherical interpolation of unit wxyz quaternions along the shortest arc; broadcasts.

    t = 0 gives q0 and t = 1 gives q1 (or -q1, the same rotation). Nearly parallel inputs fall back to
    normalized linear interpolation, where slerp's sin(θ) divisor would lose precision.
    """
    q0 = q0 / torch.linalg.norm(q0, dim=-1, keepdim=True)
    q1 = q1 / torch.linalg.norm(q1, dim=-1, keepdim=True)
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    # Angle between the unit vectors; atan2 stays accurate where acos(dot) does not (dot near 1).
    theta = 2 * torch.atan2(torch.linalg.norm(q0 - q1, dim=-1, keepdim=True),
                            torch.linalg.norm(q0 + q1, dim=-1, keepdim=True))
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6
    safe_sin = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe_sin)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe_sin)
    q = w0 * q0 + w1 * q1
    return q / torch.linalg.norm(q, dim=-1, keepdim=True)
