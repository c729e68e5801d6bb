"""PySceneDetect's ContentDetector on keyscribe's synthetic samples: boundary precision and
recall against the ground truth, with the same matching rule keyscribe's accuracy report uses.

    python benches/reference/scenedetect_accuracy.py samples/scenes.json [more.json ...]

A detected boundary matches a true one when they are at most 0.5 s apart (for gradual
transitions: within 0.5 s of the transition's span); each true boundary matches at most one
detection. Needs `pip install scenedetect opencv-python-headless`.
"""
import json
import sys
import time
from pathlib import Path

from scenedetect import ContentDetector, SceneManager, open_video

TOLERANCE_S = 0.5


def detect(video_path):
    video = open_video(str(video_path))
    manager = SceneManager()
    manager.add_detector(ContentDetector())
    started = time.perf_counter()
    manager.detect_scenes(video)
    elapsed = time.perf_counter() - started
    scenes = manager.get_scene_list()
    # Each scene after the first starts at a detected boundary.
    return [start.seconds for start, _ in scenes[1:]], elapsed


def match(truth, detected):
    """Greedy one-to-one matching; returns (true positives, precision, recall)."""
    unmatched = list(detected)
    hits = 0
    for boundary in truth:
        low = boundary.get("from_s", boundary["time_s"]) - TOLERANCE_S
        high = boundary.get("to_s", boundary["time_s"]) + TOLERANCE_S
        candidates = [t for t in unmatched if low <= t <= high]
        if candidates:
            best = min(candidates, key=lambda t: abs(t - boundary["time_s"]))
            unmatched.remove(best)
            hits += 1
    precision = hits / len(detected) if detected else 1.0
    recall = hits / len(truth) if truth else 1.0
    return hits, precision, recall


def main():
    for truth_path in map(Path, sys.argv[1:]):
        truth = json.loads(truth_path.read_text())
        video_path = truth_path.parent / truth["file"]
        detected, elapsed = detect(video_path)
        hits, precision, recall = match(truth["boundaries"], detected)
        print(json.dumps({
            "file": truth["file"],
            "detector": "PySceneDetect ContentDetector (defaults)",
            "detected_s": [round(t, 3) for t in detected],
            "true_s": [b["time_s"] for b in truth["boundaries"]],
            "matched": hits,
            "precision": round(precision, 3),
            "recall": round(recall, 3),
            "seconds": round(elapsed, 3),
        }))


if __name__ == "__main__":
    main()
