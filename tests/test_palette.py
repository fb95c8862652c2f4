"""The model's palette matched to the photo's (backend/palette.py): affine colour maps, fitted at camera 0 over
the whole view and region by region, carry the photo's colours to every model Gaussian, including those camera 0
does not see."""
import torch

from backend.cameras import CameraBatch
from backend.detail import lift
from backend.gaussians import Gaussians
from backend.palette import matched_to_photo, palette_maps, recoloured
from backend.render import render

H, W = 32, 48
K = torch.tensor([[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]])
CAMERA = CameraBatch(K[None], torch.eye(4)[None], W, H)


def picture() -> torch.Tensor:
    """A smooth colour picture [H, W, 3]: blue-green ramps."""
    cols = torch.linspace(0.0, 1.0, W).expand(H, W)
    rows = torch.linspace(0.0, 1.0, H)[:, None].expand(H, W)
    return torch.stack([0.1 + 0.2 * rows, 0.3 + 0.4 * cols, 0.6 + 0.3 * rows * cols], dim=-1)


def grey(photo: torch.Tensor) -> torch.Tensor:
    """What the small LaLRM makes of a photo's colours: a dull grey of its brightness."""
    return (0.25 + 0.5 * photo.mean(dim=-1, keepdim=True)).expand_as(photo).contiguous()


def wall(colours: torch.Tensor, shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Gaussians:
    """One Gaussian per pixel at 2 m in front of camera 0, moved by `shift`."""
    g = lift(colours, torch.full((H, W), 2.0), K)
    return Gaussians(g.means + torch.tensor(shift), g.log_scales, g.quats, g.opacity_logits, g.sh0, g.sh_rest)


def view(gaussians: Gaussians, camera: CameraBatch = CAMERA):
    with torch.no_grad():
        return render(gaussians, camera)


def seen_from(gaussians: Gaussians, x: float) -> torch.Tensor:
    """The mean colour of a wall shifted x metres to the side, seen by camera 0 moved as far."""
    c2w = torch.eye(4)
    c2w[0, 3] = x
    out = view(gaussians, CameraBatch(K[None], c2w[None], W, H))
    return out.rgb[0][out.alpha[0, ..., 0] > 0.9].mean(dim=0)


def test_a_grey_model_takes_the_photos_colours_at_camera_0():
    photo = picture()
    model = wall(grey(photo))
    result, one = matched_to_photo(model, photo, CAMERA)
    assert one is not None
    inner = (slice(2, H - 2), slice(2, W - 2))
    error_before = float((view(model).rgb[0] - photo)[inner].abs().mean())
    error_after = float((view(result).rgb[0] - photo)[inner].abs().mean())
    error_one = float((view(recoloured(model, one)).rgb[0] - photo)[inner].abs().mean())
    assert error_before > 0.1
    assert error_one < 0.3 * error_before       # one map brings the blue-green back, roughly (brightness alone
                                                # cannot say where the photo is green rather than blue)
    assert error_after < 0.5 * error_one        # the regions' maps, where


def test_regions_carry_their_own_colours_past_the_photos_edges():
    photo = torch.zeros(H, W, 3)
    photo[:, :W // 2] = torch.tensor([0.8, 0.2, 0.2])                     # red on the left, blue on the right
    photo[:, W // 2:] = torch.tensor([0.2, 0.2, 0.8])
    shown = wall(torch.full((H, W, 3), 0.5))
    left, right = wall(torch.full((H, W, 3), 0.5), (-10.0, 0.0, 0.0)), wall(torch.full((H, W, 3), 0.5), (10.0, 0.0, 0.0))
    behind = wall(torch.full((H, W, 3), 0.5), (0.0, 0.0, -4.0))           # at z = -2: behind camera 0
    assert float(view(Gaussians.cat([left, right, behind])).alpha.max()) < 1e-3   # camera 0 sees none of them
    result, one = matched_to_photo(Gaussians.cat([shown, left, right, behind]), photo, CAMERA)
    n = len(shown)
    red, blue = seen_from(result[n:2 * n], -10.0), seen_from(result[2 * n:3 * n], 10.0)
    assert float(red[0] - red[2]) > 0.3 and float(blue[2] - blue[0]) > 0.3   # red past the left edge, blue past
                                                                             # the right
    behind_rgb = recoloured(behind, one).sh0
    assert torch.allclose(result[3 * n:].sh0, behind_rgb, atol=1e-5)      # behind the camera: the one map
    purple = torch.cat([torch.full((3,), 0.5), torch.ones(1)]) @ one
    assert abs(float(purple[0] - purple[2])) < 0.1                        # which is the photo's average


def test_a_one_colour_photo_gives_tame_maps():
    photo = torch.tensor([0.2, 0.3, 0.8]).expand(H, W, 3).contiguous()
    model = wall(torch.full((H, W, 3), 0.5))
    one, regions = palette_maps(view(model), photo)
    flat = view(recoloured(model, one)).rgb[0][4:-4, 4:-4].mean(dim=(0, 1))
    assert torch.allclose(flat, photo[0, 0], atol=0.05)                  # the model's grey takes the photo's blue
    white = torch.cat([torch.ones(3), torch.ones(1)]) @ torch.cat([one[None], regions.reshape(-1, 4, 3)])
    assert bool((white > -0.2).all() and (white < 1.6).all())            # and a colour it lacks stays a colour


def test_a_model_that_covers_little_of_the_view_is_left_as_it_is():
    photo = picture()
    model = wall(grey(photo))
    corner = torch.zeros(H, W, dtype=torch.bool)
    corner[:4, :4] = True
    few = model[corner.reshape(-1)]
    result, one = matched_to_photo(few, photo, CAMERA)
    assert one is None and torch.equal(result.sh0, few.sh0)
