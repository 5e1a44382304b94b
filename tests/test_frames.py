"""Frame patterns, frame ranges and image-sequence discovery (no image IO needed)."""

from __future__ import annotations

import os

import pytest

from vfxswap.atomic import temp_path_for
from vfxswap.errors import VfxSwapError
from vfxswap.plates.frames import (FramePattern, Sequence, find_sequence, format_frames, is_movie, parse_frames,
                                   select_frames)


def touch(folder, *names) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


# --- FramePattern.parse ------------------------------------------------------------------

@pytest.mark.parametrize("text, padding", [
    ("plate.####.exr", 4),
    ("plate.%04d.exr", 4),
    ("plate.%d.exr", 1),
    ("plate.$F4.exr", 4),
    ("plate.$F.exr", 1),
    ("plate.@@@@.exr", 4),
    ("plate.#.exr", 1),
    ("plate.######.exr", 6),
    ("plate.%06d.exr", 6),
])
def test_parse_tokens(text, padding):
    pattern = FramePattern.parse(text)
    assert pattern == FramePattern("plate.", padding, ".exr")
    assert pattern.padding == padding


@pytest.mark.parametrize("token", ["####", "%04d", "$F4", "@@@@"])
def test_parse_keeps_folder(token):
    folder = os.path.join("shots", "sh010_v002", "plates")
    pattern = FramePattern.parse(os.path.join(folder, f"sh010_bg.{token}.exr"))
    assert pattern.head == os.path.join(folder, "sh010_bg.")
    assert pattern.tail == ".exr"
    assert pattern.padding == 4
    assert pattern.path(1001) == os.path.join(folder, "sh010_bg.1001.exr")
    assert pattern.hashes == os.path.join(folder, "sh010_bg.####.exr")
    assert pattern.printf == os.path.join(folder, "sh010_bg.%04d.exr")
    assert str(pattern) == pattern.hashes


def test_parse_token_only_in_file_name():
    # Digits or tokens in folder names are not frame tokens.
    with pytest.raises(VfxSwapError, match="no frame token"):
        FramePattern.parse(os.path.join("shots", "####", "plate.exr"))
    with pytest.raises(VfxSwapError):
        FramePattern.parse("plate.1001.exr")
    assert FramePattern.has_token("a/b/plate.%04d.exr")
    assert not FramePattern.has_token("a/####/plate.exr")


def test_unpadded_forms_print_as_printf():
    pattern = FramePattern.parse("plate.$F.exr")
    assert pattern.hashes == "plate.%d.exr"  # '#' cannot say "unpadded"
    assert pattern.printf == "plate.%d.exr"


# --- FramePattern.path / frame_of --------------------------------------------------------

def test_path_padding_wider_and_negative():
    pattern = FramePattern.parse("plate.####.exr")
    assert pattern.path(1) == "plate.0001.exr"
    assert pattern.path(1001) == "plate.1001.exr"
    assert pattern.path(0) == "plate.0000.exr"
    assert pattern.path(123456) == "plate.123456.exr"  # wider than padding: written in full
    assert pattern.path(-5) == "plate.-0005.exr"
    unpadded = FramePattern.parse("plate.%d.exr")
    assert unpadded.path(7) == "plate.7.exr"
    assert unpadded.path(-7) == "plate.-7.exr"
    assert unpadded.path(1001) == "plate.1001.exr"


@pytest.mark.parametrize("text", ["plate.####.exr", "plate.%d.exr", "plate.$F3.exr"])
@pytest.mark.parametrize("frame", [-1001, -5, 0, 1, 42, 1001, 99999, 1234567])
def test_frame_of_inverts_path(text, frame):
    pattern = FramePattern.parse(os.path.join("some", "dir", text))
    assert pattern.frame_of(os.path.basename(pattern.path(frame))) == frame


def test_frame_of_rejects_wrong_padding_and_strangers():
    padded = FramePattern.parse("plate.####.exr")
    assert padded.frame_of("plate.1001.exr") == 1001
    assert padded.frame_of("plate.0007.exr") == 7
    assert padded.frame_of("plate.12345.exr") == 12345
    assert padded.frame_of("plate.7.exr") is None  # too short
    assert padded.frame_of("plate.007.exr") is None  # too short
    assert padded.frame_of("plate.00007.exr") is None  # too wide with a leading zero
    assert padded.frame_of("plate..exr") is None
    assert padded.frame_of("plate.10a1.exr") is None
    assert padded.frame_of("plate.1001.tif") is None
    assert padded.frame_of("other.1001.exr") is None
    assert padded.frame_of("plate.1001.exr.bak") is None
    unpadded = FramePattern.parse("plate.%d.exr")
    assert unpadded.frame_of("plate.7.exr") == 7
    assert unpadded.frame_of("plate.1001.exr") == 1001
    assert unpadded.frame_of("plate.0007.exr") is None  # padded numbers are another sequence
    assert unpadded.frame_of("plate.0.exr") == 0


# --- parse_frames / format_frames --------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1001-1100", list(range(1001, 1101))),
    ("1001-1100x2", list(range(1001, 1101, 2))),
    ("1001-1010:3", [1001, 1004, 1007, 1010]),
    ("1001,1005,1010-1020", [1001, 1005] + list(range(1010, 1021))),
    (" 1001 - 1004 x 2 ,  1010 ", [1001, 1003, 1010]),
    ("1005,1001,1003-1005", [1001, 1003, 1004, 1005]),  # sorted, unique
    ("1001", [1001]),
    ("1001,", [1001]),
    ("-3--1", [-3, -2, -1]),
    ("-2-2", [-2, -1, 0, 1, 2]),
])
def test_parse_frames(text, expected):
    assert parse_frames(text) == expected


@pytest.mark.parametrize("bad", ["", " ", ",", "abc", "1001-", "-", "1-2-3", "1001-1100x", "1001-1100x0",
                                 "1100-1001", "1001..1100", "1001;1002", "10.5"])
def test_parse_frames_bad_input(bad):
    with pytest.raises(VfxSwapError, match="frame range"):
        parse_frames(bad)


@pytest.mark.parametrize("frames", [
    [1001],
    list(range(1001, 1101)),
    [1001, 1005] + list(range(1010, 1021)),
    [1, 2, 3, 5, 7, 8, 20],
    [-5, -4, -3, 0, 1, 2],
    [-10, -8],
])
def test_format_frames_round_trip(frames):
    text = format_frames(frames)
    assert parse_frames(text) == sorted(frames)


def test_format_frames_shortest():
    assert format_frames(range(1001, 1101)) == "1001-1100"
    assert format_frames([1010, 1001, 1002, 1003, 1005, 1003]) == "1001-1003,1005,1010"
    assert format_frames([]) == ""


# --- find_sequence ------------------------------------------------------------------------

@pytest.fixture
def padded_seq(tmp_path):
    touch(tmp_path, *(f"plate.{f:04d}.exr" for f in (998, 999, 1000, 1001, 1002, 1004)))
    touch(tmp_path, "plate.1003.tif", "other.1003.exr", "plate.exr", "plate.1003.exr.txt")
    return tmp_path


@pytest.fixture
def unpadded_seq(tmp_path):
    touch(tmp_path, *(f"shot_{f}.exr" for f in (8, 9, 10, 11, 12, 100)))
    return tmp_path


@pytest.mark.parametrize("token", ["####", "%04d", "$F4", "@@@@"])
def test_find_sequence_from_pattern(padded_seq, token):
    seq = find_sequence(padded_seq / f"plate.{token}.exr")
    assert seq.frames == [998, 999, 1000, 1001, 1002, 1004]
    assert (seq.first, seq.last) == (998, 1004)
    assert seq.path(1004) == str(padded_seq / "plate.1004.exr")
    assert seq.missing() == [1003]
    assert seq.missing([997, 998, 1003, 1005]) == [997, 1003, 1005]
    assert str(seq) == f"{padded_seq / 'plate.####.exr'} 998-1002,1004"


@pytest.mark.parametrize("member", ["plate.0998.exr", "plate.1001.exr", "plate.1004.exr"])
def test_find_sequence_from_padded_member(padded_seq, member):
    seq = find_sequence(padded_seq / member)
    assert seq.pattern == FramePattern(str(padded_seq / "plate."), 4, ".exr")
    assert seq.frames == [998, 999, 1000, 1001, 1002, 1004]


@pytest.mark.parametrize("member", ["shot_8.exr", "shot_10.exr", "shot_100.exr"])
def test_find_sequence_from_unpadded_member(unpadded_seq, member):
    seq = find_sequence(unpadded_seq / member)
    assert seq.frames == [8, 9, 10, 11, 12, 100]
    assert seq.path(9) == str(unpadded_seq / "shot_9.exr")
    assert seq.missing() == list(range(13, 100))


def test_find_sequence_unpadded_pattern(unpadded_seq):
    seq = find_sequence(unpadded_seq / "shot_%d.exr")
    assert seq.frames == [8, 9, 10, 11, 12, 100]
    assert find_sequence(unpadded_seq / "shot_$F.exr").frames == seq.frames
    # A padded pattern does not pick up unpadded names (only those already wide enough).
    assert find_sequence(unpadded_seq / "shot_###.exr").frames == [100]


def test_find_sequence_member_with_dash_separator(tmp_path):
    touch(tmp_path, "bg-1001.exr", "bg-1002.exr", "bg-1003.exr")
    seq = find_sequence(tmp_path / "bg-1002.exr")
    assert seq.frames == [1001, 1002, 1003]
    assert seq.path(1001) == str(tmp_path / "bg-1001.exr")


def test_find_sequence_negative_frames(tmp_path):
    pattern = FramePattern.parse(str(tmp_path / "plate.####.exr"))
    touch(tmp_path, *(os.path.basename(pattern.path(f)) for f in range(-2, 3)))
    assert find_sequence(tmp_path / "plate.####.exr").frames == [-2, -1, 0, 1, 2]
    assert find_sequence(tmp_path / "plate.-0002.exr").frames == [-2, -1, 0, 1, 2]
    assert find_sequence(tmp_path / "plate.0000.exr").frames == [-2, -1, 0, 1, 2]


def test_find_sequence_ignores_hidden_and_temp_files(padded_seq):
    before = find_sequence(padded_seq / "plate.####.exr").frames
    # Half-written frames of a running job, and hidden files, are never frames of the plate.
    for frame in (1003, 1005, 1006):
        temp = temp_path_for(padded_seq / f"plate.{frame:04d}.exr")
        assert temp.parent == padded_seq
        temp.write_bytes(b"partial")
    touch(padded_seq, ".plate.1007.exr", "._plate.1008.exr")
    assert find_sequence(padded_seq / "plate.####.exr").frames == before
    assert find_sequence(padded_seq / "plate.1001.exr").frames == before
    assert select_frames(padded_seq / "plate.####.exr", "1001-1002")[1] == [1001, 1002]
    with pytest.raises(VfxSwapError, match="1003"):
        select_frames(padded_seq / "plate.####.exr", "1001-1003")


def test_find_sequence_empty_and_errors(tmp_path):
    seq = find_sequence(tmp_path / "plate.####.exr")
    assert seq.frames == [] and seq.missing() == []
    assert "no frames" in str(seq)
    with pytest.raises(VfxSwapError, match="does not exist"):
        find_sequence(tmp_path / "nowhere" / "plate.####.exr")
    with pytest.raises(VfxSwapError, match="no such file"):
        find_sequence(tmp_path / "plate.1001.exr")


@pytest.mark.parametrize("name", ["hero.exr", "shot010_v002_final.exr", "README"])
def test_find_sequence_still_is_one_frame(tmp_path, name):
    touch(tmp_path, name, "shot010_v003_final.exr", "hero2.exr")
    seq = find_sequence(tmp_path / name)
    assert seq.frames == [1]
    assert seq.path(seq.first) == str(tmp_path / name)
    assert seq.missing() == []
    assert select_frames(tmp_path / name)[1] == [1]


# --- select_frames ------------------------------------------------------------------------

def test_select_frames_all_and_subset(padded_seq):
    seq, frames = select_frames(padded_seq / "plate.####.exr")
    assert isinstance(seq, Sequence)
    assert frames == [998, 999, 1000, 1001, 1002, 1004]
    assert select_frames(padded_seq / "plate.####.exr", "999-1001")[1] == [999, 1000, 1001]
    assert select_frames(str(padded_seq / "plate.0999.exr"), "998-1002x2,1004")[1] == [998, 1000, 1002, 1004]


def test_select_frames_names_missing_frames(padded_seq):
    with pytest.raises(VfxSwapError) as err:
        select_frames(padded_seq / "plate.####.exr", "1000-1008")
    message = str(err.value)
    assert "1003,1005-1008" in message
    assert "plate.####.exr" in message
    assert "1001" not in message.split(":")[-1]  # frames on disk are not reported as missing


def test_select_frames_no_frames(tmp_path):
    with pytest.raises(VfxSwapError, match="no frames found"):
        select_frames(tmp_path / "plate.####.exr")


def test_select_frames_bad_range(padded_seq):
    with pytest.raises(VfxSwapError, match="frame range"):
        select_frames(padded_seq / "plate.####.exr", "1002-1001")


def test_is_movie():
    assert is_movie("a/b/clip.MOV") and is_movie("clip.mp4") and is_movie("x.mxf")
    assert not is_movie("plate.####.exr") and not is_movie("plate.1001.dpx")


def test_a_range_too_long_for_any_shot_is_refused_before_it_is_built():
    """`1001-5001000` (a typo) built a five-million-frame list in every engine and farm export."""
    with pytest.raises(VfxSwapError, match="over 1,000,000 frames"):
        parse_frames("1001-5001000")
    assert len(parse_frames("1-1000000")) == 1_000_000
