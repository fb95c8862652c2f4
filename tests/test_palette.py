"""The model's palette matched to the photo's (backend/palette.py): one affine colour map, fitted at camera 0,
carries the photo's colours to every model Gaussian, including those camera 0 does not see."""
import torch

from backend.cameras import CameraBatch
from backend.detail import lift
from backend.gaussians import Gaussians
from backend.palette import matched, matched_to_photo, palette_map
from backend.render import render

H, W = 32, 48
K = torch.tensor([[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]])
CAMERA = CameraBatch(K[None], torch.eye(4)[None], W, H)
SIDE = CameraBatch(K[None], torch.tensor([[1.0, 0.0, 0.0, 10.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                                          [0.0, 0.0, 0.0, 1.0]])[None], W, H)    # camera 0 moved 10 m right


def picture() -> torch.Tensor:
    """A smooth colour picture [H, W, 3]: blue-green ramps."""
    cols = torch.linspace(0.0, 1.0, W).expand(H, W)
    rows = torch.linspace(0.0, 1.0, H)[:, None].expand(H, W)
    return torch.stack([0.1 + 0.2 * rows, 0.3 + 0.4 * cols, 0.6 + 0.3 * rows * cols], dim=-1)


def grey(photo: torch.Tensor) -> torch.Tensor:
    """What the small LaLRM makes of a photo's colours: a dull grey of its brightness."""
    return (0.25 + 0.5 * photo.mean(dim=-1, keepdim=True)).expand_as(photo).contiguous()


def view(gaussians: Gaussians, camera: CameraBatch = CAMERA):
    with torch.no_grad():
        return render(gaussians, camera)


def test_the_map_takes_a_grey_model_to_the_photos_colours_at_camera_0():
    photo = picture()
    model = lift(grey(photo), torch.full((H, W), 2.0), K)
    before = view(model).rgb[0]
    weights = palette_map(view(model), photo)
    after = view(matched(model, weights)).rgb[0]
    inner = (slice(2, H - 2), slice(2, W - 2))
    error_before = float((before - photo)[inner].abs().mean())
    error_after = float((after - photo)[inner].abs().mean())
    assert error_before > 0.1
    assert error_after < 0.3 * error_before    # the blue-green comes back (not exactly: brightness alone
                                               # cannot say where the photo is green rather than blue)


def test_the_map_reaches_gaussians_camera_0_does_not_see():
    photo = picture()
    wall = lift(grey(photo), torch.full((H, W), 2.0), K)
    hidden = Gaussians(wall.means + torch.tensor([10.0, 0.0, 0.0]), wall.log_scales, wall.quats,
                       wall.opacity_logits, wall.sh0, wall.sh_rest)   # the same wall 10 m to the right
    both = Gaussians.cat([wall, hidden])
    assert float(view(hidden).alpha.max()) < 1e-3          # camera 0 does not see the second wall
    result, weights = matched_to_photo(both, photo, CAMERA)
    assert weights is not None
    side = view(result[torch.arange(len(both)) >= len(wall)], SIDE).rgb[0]
    mean = side[view(hidden, SIDE).alpha[0, ..., 0] > 0.9].mean(dim=0)
    assert float(mean[2] - mean[0]) > 0.3                  # blue, not grey


def test_a_one_colour_photo_gives_a_tame_map():
    photo = torch.tensor([0.2, 0.3, 0.8]).expand(H, W, 3).contiguous()
    model = lift(torch.full((H, W, 3), 0.5), torch.full((H, W), 2.0), K)
    weights = palette_map(view(model), photo)
    flat = view(matched(model, weights)).rgb[0][4:-4, 4:-4].mean(dim=(0, 1))
    assert torch.allclose(flat, photo[0, 0], atol=0.05)    # the model's grey takes the photo's blue
    white = torch.cat([torch.ones(3), torch.ones(1)]) @ weights
    assert bool((white > -0.2).all() and (white < 1.6).all())   # and a colour the photo lacks stays a colour


def test_a_model_that_covers_little_of_the_view_is_left_as_it_is():
    photo = picture()
    model = lift(grey(photo), torch.full((H, W), 2.0), K)
    corner = torch.zeros(H, W, dtype=torch.bool)
    corner[:4, :4] = True
    few = model[corner.reshape(-1)]
    result, weights = matched_to_photo(few, photo, CAMERA)
    assert weights is None and torch.equal(result.sh0, few.sh0)
