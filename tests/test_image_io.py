"""Image files in and out through OpenImageIO: bit exactness, windows, channels, attributes,
parts, integer formats, damaged files and atomic writes."""

from __future__ import annotations

import os

import numpy as np
import OpenImageIO as oiio
import pytest

from vfxswap.atomic import is_temp_path
from vfxswap.errors import VfxSwapError
from vfxswap.plates.image import Box, Image, list_parts, read_image, read_info, write_image

from conftest import need_shared

TEST_IMAGES = "exr/openexr_images/TestImages"
DISPLAY_WINDOW = "exr/openexr_images/DisplayWindow"

CHROMA_709 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)


def u16(pixels: np.ndarray) -> np.ndarray:
    assert pixels.dtype == np.float16
    return pixels.view(np.uint16)


def only_files(folder) -> list[str]:
    return sorted(os.listdir(folder))


# --- bit exactness ------------------------------------------------------------------------

def test_all_half_values_round_trip_bit_exact(shared_file, tmp_path):
    src = shared_file(f"{TEST_IMAGES}/AllHalfValues.exr")
    image = read_image(src, dtype="native")
    assert image.pixels.dtype == np.float16
    bits = u16(image.pixels)
    # The file really holds every half bit pattern: NaN payloads, +-Inf, denormals, -0.
    assert len(np.unique(bits)) == 65536
    assert np.isnan(image.pixels).any() and np.isposinf(image.pixels).any() and np.isneginf(image.pixels).any()
    out = tmp_path / "copy.exr"
    write_image(out, image)
    back = read_image(out, dtype="native")
    assert back.channels == image.channels
    assert back.source_format == "half"
    np.testing.assert_array_equal(u16(back.pixels), bits)
    # The float32 engine view keeps the specials too (reading never sanitises).
    as_float = read_image(out)
    assert as_float.pixels.dtype == np.float32
    assert np.isnan(as_float.pixels).sum() == np.isnan(image.pixels).sum()
    assert np.isinf(as_float.pixels).sum() == np.isinf(image.pixels).sum()


def test_half_narrowing_and_widening_are_ieee_bit_for_bit(tmp_path, rng):
    """Half files are written from float32 and read as float32 through our own (faster)
    conversions: rounded to nearest even, overflow to Inf, denormals, and NaN payloads
    (signalling ones too) exactly as numpy (and OIIO) convert them."""
    halves = np.arange(65536, dtype=np.uint16).view(np.float16)
    finite = np.sort(halves[np.isfinite(halves)].astype(np.float64))
    mid = ((finite[:-1] + finite[1:]) / 2).astype(np.float32)  # ties, and their neighbours
    values = np.concatenate([rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                             mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf)),
                             np.array([65504, 65519.99, 65520, 1e10, -65520, np.inf, -np.inf, -0.0], np.float32)])
    values = np.resize(values, (len(values) // 512 + 1) * 512).reshape(-1, 128, 4)
    write_image(tmp_path / "h.exr", Image.from_array(values), dtype="half")
    with np.errstate(over="ignore"):
        expect = values.astype(np.float16)
    np.testing.assert_array_equal(u16(read_image(tmp_path / "h.exr", dtype="native").pixels), u16(expect))
    every = np.resize(halves, (128, 128, 4))  # every half bit pattern, read back as float32
    write_image(tmp_path / "all.exr", Image.from_array(every), dtype="half")
    got = read_image(tmp_path / "all.exr").pixels
    np.testing.assert_array_equal(got.view(np.uint32), every.astype(np.float32).view(np.uint32))


def test_float_write_is_exact(tmp_path, rng):
    px = (rng.standard_normal((17, 23, 3)) * 1e3).astype(np.float32)
    px[0, 0] = [np.nan, np.inf, -np.inf]
    px[1, 1] = [1e-40, -0.0, 3.0e38]  # denormal, negative zero, huge
    write_image(tmp_path / "f.exr", Image.from_array(px), dtype="float")
    back = read_image(tmp_path / "f.exr", dtype="native")
    assert back.pixels.dtype == np.float32
    np.testing.assert_array_equal(back.pixels.view(np.uint32), px.view(np.uint32))


# --- windows ------------------------------------------------------------------------------

def test_display_window_files_keep_windows(shared_data, tmp_path):
    files = sorted((shared_data / DISPLAY_WINDOW).glob("*.exr"))
    if not files:
        need_shared("no DisplayWindow test images")
    for src in files:
        image = read_image(src, dtype="native")
        info = read_info(src)
        assert (image.data_window, image.display_window) == (info.data_window, info.display_window)
        assert image.pixels.shape[:2] == (image.data_window.height, image.data_window.width)
        out = tmp_path / src.name
        write_image(out, image)
        back = read_image(out, dtype="native")
        assert back.data_window == image.data_window, src.name
        assert back.display_window == image.display_window, src.name
        np.testing.assert_array_equal(u16(back.pixels), u16(image.pixels), err_msg=src.name)


def test_display_window_known_cases(shared_file):
    t08 = read_image(shared_file(f"{DISPLAY_WINDOW}/t08.exr"))
    assert t08.data_window == Box(30, 40, 400, 300)
    assert t08.display_window == Box(0, 0, 501, 401)
    canvas = t08.on_display_window(fill=-1.0)
    assert canvas.shape == (401, 501, 3)
    np.testing.assert_array_equal(canvas[40:340, 30:430], t08.pixels)
    assert (canvas[:40] == -1).all() and (canvas[:, :30] == -1).all() and (canvas[340:] == -1).all()

    t10 = read_image(shared_file(f"{DISPLAY_WINDOW}/t10.exr"))
    assert t10.display_window.x < 0
    assert t10.display_window == Box(-100, 0, 100, 300)
    assert t10.data_window == Box(0, 0, 400, 300)
    assert t10.data_window.intersect(t10.display_window).width == 0
    assert (t10.on_display_window(fill=0.25) == 0.25).all()  # no overlap: all background


def test_write_data_window_smaller_than_display(tmp_path, rng):
    px = rng.uniform(-0.5, 8.0, (20, 30, 4)).astype(np.float32)
    image = Image.from_array(px, origin=(5, 7), display_window=Box(0, 0, 64, 48))
    assert image.data_window == Box(5, 7, 30, 20)
    write_image(tmp_path / "dw.exr", image, dtype="float")
    back = read_image(tmp_path / "dw.exr")
    assert back.data_window == Box(5, 7, 30, 20)
    assert back.display_window == Box(0, 0, 64, 48)
    assert back.channels == ("R", "G", "B", "A")
    np.testing.assert_array_equal(back.pixels, px)
    # A negative data-window origin, partly outside the display window, is kept too.
    image = Image.from_array(px, origin=(-10, -3), display_window=Box(0, 0, 64, 48))
    write_image(tmp_path / "neg.exr", image, dtype="float")
    back = read_image(tmp_path / "neg.exr")
    assert back.data_window == Box(-10, -3, 30, 20)
    np.testing.assert_array_equal(back.pixels, px)


def test_windowless_formats_get_pixels_on_display_window(tmp_path, smooth_rgb):
    image = Image.from_array(smooth_rgb[:10, :12], origin=(3, 2), display_window=Box(0, 0, 20, 16))
    write_image(tmp_path / "w.png", image)
    back = read_image(tmp_path / "w.png")
    assert back.data_window == back.display_window == Box(0, 0, 20, 16)
    np.testing.assert_allclose(back.pixels[2:12, 3:15], smooth_rgb[:10, :12], atol=0.5 / 255 + 1e-6)
    assert (back.pixels[:2] == 0).all() and (back.pixels[12:] == 0).all() and (back.pixels[:, :3] == 0).all()


def _tiled_exr(path, px, origin, display, tile=16):
    """A tiled half EXR (write_image writes scanlines only)."""
    h, w, c = px.shape
    spec = oiio.ImageSpec(w, h, c, "half")
    spec.x, spec.y = origin
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = display.x, display.y, display.width, display.height
    spec.tile_width = spec.tile_height = tile
    spec.attribute("compression", "zip")
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec) and out.write_image(px) and out.close()


def test_rows_read_equals_the_full_reads_rows(tmp_path, rng):
    """read_image(rows=...) counts rows from the display window's top (overscan rows negative),
    returns exactly the full read's rows with a data window that places them where they were,
    for multi-chunk ZIP EXR (scanline and tiled, overscan and an offset display window) and PNG."""
    px = rng.uniform(-1.0, 8.0, (100, 64, 4)).astype(np.float32)
    cases = {"over.exr": ((5, -7), Box(0, 0, 64, 80)),  # 7 overscan rows above, 13 below the display
             "offset.exr": ((-3, 20), Box(-10, 12, 80, 90)),  # display window not at 0
             "tiled.exr": ((5, -7), Box(0, 0, 64, 80))}
    for name, (origin, display) in cases.items():
        if name == "tiled.exr":
            _tiled_exr(tmp_path / name, px.astype(np.float16), origin, display)
        else:
            write_image(tmp_path / name, Image.from_array(px, origin=origin, display_window=display),
                        compression="zip")
        full = read_image(tmp_path / name)
        for rows in [(3, 41), (-7, 2), (-30, 10), (15, 16), (60, 200), (0, 80), (-100, 500)]:
            part = read_image(tmp_path / name, rows=rows)
            y0 = max(full.data_window.y, display.y + rows[0])
            y1 = max(y0, min(full.data_window.y1, display.y + rows[1]))
            assert part.data_window == Box(full.data_window.x, y0, full.data_window.width, y1 - y0), (name, rows)
            assert (part.display_window, part.attributes, part.channels) == \
                (full.display_window, full.attributes, full.channels)
            dy = y0 - full.data_window.y
            np.testing.assert_array_equal(part.pixels, full.pixels[dy:dy + y1 - y0], err_msg=f"{name} {rows}")
            box = Box(display.x, display.y + max(rows[0], -20), display.width, 40)  # placed on a window
            inside = Box(box.x, y0, box.width, y1 - y0).intersect(box)
            sl = slice(inside.y - box.y, inside.y1 - box.y)
            np.testing.assert_array_equal(part.on_window(box)[sl], full.on_window(box)[sl])
        native = read_image(tmp_path / name, rows=(10, 30), dtype="native")
        assert native.pixels.dtype == np.float16
        dy = display.y + 10 - full.data_window.y
        np.testing.assert_array_equal(u16(native.pixels),
                                      u16(read_image(tmp_path / name, dtype="native").pixels[dy:dy + 20]))
        header = read_image(tmp_path / name, rows=(0, 0))  # an empty range: the header alone
        assert header.pixels.shape == (0, 64, 4) and header.data_window.height == 0
        assert header.display_window == full.display_window and header.attributes == full.attributes
    # only the chunks holding the rows are decoded: a file cut short reads above the cut
    data = (tmp_path / "over.exr").read_bytes()
    (tmp_path / "cut.exr").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VfxSwapError, match="corrupt or truncated"):
        read_image(tmp_path / "cut.exr")
    np.testing.assert_array_equal(read_image(tmp_path / "cut.exr", rows=(-7, 20)).pixels,
                                  px[:27].astype(np.float16).astype(np.float32))
    with pytest.raises(VfxSwapError, match="corrupt or truncated"):
        read_image(tmp_path / "cut.exr", rows=(60, 93))
    # PNG (no windows): rows of the whole picture, channel selection kept
    write_image(tmp_path / "p.png", Image.from_array(np.clip(px[:, :, :3] / 8, 0, 1)))
    full = read_image(tmp_path / "p.png")
    part = read_image(tmp_path / "p.png", rows=(33, 71), channels=["G", "B"])
    assert part.data_window == Box(0, 33, 64, 38) and part.channels == ("G", "B")
    np.testing.assert_array_equal(part.pixels, full.pixels[33:71, :, 1:])


def test_a_reader_that_cannot_read_a_range_of_rows_is_read_whole_and_cut(rng):
    from vfxswap.plates.image import _read_rows

    class WholeOnly:  # a format whose reader refuses scanline ranges
        def __init__(self, px):
            self.px, self.whole = px, 0

        def read_scanlines(self, *args):
            return None

        def geterror(self):
            return "cannot read scanlines"

        def read_image(self, *args):
            self.whole += 1
            return self.px

    px = rng.uniform(0.0, 1.0, (50, 8, 3)).astype(np.float32)
    spec = oiio.ImageSpec(8, 50, 3, "float")
    spec.y = -5
    inp = WholeOnly(px)
    np.testing.assert_array_equal(_read_rows(inp, 0, spec, Box(0, 10, 8, 12), 0, 3, "float"), px[15:27])
    assert inp.whole == 1


# --- channels, types, compression ---------------------------------------------------------

@pytest.mark.parametrize("dtype, atol", [("float", 0.0), ("half", 1e-2)])
@pytest.mark.parametrize("compression", [None, "zip", "piz"])
def test_channel_names_types_lossless_compressions(tmp_path, rng, dtype, atol, compression):
    px = rng.uniform(-2.0, 20.0, (12, 16, 4)).astype(np.float32)
    names = ("face.R", "face.G", "face.B", "face.A")
    write_image(tmp_path / "c.exr", Image.from_array(px, names), dtype=dtype, compression=compression)
    back = read_image(tmp_path / "c.exr")
    assert back.channels == names
    assert back.source_format == dtype
    assert back.attribute("compression") == (compression or "zip")
    if dtype == "float":
        np.testing.assert_array_equal(back.pixels, px)
    else:
        np.testing.assert_array_equal(back.pixels, px.astype(np.float16).astype(np.float32))
        np.testing.assert_allclose(back.pixels, px, rtol=1e-3, atol=atol)


@pytest.mark.parametrize("compression", ["dwaa", "dwaa:45", "dwab"])
def test_dwa_compression_is_close(tmp_path, smooth_rgb, compression):
    write_image(tmp_path / "d.exr", Image.from_array(smooth_rgb * 4.0), compression=compression)
    back = read_image(tmp_path / "d.exr")
    assert back.attribute("compression") == compression.partition(":")[0]
    assert np.abs(back.pixels - smooth_rgb * 4.0).mean() < 0.01
    assert np.abs(back.pixels - smooth_rgb * 4.0).max() < 0.2


@pytest.mark.parametrize("compression", ["zap", "dwaa:x", "zip:5", "lzw", ""])
def test_unknown_compression_is_an_error(tmp_path, smooth_rgb, compression):
    with pytest.raises(VfxSwapError, match="compression"):
        write_image(tmp_path / "x.exr", Image.from_array(smooth_rgb), compression=compression)
    assert only_files(tmp_path) == []


def test_compression_on_a_format_without_choice(tmp_path, smooth_rgb):
    with pytest.raises(VfxSwapError, match="compression"):
        write_image(tmp_path / "x.png", Image.from_array(smooth_rgb), compression="zip")
    with pytest.raises(VfxSwapError, match="pixel type"):
        write_image(tmp_path / "x.exr", Image.from_array(smooth_rgb), dtype="int7")
    with pytest.raises(VfxSwapError, match="no writer"):
        write_image(tmp_path / "x.notanimage", Image.from_array(smooth_rgb))
    assert only_files(tmp_path) == []


@pytest.mark.parametrize("dtype", ["float", "half"])
def test_seven_channels(tmp_path, rng, dtype):
    px = rng.uniform(0, 1, (9, 11, 7)).astype(np.float32)
    image = Image.from_array(px)
    assert image.channels == tuple(f"channel{i}" for i in range(7))
    write_image(tmp_path / "seven.exr", image, dtype=dtype)
    back = read_image(tmp_path / "seven.exr")
    assert back.channels == image.channels
    np.testing.assert_allclose(back.pixels, px, atol=0 if dtype == "float" else 5e-4)
    # Named channels with mixed layers, read back in file order, then one layer and a subset.
    names = ("R", "G", "B", "A", "Z", "face.matte", "face.depth")
    write_image(tmp_path / "named.exr", Image.from_array(px, names), dtype=dtype)
    back = read_image(tmp_path / "named.exr")
    assert set(back.channels) == set(names)
    for i, name in enumerate(names):
        np.testing.assert_allclose(back.pixels[:, :, back.channels.index(name)], px[:, :, i],
                                   atol=0 if dtype == "float" else 5e-4)
    pick = read_image(tmp_path / "named.exr", channels=["face.depth", "R"])
    assert pick.channels == ("face.depth", "R")
    np.testing.assert_allclose(pick.pixels, px[:, :, [6, 0]], atol=0 if dtype == "float" else 5e-4)


def test_from_array_validates_channel_count():
    with pytest.raises(ValueError):
        Image.from_array(np.zeros((2, 2, 3), np.float32), ("R", "G"))
    gray = Image.from_array(np.zeros((2, 3), np.float32))
    assert gray.pixels.shape == (2, 3, 1) and gray.channels == ("R",)


# --- attributes ---------------------------------------------------------------------------

def test_attributes_carried(tmp_path, smooth_rgb):
    image = Image.from_array(smooth_rgb)
    image.set_attribute("PixelAspectRatio", 2.0)
    image.set_attribute("smpte:TimeCode", (0x01023004, 0), "timecode")
    image.set_attribute("chromaticities", CHROMA_709, "float[8]")
    image.set_attribute("oiio:ColorSpace", "ACEScg")
    image.set_attribute("vfxswap:test", "hello from vfxswap")
    image.set_attribute("vfxswap:frame", 1001)
    write_image(tmp_path / "a.exr", image)
    back = read_image(tmp_path / "a.exr")
    assert back.pixel_aspect == 2.0
    assert back.attributes["PixelAspectRatio"][0] == "float"
    kind, value = back.attributes["smpte:TimeCode"]
    assert kind == "timecode"
    assert tuple(value) == (0x01023004, 0)
    kind, value = back.attributes["chromaticities"]
    assert kind == "float[8]"
    np.testing.assert_allclose(value, CHROMA_709, atol=1e-6)
    assert back.attributes["vfxswap:test"] == ("string", "hello from vfxswap")
    assert back.attributes["vfxswap:frame"] == ("int", 1001)
    # OIIO 3 stores a colour space as its interop ID (ACEScg -> lin_ap1_scene); it must name
    # the same space in the config.
    import PyOpenColorIO as OCIO

    config = OCIO.Config.CreateFromFile("ocio://studio-config-latest")
    assert back.colorspace is not None
    assert config.getColorSpace(back.colorspace).getName() == "ACEScg"
    # Carried again through a second generation, with the file's own encoding facts dropped.
    write_image(tmp_path / "b.exr", back, compression="piz")
    again = read_image(tmp_path / "b.exr")
    assert again.attribute("vfxswap:test") == "hello from vfxswap"
    assert again.attribute("compression") == "piz"
    assert tuple(again.attribute("smpte:TimeCode")) == (0x01023004, 0)
    assert config.getColorSpace(again.colorspace).getName() == "ACEScg"


def test_studio_colorspace_name_carried(tmp_path, smooth_rgb):
    image = Image.from_array(smooth_rgb)
    image.set_attribute("oiio:ColorSpace", "ARRI LogC4")  # a space of the studio config
    write_image(tmp_path / "cs.exr", image)
    assert read_image(tmp_path / "cs.exr").colorspace is not None


def test_real_chromaticities_read(shared_file):
    info = read_info(shared_file("exr/openexr_images/ScanLines/Carrots.exr"))
    kind, value = info.attributes["chromaticities"]
    assert kind == "float[8]"
    np.testing.assert_allclose(value, (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767), atol=1e-5)


# --- multi-part and layers ----------------------------------------------------------------

@pytest.fixture
def two_part_exr(tmp_path, rng):
    beauty = rng.uniform(0, 4, (6, 8, 3)).astype(np.float32)
    face = rng.uniform(0, 1, (5, 7, 4)).astype(np.float32)
    spec0 = oiio.ImageSpec(8, 6, 3, "float")
    spec0.attribute("name", "beauty")
    spec1 = oiio.ImageSpec(7, 5, 4, "half")
    spec1.full_width, spec1.full_height = 8, 6  # parts share one display window
    spec1.channelnames = ("face.R", "face.G", "face.B", "face.A")
    spec1.attribute("name", "face")
    path = tmp_path / "two_part.exr"
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), [spec0, spec1]), out.geterror()
    assert out.write_image(beauty), out.geterror()
    assert out.open(str(path), spec1, "AppendSubimage"), out.geterror()
    assert out.write_image(face), out.geterror()
    assert out.close()
    return path, beauty, face


def test_multi_part_read(two_part_exr):
    path, beauty, face = two_part_exr
    parts = list_parts(path)
    assert [(p.part, p.part_name) for p in parts] == [(0, "beauty"), (1, "face")]
    assert parts[0].channels == ("R", "G", "B") and parts[0].format == "float"
    assert parts[1].channels == ("face.R", "face.G", "face.B", "face.A") and parts[1].format == "half"
    assert parts[1].data_window == Box(0, 0, 7, 5)
    assert read_info(path, part="face").part == 1

    first = read_image(path)
    assert first.channels == ("R", "G", "B")
    np.testing.assert_array_equal(first.pixels, beauty)

    by_index = read_image(path, part=1)
    by_name = read_image(path, part="face")
    expect = face.astype(np.float16).astype(np.float32)
    for image in (by_index, by_name):
        assert image.channels == ("face.R", "face.G", "face.B", "face.A")
        assert image.pixels.shape == (5, 7, 4)
        assert image.source_format == "half"
        np.testing.assert_array_equal(image.pixels, expect)
    assert read_image(path, part="face", dtype="native").pixels.dtype == np.float16
    picked = read_image(path, part="face", channels=["face.B", "face.R"])
    np.testing.assert_array_equal(picked.pixels, expect[:, :, [2, 0]])


def test_multi_part_errors(two_part_exr):
    path, _, _ = two_part_exr
    with pytest.raises(VfxSwapError, match="no part named 'nope'.*beauty, face"):
        read_image(path, part="nope")
    with pytest.raises(VfxSwapError, match="no part 2"):
        read_image(path, part=2)
    with pytest.raises(VfxSwapError, match="no part -1"):
        read_info(path, part=-1)


def test_layer_selection(tmp_path, rng):
    px = rng.uniform(0, 1, (6, 5, 8)).astype(np.float32)
    names = ("R", "G", "B", "A", "face.R", "face.G", "face.B", "face.A")
    write_image(tmp_path / "layers.exr", Image.from_array(px, names), dtype="float")
    full = read_image(tmp_path / "layers.exr")
    assert full.layers() == ["", "face"]

    face = read_image(tmp_path / "layers.exr", layer="face")
    assert face.channels == ("face.R", "face.G", "face.B", "face.A")
    np.testing.assert_array_equal(face.pixels, px[:, :, full.channels.index("face.R"):][:, :, :4])

    selected = full.select(layer="face")
    assert selected.channels == face.channels
    np.testing.assert_array_equal(selected.pixels, face.pixels)
    main = full.select(layer="")
    assert main.channels == ("R", "G", "B", "A")
    np.testing.assert_array_equal(main.pixels, px[:, :, [full.channels.index(c) for c in main.channels]])
    assert full.select(["face.A", "G"]).channels == ("face.A", "G")

    with pytest.raises(VfxSwapError, match="no channel"):
        read_image(tmp_path / "layers.exr", layer="hair")
    with pytest.raises(VfxSwapError, match="no layer 'hair'"):
        full.select(layer="hair")
    with pytest.raises(VfxSwapError, match="no channel"):
        full.select(["face.Z"])


# --- integer formats ----------------------------------------------------------------------

@pytest.mark.parametrize("ext, fmt, bits, step", [
    ("dpx", "uint16", 10, 1 / 1023),
    ("tif", "uint16", 16, 1 / 65535),
    ("tiff", "uint16", 16, 1 / 65535),
    ("png", "uint8", 8, 1 / 255),
])
def test_integer_round_trip(tmp_path, rng, ext, fmt, bits, step):
    px = rng.uniform(0, 1, (16, 24, 3)).astype(np.float32)
    write_image(tmp_path / f"x.{ext}", Image.from_array(px))
    back = read_image(tmp_path / f"x.{ext}")
    assert back.source_format == fmt
    assert back.pixels.dtype == np.float32 and back.pixels.shape == px.shape
    if bits != 8:
        assert read_info(tmp_path / f"x.{ext}").attributes["oiio:BitsPerSample"][1] == bits
    # Within one code value (OIIO's 16 -> 10 bit DPX packing truncates rather than rounds).
    assert np.abs(back.pixels - px).max() <= step * 1.01
    assert np.abs(back.pixels - px).mean() <= step * 0.6
    # Values on the code grid come back as the same code.
    codes = np.round(px / step)
    write_image(tmp_path / f"g.{ext}", Image.from_array((codes * step).astype(np.float32)))
    np.testing.assert_array_equal(np.round(read_image(tmp_path / f"g.{ext}").pixels / step), codes)


def test_integer_formats_clip_out_of_range(tmp_path):
    px = np.array([[[np.nan, np.inf, -np.inf], [2.0, -1.0, 0.5]]], np.float32)
    for ext in ("png", "tif", "dpx"):
        write_image(tmp_path / f"n.{ext}", Image.from_array(px))
        back = read_image(tmp_path / f"n.{ext}").pixels
        np.testing.assert_allclose(back[0, 0], [0, 1, 0])
        np.testing.assert_allclose(back[0, 1], [1, 0, 0.5], atol=0.51 / 255)


def test_jpeg_round_trip(tmp_path, smooth_rgb):
    write_image(tmp_path / "x.jpg", Image.from_array(smooth_rgb))
    back = read_image(tmp_path / "x.jpg")
    assert back.source_format == "uint8"
    assert back.pixels.shape == smooth_rgb.shape
    err = np.abs(back.pixels - smooth_rgb)
    assert err.mean() < 3 / 255
    assert err.max() < 20 / 255


def test_explicit_integer_dtype(tmp_path, smooth_rgb):
    write_image(tmp_path / "x16.png", Image.from_array(smooth_rgb), dtype="uint16")
    back = read_image(tmp_path / "x16.png")
    assert back.source_format == "uint16"
    assert np.abs(back.pixels - smooth_rgb).max() <= 1.01 / 65535
    write_image(tmp_path / "xf.tif", Image.from_array(smooth_rgb), dtype="float")
    np.testing.assert_array_equal(read_image(tmp_path / "xf.tif").pixels, smooth_rgb)


# --- damaged files ------------------------------------------------------------------------

def test_truncated_frame_in_sequence(tmp_path, rng):
    frames = {}
    for frame in range(1001, 1006):
        px = rng.uniform(0, 1, (64, 64, 3)).astype(np.float32)
        frames[frame] = px
        write_image(tmp_path / f"plate.{frame}.exr", Image.from_array(px), dtype="float")
    bad = tmp_path / "plate.1003.exr"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    for frame, px in frames.items():
        path = tmp_path / f"plate.{frame}.exr"
        if frame == 1003:
            with pytest.raises(VfxSwapError) as err:
                read_image(path)
            assert str(path) in str(err.value)
            assert "\n" not in str(err.value)
        else:
            np.testing.assert_array_equal(read_image(path).pixels, px)


@pytest.mark.parametrize("content", [b"", b"not an image at all" * 50, b"\x76\x2f\x31\x01" + b"\x00" * 40])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "garbage.exr"
    path.write_bytes(content)
    with pytest.raises(VfxSwapError) as err:
        read_image(path)
    assert str(path) in str(err.value)
    with pytest.raises(VfxSwapError):
        list_parts(path)


def test_missing_file(tmp_path):
    with pytest.raises(VfxSwapError, match="no such file"):
        read_image(tmp_path / "absent.exr")
    with pytest.raises(VfxSwapError, match="no such file"):
        read_info(tmp_path / "absent.exr")


def test_bad_dtype_argument(tmp_path, smooth_rgb):
    write_image(tmp_path / "x.exr", Image.from_array(smooth_rgb))
    with pytest.raises(ValueError):
        read_image(tmp_path / "x.exr", dtype="uint8")


# --- atomic writes ------------------------------------------------------------------------

@pytest.fixture
def failing_writer(monkeypatch):
    """`arm(folder)`: from now on OIIO writes half the scanlines, then reports failure.

    Returns the list of names that were in `folder` at the moment of failure, so a test can
    check that the write really got midway (a temporary file existed) before it failed.
    """
    real_write_scanlines = oiio.ImageOutput.write_scanlines

    def arm(folder):
        seen = []

        def write_half_then_fail(self, pixels):
            spec = self.spec()
            half = pixels.shape[0] // 2
            assert real_write_scanlines(self, spec.y, spec.y + half, 0, np.ascontiguousarray(pixels[:half]))
            seen.extend(sorted(os.listdir(folder)))
            return False

        monkeypatch.setattr(oiio.ImageOutput, "write_image", write_half_then_fail)
        return seen

    return arm


def test_failed_write_leaves_nothing(tmp_path, smooth_rgb, failing_writer):
    seen = failing_writer(tmp_path)
    final = tmp_path / "plate.1001.exr"
    with pytest.raises(VfxSwapError, match="write failed") as err:
        write_image(final, Image.from_array(smooth_rgb))
    assert str(final) in str(err.value)
    assert len(seen) == 1 and is_temp_path(seen[0])  # it did get midway, into a temp file
    assert not final.exists()
    assert only_files(tmp_path) == []


def test_exception_during_write_leaves_nothing(tmp_path, smooth_rgb, monkeypatch):
    def explode(self, pixels):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(oiio.ImageOutput, "write_image", explode)
    final = tmp_path / "sub" / "plate.1001.exr"
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_image(final, Image.from_array(smooth_rgb))
    assert only_files(tmp_path / "sub") == []


def test_failed_overwrite_keeps_good_file(tmp_path, smooth_rgb, failing_writer):
    final = tmp_path / "plate.1001.exr"
    write_image(final, Image.from_array(smooth_rgb * 2.0))
    before = final.read_bytes()
    seen = failing_writer(tmp_path)
    with pytest.raises(VfxSwapError):
        write_image(final, Image.from_array(smooth_rgb))
    assert len(seen) == 2  # the good file and the half-written temporary
    assert final.read_bytes() == before
    assert only_files(tmp_path) == ["plate.1001.exr"]
    np.testing.assert_allclose(read_image(final).pixels, smooth_rgb * 2.0, rtol=1e-3)


def test_overwrite_replaces_atomically(tmp_path, smooth_rgb):
    final = tmp_path / "plate.1001.exr"
    write_image(final, Image.from_array(smooth_rgb))
    write_image(final, Image.from_array(smooth_rgb * 3.0))
    np.testing.assert_allclose(read_image(final).pixels, smooth_rgb * 3.0, rtol=1e-3)
    assert only_files(tmp_path) == ["plate.1001.exr"]


def test_mismatched_pixels_rejected_before_writing(tmp_path, smooth_rgb):
    image = Image.from_array(smooth_rgb)
    image.channels = ("R", "G")
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.exr", image)
    assert only_files(tmp_path) == []


def test_same_image_gives_the_same_bytes(tmp_path):
    """A retried farm task must write identical files: no wall-clock time stamp in the header."""
    import hashlib
    import time

    img = Image.from_array(np.random.default_rng(3).random((16, 24, 4), dtype=np.float32))
    img.set_attribute("oiio:ColorSpace", "ACEScg")
    write_image(tmp_path / "a.exr", img)
    time.sleep(1.1)
    write_image(tmp_path / "b.exr", img)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert digest(tmp_path / "a.exr") == digest(tmp_path / "b.exr")
    assert read_image(tmp_path / "a.exr").attribute("DateTime") is None
