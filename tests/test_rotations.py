import math

import pytest
import torch

from backend.rotations import quat_multiply, quat_to_rotmat, rotmat_to_quat, slerp


def random_quats(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=dtype)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[:, :1] < 0, -q, q)


def axis_angle_quat(axis, angle: float) -> torch.Tensor:
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    return torch.cat([torch.tensor([math.cos(angle / 2)], dtype=torch.float64), math.sin(angle / 2) * axis])


def test_known_rotation_matrices():
    # 90° about z maps x to y.
    R = quat_to_rotmat(axis_angle_quat([0, 0, 1], math.pi / 2))
    expected = torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(R, expected, atol=1e-15, rtol=0)
    # 180° about x: w = 0 (the case a trace-only formula gets wrong).
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(rotmat_to_quat(R), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(rotmat_to_quat(torch.eye(3)), torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_quat_to_rotmat_normalizes_and_is_orthonormal():
    q = random_quats(64) * 3.7
    R = quat_to_rotmat(q)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand(64, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, dtype=torch.float64))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_round_trip(dtype, tol):
    q = random_quats(500, seed=1, dtype=dtype)
    back = rotmat_to_quat(quat_to_rotmat(q))
    assert back.dtype == dtype
    assert (back[:, 0] >= 0).all()
    assert (back - q).abs().max() < tol


def test_round_trip_near_180_degrees():
    # Rotations with w ~ 0 along every axis: the divisor Shepperd's method avoids.
    for axis in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 2, -3]):
        q = axis_angle_quat(axis, math.pi - 1e-9)
        back = rotmat_to_quat(quat_to_rotmat(q))
        torch.testing.assert_close(back, q, atol=1e-12, rtol=0)


def test_multiply_matches_matrix_product():
    a, b = random_quats(100, seed=2), random_quats(100, seed=3)
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b))
    # Known value: two 90° turns about z make 180° about z.
    q = axis_angle_quat([0, 0, 1], math.pi / 2)
    torch.testing.assert_close(quat_multiply(q, q), torch.tensor([0.0, 0, 0, 1], dtype=torch.float64),
                               atol=1e-15, rtol=0)


def test_slerp_midpoint_and_ends():
    q0 = axis_angle_quat([0, 0, 1], 0.2)
    q1 = axis_angle_quat([0, 0, 1], 1.4)
    torch.testing.assert_close(slerp(q0, q1, 0.5), axis_angle_quat([0, 0, 1], 0.8))
    torch.testing.assert_close(slerp(q0, q1, 0.25), axis_angle_quat([0, 0, 1], 0.5))
    torch.testing.assert_close(slerp(q0, q1, 0.0), q0)
    torch.testing.assert_close(slerp(q0, q1, 1.0), q1)


def test_slerp_general_midpoint_halves_the_relative_rotation():
    q0, q1 = random_quats(50, seed=4), random_quats(50, seed=5)
    m = slerp(q0, q1, 0.5)
    R0, R1, Rm = quat_to_rotmat(q0), quat_to_rotmat(q1), quat_to_rotmat(m)
    half = R0.transpose(-1, -2) @ Rm
    torch.testing.assert_close(half @ half, R0.transpose(-1, -2) @ R1)
    # The half-step is the short way round: its angle is at most 90°.
    assert (((half.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2) >= -1e-12).all()


def test_slerp_takes_shortest_path_for_opposite_sign():
    q0 = axis_angle_quat([1, 0, 0], 0.1)
    q1 = -axis_angle_quat([1, 0, 0], 0.5)  # same rotation as +q, other hemisphere
    m = slerp(q0, q1, 0.5)
    torch.testing.assert_close(quat_to_rotmat(m), quat_to_rotmat(axis_angle_quat([1, 0, 0], 0.3)))


def test_slerp_near_parallel_is_finite_and_batched():
    q0 = random_quats(8, seed=6)
    t = torch.linspace(0, 1, 8, dtype=torch.float64)
    out = slerp(q0, q0, t)
    torch.testing.assert_close(out, q0)
    tiny = axis_angle_quat([0, 1, 0], 1e-9)
    out = slerp(torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), tiny, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, axis_angle_quat([0, 1, 0], 5e-10), atol=1e-15, rtol=0)
