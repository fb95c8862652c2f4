"""The photo's lens from its EXIF, as a Blender camera's (wonderland_blender.photo_lens, without Blender)."""
import importlib.util
import io
import math
import struct
from pathlib import Path

import pytest
from PIL import Image

_ROOT = Path(__file__).resolve().parents[1] / "wonderland_blender"


def _load(name):
    # by file, like test_intrinsics: the package's siblings import bpy
    spec = importlib.util.spec_from_file_location(f"wonderland_{name}_under_test", _ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lens = _load("photo_lens")
intr = _load("intrinsics")


def photo_bytes(fmt: str, size=(64, 48), focal_35mm=None, exif_tags=None) -> bytes:
    """A photo written by Pillow, with FocalLengthIn35mmFilm (and any other Exif-IFD tags) when given."""
    exif = Image.Exif()
    exif[0x010F] = "Test camera"                     # Make, in IFD0: EXIF present without the tag too
    exif_ifd = exif.get_ifd(lens.EXIF_IFD_POINTER)
    if focal_35mm is not None:
        exif_ifd[lens.FOCAL_LENGTH_35MM] = focal_35mm
    exif_ifd.update(exif_tags or {})
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(buffer, fmt, exif=exif.tobytes())
    return buffer.getvalue()


def test_module_imports_the_standard_library_only():
    imports = {line.split()[1] for line in (_ROOT / "photo_lens.py").read_text().splitlines()
               if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "math", "struct"}, imports


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_reads_the_35mm_focal_length_pillow_wrote(fmt):
    assert lens.focal_length_35mm(photo_bytes(fmt, focal_35mm=26)) == 26.0
    assert lens.focal_length_35mm(photo_bytes(fmt, focal_35mm=85, exif_tags={0x9003: "2026:12:07 10:00:00"})) == 85.0


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_no_tag_zero_or_no_exif_is_unknown(fmt):
    assert lens.focal_length_35mm(photo_bytes(fmt)) is None                     # EXIF without the tag
    assert lens.focal_length_35mm(photo_bytes(fmt, focal_35mm=0)) is None       # EXIF's "unknown"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, fmt)
    assert lens.focal_length_35mm(buffer.getvalue()) is None                    # no EXIF at all


def big_endian_exif_jpeg(focal: int) -> bytes:
    """A JPEG head with a Motorola-order ('MM') EXIF, as many cameras write it (Pillow writes Intel order)."""
    exif_ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", lens.FOCAL_LENGTH_35MM, 3, 1, focal, 0) + b"\0" * 4
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", lens.EXIF_IFD_POINTER, 4, 1, 8 + 18) + b"\0" * 4
    tiff = b"MM" + struct.pack(">HI", 42, 8) + ifd0 + exif_ifd
    app1 = b"Exif\0\0" + tiff
    return b"\xff\xd8" + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b"\xff\xd9"


def test_reads_motorola_byte_order():
    assert lens.focal_length_35mm(big_endian_exif_jpeg(28)) == 28.0


def test_damaged_exif_is_unknown_not_an_error():
    data = photo_bytes("JPEG", focal_35mm=26)
    start = data.index(b"Exif\0\0")
    for cut in (start + 8, start + 14, start + 30, start + 60):
        assert lens.focal_length_35mm(data[:cut]) is None
    assert lens.focal_length_35mm(b"") is None
    assert lens.focal_length_35mm(b"GIF89a" + b"\0" * 40) is None


def diagonal_view(K, width, height) -> float:
    """The diagonal angle of view (radians) of a centred pinhole camera K [3][3] at width × height."""
    return 2 * math.atan(math.hypot(width / (2 * K[0][0]), height / (2 * K[1][1])))


def equivalent_view(focal_35mm: float) -> float:
    """The diagonal angle of view (radians) a 35 mm-equivalent focal length stands for."""
    return 2 * math.atan(lens.FILM_DIAGONAL_MM / (2 * focal_35mm))


@pytest.mark.parametrize("width, height", [(3000, 2000), (4032, 3024), (1920, 1080), (3024, 4032), (1000, 1000)])
@pytest.mark.parametrize("focal", [13.0, 26.0, 50.0, 120.0])
def test_blender_camera_sees_the_photo_s_diagonal_angle(width, height, focal):
    """The lens set on a 36 mm AUTO-fit camera at the photo's resolution gives the diagonal angle of view the
    35 mm-equivalent focal length means: that of a 43.27 mm diagonal behind a lens of that focal length."""
    mm = lens.blender_lens(focal, width, height)
    K = intr.intrinsics_matrix(lens=mm, sensor_width=36.0, sensor_height=24.0, sensor_fit="AUTO",
                               width=width, height=height)
    assert diagonal_view(K, width, height) == pytest.approx(equivalent_view(focal), rel=1e-9)


def test_a_3_2_photo_s_lens_is_its_equivalent_and_a_4_3_photo_s_is_longer():
    assert lens.blender_lens(26.0, 3000, 2000) == pytest.approx(26.0)
    assert lens.blender_lens(26.0, 4032, 3024) == pytest.approx(26.0 * 36 * 5 / (4 * lens.FILM_DIAGONAL_MM))
    with pytest.raises(ValueError, match="positive"):
        lens.blender_lens(0.0, 3000, 2000)


@pytest.mark.parametrize("size, long_side, expected", [((4032, 3024), 1920, (1920, 1440)),
                                                       ((3024, 4032), 1920, (1440, 1920)),
                                                       ((720, 477), 1920, (1920, 1272)),
                                                       ((512, 512), 1080, (1080, 1080))])
def test_photo_resolution_keeps_the_long_side(size, long_side, expected):
    assert lens.photo_resolution(*size, long_side) == expected
