//! OpenTimelineIO (`.otio`, its JSON form): a timeline with one video track holding one clip
//! per scene, each referencing the video over the scene's frames, with a marker at the
//! keyframe whose name is the caption on one line and whose comment is the caption as
//! written. Times are frames at the video's rate (`RationalTime` values at `rate` = fps).
//!
//! Written in the schema versions OpenTimelineIO 0.17 and later write (`Timeline.1`,
//! `Clip.2`, `Marker.2`, ...); `opentimelineio` reads it, and through its adapters so do
//! Resolve, Premiere (via the adapters), Nuke Studio and others.

use serde_json::{json, Value};

use super::file_name;
use super::scenes::{media_url, SceneList};
use crate::analysis::Analysis;

/// The colour of the keyframe markers.
const MARKER_COLOUR: &str = "YELLOW";

/// The scenes of `analysis` as an OpenTimelineIO timeline (pretty JSON, final newline).
pub fn render(analysis: &Analysis, scenes: &SceneList) -> String {
    let rate = scenes.rate.fps();
    let time = |frames: u64| json!({"OTIO_SCHEMA": "RationalTime.1", "rate": rate, "value": frames as f64});
    let range = |start: u64, frames: u64| json!({"OTIO_SCHEMA": "TimeRange.1", "duration": time(frames), "start_time": time(start)});
    let name = file_name(&analysis.video.path);
    let media = json!({
        "OTIO_SCHEMA": "ExternalReference.1",
        "metadata": {},
        "name": name,
        "available_range": range(0, scenes.total_frames),
        "available_image_bounds": null,
        "target_url": media_url(&analysis.video.path),
    });
    let clips: Vec<Value> = scenes
        .scenes
        .iter()
        .map(|scene| {
            let keyframe = &analysis.keyframes[scene.keyframe];
            let comment = keyframe
                .caption
                .as_deref()
                .map(str::trim)
                .unwrap_or_default();
            let marker = json!({
                "OTIO_SCHEMA": "Marker.2",
                "metadata": {"keyscribe": {"keyframe": scene.keyframe, "time_s": keyframe.time_s}},
                "name": scene.caption.as_deref().unwrap_or_default(),
                "color": MARKER_COLOUR,
                "marked_range": range(scene.keyframe_frame, 0),
                "comment": comment,
            });
            json!({
                "OTIO_SCHEMA": "Clip.2",
                "metadata": {"keyscribe": {"scene": scene.number, "change": keyframe.change}},
                "name": format!("Scene {:03}", scene.number),
                "source_range": range(scene.start_frame, scene.frames()),
                "effects": [],
                "markers": [marker],
                "enabled": true,
                "color": null,
                "media_references": {"DEFAULT_MEDIA": media.clone()},
                "active_media_reference_key": "DEFAULT_MEDIA",
            })
        })
        .collect();
    let item = |schema: &str, name: &str, children: Vec<Value>| {
        json!({
            "OTIO_SCHEMA": schema,
            "metadata": {},
            "name": name,
            "source_range": null,
            "effects": [],
            "markers": [],
            "enabled": true,
            "color": null,
            "children": children,
        })
    };
    let mut track = item("Track.1", "Video", clips);
    track["kind"] = json!("Video");
    let timeline = json!({
        "OTIO_SCHEMA": "Timeline.1",
        "metadata": {"keyscribe": {"schema": analysis.schema, "video": analysis.video.path}},
        "name": name,
        "global_start_time": time(0),
        "tracks": item("Stack.1", "tracks", vec![track]),
    });
    let mut text = serde_json::to_string_pretty(&timeline).expect("JSON values serialise");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::scenes::scene_list;
    use crate::output::tests::analysis;

    #[test]
    fn one_clip_per_scene_with_its_marker() {
        let analysis = analysis([Some("A red\ncar."), None, Some("c")]);
        let otio: Value =
            serde_json::from_str(&render(&analysis, &scene_list(&analysis).unwrap())).unwrap();
        assert_eq!(otio["OTIO_SCHEMA"], "Timeline.1");
        let track = &otio["tracks"]["children"][0];
        assert_eq!(track["kind"], "Video");
        let clips = track["children"].as_array().unwrap();
        assert_eq!(clips.len(), 3);
        let frames = |value: &Value| {
            (
                value["value"].as_f64().unwrap(),
                value["rate"].as_f64().unwrap(),
            )
        };
        let ranges: Vec<((f64, f64), (f64, f64))> = clips
            .iter()
            .map(|clip| {
                let range = &clip["source_range"];
                (frames(&range["start_time"]), frames(&range["duration"]))
            })
            .collect();
        assert_eq!(
            ranges,
            [
                ((0.0, 25.0), (100.0, 25.0)),
                ((100.0, 25.0), (113.0, 25.0)),
                ((213.0, 25.0), (87.0, 25.0))
            ]
        );
        let marker = &clips[0]["markers"][0];
        assert_eq!(marker["name"], "A red car.");
        assert_eq!(marker["comment"], "A red\ncar.");
        assert_eq!(frames(&marker["marked_range"]["start_time"]), (38.0, 25.0));
        assert_eq!(clips[1]["markers"][0]["name"], "");
        assert_eq!(clips[2]["name"], "Scene 003");
        let media = &clips[0]["media_references"]["DEFAULT_MEDIA"];
        assert_eq!(media["target_url"], "clip.mp4");
        assert_eq!(frames(&media["available_range"]["duration"]), (300.0, 25.0));
    }
}
