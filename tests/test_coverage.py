"""Thin cover made opaque (backend/coverage.py): where the move's views see the model's Gaussians only faintly,
their optical depth is raised until the background no longer shows; cover, holes and unseen Gaussians stay."""
import torch

from backend.cameras import CameraBatch
from backend.coverage import MAX_BOOST, TARGET, boosted, opaque_along
from backend.detail import lift
from backend.gaussians import Gaussians
from backend.render import render

H, W = 32, 48
K = torch.tensor([[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]])
CAMERA = CameraBatch(K[None], torch.eye(4)[None], W, H)
NONE = Gaussians(*(torch.zeros((0,) + shape) for shape in ((3,), (3,), (4,), (), (3,))), None)


def wall(opacity: float, depth: float = 2.0, shift: float = 0.0) -> Gaussians:
    """One Gaussian per pixel of a smooth colour picture at camera z `depth`, each of `opacity`."""
    cols = torch.linspace(0.0, 1.0, W).expand(H, W)
    rows = torch.linspace(0.0, 1.0, H)[:, None].expand(H, W)
    g = lift(torch.stack([cols, rows, 1 - cols], dim=-1), torch.full((H, W), depth), K)
    logit = torch.logit(torch.tensor(opacity))
    return Gaussians(g.means + torch.tensor([shift, 0.0, 0.0]), g.log_scales, g.quats,
                     torch.full_like(g.opacity_logits, float(logit)), g.sh0, g.sh_rest)


def view(gaussians: Gaussians):
    with torch.no_grad():
        return render(gaussians, CAMERA)


def test_boosting_multiplies_the_optical_depth():
    g = wall(0.3)
    k = torch.linspace(1.0, 5.0, len(g))
    expected = 1 - (1 - 0.3) ** k
    assert torch.allclose(boosted(g, k).opacities, expected, atol=1e-5)
    assert torch.allclose(boosted(g, torch.ones(len(g))).opacity_logits, g.opacity_logits, atol=1e-5)


def test_a_faint_wall_becomes_opaque_and_keeps_its_colours():
    faint = wall(0.1)
    before = view(faint)
    result, raised = opaque_along(faint, NONE, CAMERA)
    after = view(result)
    inner = (slice(3, H - 3), slice(3, W - 3))
    alpha_before, alpha_after = before.alpha[0, ..., 0][inner], after.alpha[0, ..., 0][inner]
    assert float(alpha_before.max()) < 0.6 and float(alpha_after.min()) > 0.9
    colour_before = before.rgb[0][inner] / alpha_before[..., None]
    colour_after = after.rgb[0][inner] / alpha_after[..., None]
    assert float((colour_after - colour_before).abs().max()) < 0.03   # the same picture, no longer see-through
    assert raised == len(faint)
    assert float(result.opacities.max()) <= 1 - (1 - 0.1) ** MAX_BOOST + 1e-5


def test_cover_holes_and_unseen_gaussians_stay_as_they_are():
    behind = wall(0.3, depth=3.0)            # behind an opaque layer: already covered
    cover = wall(0.999, depth=2.0)
    result, raised = opaque_along(behind, cover, CAMERA)
    assert raised == 0 and torch.equal(result.opacity_logits, behind.opacity_logits)

    hole = wall(0.01)                        # a pixel this faint holds nothing to raise
    assert float(view(hole).alpha.max()) < 0.05
    result, raised = opaque_along(hole, NONE, CAMERA)
    assert raised == 0 and torch.equal(result.opacity_logits, hole.opacity_logits)

    seen, beside = wall(0.3), wall(0.3, shift=10.0)      # the second outside every view
    result, raised = opaque_along(Gaussians.cat([seen, beside]), NONE, CAMERA)
    assert raised == len(seen) and torch.equal(result.opacity_logits[len(seen):], beside.opacity_logits)


def test_the_boost_reaches_the_target_where_the_cap_allows():
    result, _ = opaque_along(wall(0.5), NONE, CAMERA)
    alpha = view(result).alpha[0, ..., 0][3:-3, 3:-3]
    assert abs(float(alpha.median()) - TARGET) < 0.02      # about: a splat's opacity fades over its footprint
