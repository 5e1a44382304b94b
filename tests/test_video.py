"""Movies through ffmpeg: a synthetic round trip, the real GRID clip when present, and failures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from vfxswap.errors import VfxSwapError
from vfxswap.plates import video
from vfxswap.plates.video import ffmpeg_exe, probe_video, read_video, write_preview

GRID = "videos/grid/bbaf2n.mpg"  # under the shared data (conftest.shared_file)


def gradient_clip(count: int = 24, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """A smooth gradient sliding right one pixel per frame, so frames differ from each other."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(count):
        r = 40 + 170 * ((x + i) % width) / width
        g = 30 + 190 * y / height
        b = np.full_like(x, 60 + 4 * i)
        frames.append(np.stack([r, g, b], -1).round().astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    frames = gradient_clip()
    path = tmp_path_factory.mktemp("movie") / "clip.mp4"
    assert write_preview(path, iter(frames), fps=24.0) == len(frames)
    return path, frames


def test_ffmpeg_exe_runs():
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True)
    assert result.returncode == 0


def test_probe_written_clip(clip):
    path, frames = clip
    info = probe_video(path)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(24.0)
    assert info.frames == len(frames)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert info.codec == "h264"
    assert info.path == str(path)


def test_read_round_trip(clip):
    path, frames = clip
    decoded = list(read_video(path, first_frame=1001))
    assert [n for n, _ in decoded] == list(range(1001, 1001 + len(frames)))
    for (_, pixels), source in zip(decoded, frames):
        assert pixels.shape == (48, 64, 3) and pixels.dtype == np.float32
        assert 0.0 <= pixels.min() and pixels.max() <= 1.0
        assert np.abs(pixels - source / 255.0).mean() < 0.05  # H.264 is lossy, not wrong
    # Frames must come out in order: each decoded frame is closest to its own source frame.
    errors = [np.abs(decoded[5][1] - f / 255.0).mean() for f in frames]
    assert int(np.argmin(errors)) == 5


def test_other_first_frame(clip):
    path, frames = clip
    numbers = [n for n, _ in read_video(path, first_frame=1)]
    assert numbers == list(range(1, len(frames) + 1))


def test_flat_colours_keep_their_values(tmp_path):
    """Encode matrix, range and tags agree, so flat colours come back within a few code values."""
    colours = [(200, 50, 50), (30, 180, 60), (40, 60, 220), (128, 128, 128)]
    path = tmp_path / "flat.mp4"
    write_preview(path, [np.full((32, 32, 3), c, np.uint8) for c in colours])
    for (_, pixels), colour in zip(read_video(path), colours):
        assert np.abs(pixels[16, 16] * 255 - np.array(colour)).max() < 3


def test_selected_frames(clip):
    path, _ = clip
    everything = dict(read_video(path))
    chosen = list(read_video(path, frames=[1010, 1003, 1003]))
    assert [n for n, _ in chosen] == [1003, 1010]
    for number, pixels in chosen:
        np.testing.assert_array_equal(pixels, everything[number])


def test_frame_past_end_names_it(clip):
    path, _ = clip
    with pytest.raises(VfxSwapError, match=r"clip\.mp4.*2000"):
        list(read_video(path, frames=[1002, 2000]))
    with pytest.raises(VfxSwapError, match=r"clip\.mp4.*900"):
        read_video(path, frames=[900])


def test_decoder_always_reaped(clip, monkeypatch):
    """Closing the generator early, or stopping after the last wanted frame, ends ffmpeg."""
    path, _ = clip
    started = []
    real_popen = subprocess.Popen

    def recording_popen(args, **kwargs):
        proc = real_popen(args, **kwargs)
        if "rawvideo" in args:  # the decoder, not the probe
            started.append(proc)
        return proc

    monkeypatch.setattr(video.subprocess, "Popen", recording_popen)
    frames = read_video(path)
    next(frames)
    frames.close()
    assert list(read_video(path, frames=[1002])) and len(started) == 2
    assert all(proc.returncode is not None for proc in started)


def test_odd_size_is_padded_to_even(tmp_path):
    frames = gradient_clip(count=3, width=63, height=47)
    path = tmp_path / "odd.mp4"
    assert write_preview(path, frames) == 3
    info = probe_video(path)
    assert (info.width, info.height) == (64, 48)
    for (_, pixels), source in zip(read_video(path), frames):
        assert pixels.shape == (48, 64, 3)
        assert np.abs(pixels[:47, :63] - source / 255.0).mean() < 0.05


def test_grid_clip(shared_file):
    grid = shared_file(GRID)
    info = probe_video(grid)
    assert (info.width, info.height) == (360, 288)
    assert info.fps == pytest.approx(25.0)
    assert info.frames is not None and abs(info.frames - 75) <= 1
    decoded = list(read_video(grid, first_frame=1))
    assert abs(len(decoded) - 75) <= 1
    assert decoded[0][1].shape == (288, 360, 3)
    assert 0.05 < float(decoded[0][1].mean()) < 0.95  # a real picture, not black or white


def test_missing_file(tmp_path):
    path = tmp_path / "absent.mp4"
    with pytest.raises(VfxSwapError, match="absent.mp4"):
        probe_video(path)
    with pytest.raises(VfxSwapError, match="absent.mp4"):
        read_video(path)


def test_not_a_video(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(b"definitely not a movie\x00\x01\x02" * 50)
    with pytest.raises(VfxSwapError, match="x.mp4") as err:
        probe_video(path)
    assert "\n" not in str(err.value)
    with pytest.raises(VfxSwapError, match="x.mp4"):
        read_video(path)


def test_failed_writes_leave_nothing(tmp_path):
    final = tmp_path / "out.mp4"
    mixed = [np.zeros((48, 64, 3), np.uint8)] * 3 + [np.zeros((32, 32, 3), np.uint8)]
    with pytest.raises(VfxSwapError, match=r"out\.mp4.*frame 3"):
        write_preview(final, mixed)
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(VfxSwapError, match=r"out\.mp4: ffmpeg failed: .*out of range"):
        write_preview(final, gradient_clip(count=2), crf=-5)  # libx264 refuses it
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(VfxSwapError, match="out.mp4"):
        write_preview(final, [])
    with pytest.raises(VfxSwapError, match="uint8"):
        write_preview(final, [np.zeros((8, 8, 3), np.float32)])
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_whole_file(tmp_path):
    path = tmp_path / "again.mp4"
    write_preview(path, gradient_clip(count=10))
    write_preview(path, gradient_clip(count=4))
    assert probe_video(path).frames == 4
    assert [p.name for p in tmp_path.iterdir()] == ["again.mp4"]


def test_ffmpeg_log_parsing():
    """The no-ffprobe path: codec, size and NTSC rates read from ffmpeg's stream line."""
    log = ("Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'plate.mov':\n"
           "  Duration: 00:01:00.06, start: 0.000000, bitrate: 180000 kb/s\n"
           "  Stream #0:0[0x1](eng): Video: prores (HQ) (apch / 0x68637061), yuv422p10le(tv, bt709, progressive),"
           " 1920x1080, 176000 kb/s, SAR 1:1 DAR 16:9, 23.98 fps, 23.98 tbr, 24k tbn (default)\n")
    info = video._from_ffmpeg_log("plate.mov", log)
    assert (info.codec, info.width, info.height) == ("prores", 1920, 1080)
    assert info.fps == pytest.approx(24000 / 1001)
    assert info.duration == pytest.approx(60.06)
    assert info.frames == 1440


def test_ffprobe_parsing():
    """The ffprobe path, from the JSON ffprobe would print (no ffprobe is needed to test it)."""
    data = {"streams": [{"codec_type": "audio", "codec_name": "aac"},
                        {"codec_type": "video", "codec_name": "h264", "width": 1280, "height": 720,
                         "avg_frame_rate": "30000/1001", "r_frame_rate": "30000/1001", "nb_frames": "300"}],
            "format": {"duration": "10.010000"}}
    info = video._from_ffprobe("clip.mp4", data)
    assert (info.codec, info.width, info.height, info.frames) == ("h264", 1280, 720, 300)
    assert info.fps == pytest.approx(29.97, abs=0.001) and info.duration == pytest.approx(10.01)
    with pytest.raises(VfxSwapError, match="clip.mp4"):
        video._from_ffprobe("clip.mp4", {"streams": [data["streams"][0]]})
