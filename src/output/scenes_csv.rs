//! The scene list as PySceneDetect writes it (`scenedetect list-scenes`), with the caption
//! as one more column: tools made for PySceneDetect's CSV read it.
//!
//! Columns, one row per scene: `Scene Number` (from 1), `Start Frame` (from 1, as
//! PySceneDetect counts), `Start Timecode` (`HH:MM:SS.mmm`), `Start Time (seconds)`,
//! `End Frame` (the scene's last frame, counted from 1), `End Timecode`, `End Time (seconds)`,
//! `Length (frames)`, `Length (timecode)`, `Length (seconds)`, then `Caption` (one line, empty
//! when the keyframe has none). The header is the first line: PySceneDetect's optional
//! `Timecode List:` line above it (`list-scenes --skip-cuts` leaves it out) is not written.

use super::scenes::SceneList;
use super::tabular::csv_field;

/// The header line.
pub const HEADER: &str = "Scene Number,Start Frame,Start Timecode,Start Time (seconds),End Frame,End Timecode,End Time (seconds),Length (frames),Length (timecode),Length (seconds),Caption";

/// The scenes as PySceneDetect's scene list CSV plus captions (`\n` line ends).
pub fn render(scenes: &SceneList) -> String {
    let mut out = format!("{HEADER}\n");
    for scene in &scenes.scenes {
        let (start, end, length) = (
            scenes.time(scene.start_frame),
            scenes.time(scene.end_frame),
            scenes.time(scene.frames()),
        );
        let fields = [
            scene.number.to_string(),
            (scene.start_frame + 1).to_string(),
            start.timecode(),
            start.seconds_text(),
            scene.end_frame.to_string(),
            end.timecode(),
            end.seconds_text(),
            scene.frames().to_string(),
            length.timecode(),
            length.seconds_text(),
            scene.caption.clone().unwrap_or_default(),
        ];
        let quoted: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        out.push_str(&quoted.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::scenes::scene_list;
    use crate::output::tests::analysis;

    #[test]
    fn pyscenedetect_columns_with_the_caption() {
        let analysis = analysis([Some("A red car, parked."), None, Some("c")]);
        let csv = render(&scene_list(&analysis).unwrap());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            "1,1,00:00:00.000,0.000,100,00:00:04.000,4.000,100,00:00:04.000,4.000,\"A red car, parked.\""
        );
        assert_eq!(
            lines[2],
            "2,101,00:00:04.000,4.000,213,00:00:08.520,8.520,113,00:00:04.520,4.520,"
        );
        assert_eq!(lines.len(), 4);
    }
}
