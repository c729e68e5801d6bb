#!/usr/bin/env python3
"""Reads keyscribe's editor exports with OpenTimelineIO, as editors' pipelines do.

    check_exports.py KEYSCRIBE_BINARY ANALYSIS_JSON

Runs `keyscribe export` on the analysis for the EDL, OTIO and FCPXML formats, reads each file
with `opentimelineio` (the EDL with the `otio-cmx3600-adapter`, the FCPXML with the
`otio-fcpx-xml-adapter`, versions pinned in requirements.txt), and checks that each holds one
clip per scene with the scene's frames, one marker per keyframe with its caption at the
keyframe's frame, and the video as media. The expected scenes are computed here from the
analysis, independently of keyscribe's code. Exits non-zero with a message on the first
difference.
"""

import json
import math
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import opentimelineio as otio


def fail(message):
    sys.exit(f"check_exports: {message}")


def expect(condition, message):
    if not condition:
        fail(message)


def one_line(text):
    return " ".join((text or "").split())


def frame_at(seconds, fps):
    """The frame starting nearest `seconds` (times rounded to milliseconds first)."""
    millis = math.floor(seconds * 1000 + 0.5)
    return math.floor(millis / 1000 * fps + 0.5)


def expected_scenes(analysis):
    """(start frame, end frame, keyframe frame, caption) per scene."""
    fps = analysis["video"]["fps"]
    keyframes = analysis["keyframes"]
    end_of_video = max([analysis["video"]["duration_s"]] + [k["scene"]["end_s"] for k in keyframes])
    scenes = []
    for position, keyframe in enumerate(keyframes):
        start = frame_at(keyframe["scene"]["start_s"], fps)
        end_s = keyframes[position + 1]["scene"]["start_s"] if position + 1 < len(keyframes) else end_of_video
        end = frame_at(end_s, fps)
        if end <= start:
            continue
        marker = min(max(frame_at(keyframe["time_s"], fps), start), end - 1)
        scenes.append((start, end, marker, one_line(keyframe.get("caption"))))
    return scenes


def check_timeline(kind, timeline, scenes, rate):
    tracks = [track for track in timeline.tracks if track.kind == otio.schema.TrackKind.Video]
    expect(len(tracks) == 1, f"{kind}: {len(tracks)} video tracks, expected 1")
    clips = list(tracks[0].find_clips())
    expect(len(clips) == len(scenes), f"{kind}: {len(clips)} clips, expected {len(scenes)}")
    for number, (clip, (start, end, marker, caption)) in enumerate(zip(clips, scenes), start=1):
        source = clip.source_range
        got = (round(source.start_time.value_rescaled_to(rate)), round(source.duration.value_rescaled_to(rate)))
        expect(got == (start, end - start), f"{kind}: clip {number} covers frames {got}, expected {(start, end - start)}")
        expect(len(clip.markers) == 1, f"{kind}: clip {number} has {len(clip.markers)} markers")
        mark = clip.markers[0]
        at = round(mark.marked_range.start_time.value_rescaled_to(rate))
        expect(at == marker, f"{kind}: clip {number}'s marker at frame {at}, expected {marker}")
        expect(mark.name == caption, f"{kind}: clip {number}'s marker reads {mark.name!r}, expected {caption!r}")
    return clips


def main():
    if len(sys.argv) != 3:
        fail(__doc__.strip().splitlines()[2].strip())
    binary, analysis_path = sys.argv[1], sys.argv[2]
    analysis = json.loads(Path(analysis_path).read_text(encoding="utf-8"))
    fps = analysis["video"]["fps"]
    scenes = expected_scenes(analysis)
    expect(scenes, "the analysis has no scenes")
    video_name = Path(analysis["video"]["path"]).name

    with tempfile.TemporaryDirectory() as directory:
        files = {}
        for extension in ("edl", "otio", "fcpxml"):
            target = Path(directory) / f"export.{extension}"
            subprocess.run([binary, "export", analysis_path, "-o", str(target)], check=True)
            files[extension] = target

        timeline = otio.adapters.read_from_file(str(files["otio"]))
        clips = check_timeline("otio", timeline, scenes, fps)
        for clip in clips:
            url = clip.media_reference.target_url
            expect(url.endswith(video_name), f"otio: media {url!r} is not {video_name}")

        # CMX 3600 timecode counts whole frames per second.
        timeline = otio.adapters.read_from_file(str(files["edl"]), adapter_name="cmx_3600", rate=fps)
        for _, _, _, caption in scenes:
            expect(caption.isascii(), "the EDL check needs ASCII captions (EDLs fold the rest)")
        clips = check_timeline("edl", timeline, scenes, fps)
        for clip in clips:
            url = clip.media_reference.target_url
            expect(url.endswith(video_name), f"edl: media {url!r} is not {video_name}")

        collection = otio.adapters.read_from_file(str(files["fcpxml"]), adapter_name="fcpx_xml")
        timelines = [item for item in collection if isinstance(item, otio.schema.Timeline)]
        expect(len(timelines) == 1, f"fcpxml: {len(timelines)} projects, expected 1")
        check_timeline("fcpxml", timelines[0], scenes, fps)
        root = ElementTree.parse(files["fcpxml"]).getroot()
        expect(root.get("version") == "1.9", f"fcpxml: version {root.get('version')}")
        sources = [rep.get("src") for rep in root.iter("media-rep")]
        expect(len(sources) == 1 and sources[0].startswith("file://") and sources[0].endswith(video_name),
               f"fcpxml: media {sources}")

    print(f"check_exports: EDL, OTIO and FCPXML read back by OpenTimelineIO {otio.__version__}: "
          f"{len(scenes)} clips with their markers each")


if __name__ == "__main__":
    main()
