"""The photo's own lens, read from its EXIF, as a Blender camera's: the default's depth prior reads the scene's
size partly from the camera's field of view, so a photo shown through a 50 mm camera it was not taken with comes
out the wrong size (a doubled focal length: ×1.16). Pure Python (no bpy), so it is tested without Blender.

Phones and cameras write the focal length as its 35 mm-film equivalent (EXIF FocalLengthIn35mmFilm): the focal
length that gives the photo's diagonal angle of view on a 36×24 mm frame. That is what is read here, from a
JPEG's APP1 segment or a PNG's eXIf chunk.
"""
from __future__ import annotations

import math
import struct

FILM_DIAGONAL_MM = math.hypot(36.0, 24.0)     # 43.27 mm: the 35 mm frame whose diagonal the equivalent uses
BLENDER_SENSOR_MM = 36.0                      # the camera's sensor width, on the long side (sensor fit AUTO)
EXIF_IFD_POINTER = 0x8769
FOCAL_LENGTH_35MM = 0xA405
_TIFF_SHORT, _TIFF_LONG = 3, 4
_HEAD_BYTES = 1 << 17                         # EXIF sits near the start: one APP1 segment is at most 64 KiB


def read_head(path: str) -> bytes:
    """The file's first bytes, enough to hold its EXIF."""
    with open(path, "rb") as fh:
        return fh.read(_HEAD_BYTES)


def _exif_tiff(data: bytes) -> bytes | None:
    """The TIFF structure EXIF is stored in, from a JPEG's APP1 'Exif' segment or a PNG's eXIf chunk."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        at = 8
        while at + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[at:at + 8])
            if kind == b"eXIf":
                return data[at + 8:at + 8 + length]
            if kind in (b"IDAT", b"IEND"):
                return None
            at += 12 + length
        return None
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in (0xD9, 0xDA):               # end of image, start of scan: no metadata after
            return None
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        segment = data[at + 4:at + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            return segment[6:]
        at += 2 + length
    return None


def _ifd_entries(tiff: bytes, order: str, offset: int) -> dict[int, tuple[int, int, bytes]]:
    """{tag: (type, count, the 4-byte value field)} of the IFD at `offset`."""
    (count,) = struct.unpack(order + "H", tiff[offset:offset + 2])
    entries = {}
    for i in range(count):
        entry = tiff[offset + 2 + 12 * i:offset + 14 + 12 * i]
        tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        entries[tag] = (kind, n, entry[8:12])
    return entries


def focal_length_35mm(data: bytes) -> float | None:
    """FocalLengthIn35mmFilm (mm) of a JPEG or PNG file's bytes (its head is enough); None when the file has no
    EXIF, no such tag, 0 (EXIF's 'unknown') or a damaged structure."""
    tiff = _exif_tiff(data)
    if tiff is None or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd0,) = struct.unpack(order + "I", tiff[4:8])
        pointer = _ifd_entries(tiff, order, ifd0).get(EXIF_IFD_POINTER)
        if pointer is None or pointer[0] != _TIFF_LONG:
            return None
        kind, _, value = _ifd_entries(tiff, order, struct.unpack(order + "I", pointer[2])[0]).get(
            FOCAL_LENGTH_35MM, (None, 0, b""))
        if kind != _TIFF_SHORT:
            return None
        (focal,) = struct.unpack(order + "H", value[:2])
    except struct.error:
        return None
    return float(focal) if focal > 0 else None


def blender_lens(focal_35mm: float, width: int, height: int) -> float:
    """The lens (mm) of a Blender camera with a 36 mm sensor on the long side (sensor fit AUTO) that sees a
    width × height photo's diagonal angle of view, as its 35 mm-equivalent focal length says (3:2: the same)."""
    if focal_35mm <= 0 or width <= 0 or height <= 0:
        raise ValueError(f"need a positive focal length and size, got {focal_35mm} mm, {width}×{height}")
    long_side = max(width, height)
    return focal_35mm * BLENDER_SENSOR_MM * math.hypot(width, height) / (long_side * FILM_DIAGONAL_MM)


def photo_resolution(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The render resolution with the photo's aspect and `long_side` pixels on its long side."""
    if width >= height:
        return long_side, max(1, round(long_side * height / width))
    return max(1, round(long_side * width / height)), long_side
