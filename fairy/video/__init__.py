"""Decode exact frame ranges and encode edited frames, with PyAV.

Modules: ``timing`` (opening files, the frame grid, ``probe``), ``decode``, ``encode``
(``VideoWriter``, atomic outputs), ``audio``, ``sizing``, ``testclips``, ``background`` (decoding
ahead and encoding behind in threads).

Frame indices
-------------
A clip is addressed by frame index on a constant-rate grid, the way an NLE
conforms a clip to a timeline:

* ``fps`` is the video stream's nominal rate: its average rate, snapped to the
  nearest common rate (23.976 = 24000/1001, 29.97 = 30000/1001, 25, 60, ...)
  when within 0.04 % for constant-rate files, or within 2 % for variable-rate
  ones; an uncommon rate is kept as is (as a Fraction with denominator <= 1001).
* ``t0`` is the presentation time of the first frame.
* Frame ``i`` is the frame on screen at ``t_i = t0 + i / fps``: the last decoded
  frame whose presentation time is before ``t_i + 1 / (2 fps)``. The half-frame
  allowance means a timestamp is rounded to the nearest grid point (halves go
  to the later one), so a
  constant-rate file whose time base cannot hold ``i / fps`` exactly (1/1000 in
  Matroska, say) still maps frame ``i`` to its ``i``-th decoded frame.
* ``frame_count`` is one more than the grid index of the last frame; for a
  variable-rate file whose last frame has a duration, the grid runs on to the
  grid point nearest the end of that frame (it may be held for a while).

For a constant-rate file this is exactly "the i-th decoded frame". For a
variable-rate file, a frame that stays on screen across several grid points
is repeated and frames that fall between two grid points are dropped
(only the later one is kept), so an edit of N indices always has N frames.

Frames come out as HxWx3 ``uint8`` RGB, upright: the display matrix's rotation
(phone footage) is applied, so ``VideoInfo.width``/``height`` are the display
size. Flips in the display matrix are ignored.

Encoding writes H.264 (yuv420p, CRF 18, .mp4/.mov/.mkv) or ProRes 422
(FFmpeg's prores_aw encoder, prores_ks for odd widths; profile 2, yuv422p10le, .mov) at an exact rational frame rate,
tagged BT.709. libx264 cannot store 4:2:0 at an odd width or height, so an
odd-sized H.264 output is written as yuv444p (High 4:4:4) to keep the exact
size; some players and NLEs do not decode that profile, so pick an even size
where you can. Audio for the range is carried over as AAC (mp4, mkv) or
16-bit PCM (mov), trimmed or padded with silence to the video's duration.
Outputs appear atomically: frames go to a hidden temporary file beside the
output, which is renamed onto it only when complete.
"""

from __future__ import annotations

from fairy_proto.files import new_file_mode  # the mode a finished output gets (0666 less the umask)

from .background import BackgroundWrites, prefetched
from .decode import iter_frames, read_frames
from .encode import VideoWriter
from .sizing import model_size, resize_frames
from .testclips import make_test_clip, test_pattern_frame
from .timing import VideoInfo, probe

__all__ = [
    "BackgroundWrites",
    "VideoInfo",
    "VideoWriter",
    "iter_frames",
    "make_test_clip",
    "model_size",
    "new_file_mode",
    "prefetched",
    "probe",
    "read_frames",
    "resize_frames",
    "test_pattern_frame",
]
