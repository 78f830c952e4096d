"""The README's picture: source and edited frames side by side, from the main job's output.

    fairy demo && python bench/make_demo_figure.py [--demo-dir fairy-demo] [--out bench/figures/demo.jpg]

For every clip of the relinked timeline (``DEMO/sample_edit.otio``): the first,
middle and last frame of the original (track V1) above the same frames of its
Fairy result (the track above), read from the media the timeline points to.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import opentimelineio as otio
from PIL import Image

from fairy.video import read_frames


def _frames(clip, count: int = 3) -> list[np.ndarray]:
    path = otio.url_utils.filepath_from_url(clip.media_reference.target_url)
    available = clip.media_reference.available_range
    first = clip.source_range.start_time.to_frames() - (available.start_time.to_frames() if available else 0)
    length = clip.source_range.duration.to_frames()
    wanted = [first + round(i * (length - 1) / (count - 1)) for i in range(count)]
    found = read_frames(path, wanted)
    return [found[i] for i in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", type=pathlib.Path, default=pathlib.Path("fairy-demo"))
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/figures/demo.jpg"))
    args = parser.parse_args()
    timeline = otio.adapters.read_from_file(str(args.demo_dir / "sample_edit.otio"))
    originals, results = (track.find_clips() for track in timeline.video_tracks()[:2])
    rows = []
    gap = 4
    for original, result in zip(originals, results):
        for clip in (original, result):
            frames = _frames(clip)
            height = frames[0].shape[0]
            spacer = np.full((height, gap, 3), 255, np.uint8)
            rows.append(np.concatenate([x for f in frames for x in (f, spacer)][:-1], axis=1))
        rows.append(np.full((gap * 3, rows[-1].shape[1], 3), 255, np.uint8))
    picture = np.concatenate(rows[:-1], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(args.out, quality=90)  # JPEG for photographs: a fifth of the PNG
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]}): per clip, the source above, the Fairy edit below")


if __name__ == "__main__":
    main()
