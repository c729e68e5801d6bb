//! CMX 3600 edit decision lists (`.edl`): one cut event per scene, the keyframe's caption as
//! a locator, for editors that conform an edit from a list (Avid, Premiere, Resolve, ...).
//!
//! ```text
//! TITLE: scenes
//! FCM: NON-DROP FRAME
//!
//! 001  AX       V     C        00:00:00:00 00:00:04:00 00:00:00:00 00:00:04:00
//! * FROM CLIP NAME: scenes.mp4
//! * FROM CLIP: samples/scenes.mp4
//! * LOC: 00:00:01:15 YELLOW  A test pattern of vertical colour bars ...
//! ```
//!
//! The record side mirrors the source: event `n` is scene `n`, placed where it is in the
//! video. Timecodes are non-drop-frame at the video's rate rounded to whole frames (30 for
//! 29.97), so they count frames (an hour of 29.97 video ends at `00:59:56:12`). The reel is
//! `AX` (a file, not a tape). Event numbers have three digits up to 999 and more after.
//!
//! Text follows the EDL's line rules: every line is one line of printable ASCII. Captions
//! and the title are folded to ASCII (`é` → `e`, `“` → `"`, `—` → `-`; other characters
//! become `?`). The `FROM CLIP` path is kept as it is (on one line), since a transliterated
//! path would point nowhere.

use super::scenes::SceneList;
use super::{file_name, one_line};
use crate::analysis::Analysis;

/// Longest title the CMX 3600 header holds.
const TITLE_CHARS: usize = 70;

/// The colour of the keyframe locators.
const LOCATOR_COLOUR: &str = "YELLOW";

/// The scenes of `analysis` as a CMX 3600 edit decision list (`\n` line ends).
pub fn render(analysis: &Analysis, scenes: &SceneList) -> String {
    let name = file_name(&analysis.video.path);
    let title: String = ascii_text(name.rsplit_once('.').map_or(name, |(stem, _)| stem))
        .chars()
        .take(TITLE_CHARS)
        .collect();
    let clip_name = ascii_text(name);
    let path = one_line(&analysis.video.path);
    let timecode = |frame| scenes.rate.smpte_timecode(frame);
    let mut out = format!("TITLE: {title}\nFCM: NON-DROP FRAME\n");
    for scene in &scenes.scenes {
        let (start, end) = (timecode(scene.start_frame), timecode(scene.end_frame));
        out.push_str(&format!(
            "\n{:03}  {:<8} {:<5} {:<8} {start} {end} {start} {end}\n",
            scene.number, "AX", "V", "C"
        ));
        out.push_str(&format!(
            "* FROM CLIP NAME: {clip_name}\n* FROM CLIP: {path}\n"
        ));
        let caption = scene.caption.as_deref().map(ascii_text).unwrap_or_default();
        out.push_str(
            format!(
                "* LOC: {} {LOCATOR_COLOUR:<7} {caption}",
                timecode(scene.keyframe_frame)
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}

/// `text` on one line of printable ASCII: whitespace collapsed, common letters and
/// punctuation folded, anything else `?`.
pub fn ascii_text(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for character in one_line(text).chars() {
        match character {
            ' '..='~' => folded.push(character),
            _ => folded.push_str(fold(character)),
        }
    }
    folded
}

/// The ASCII a character outside printable ASCII is written as.
fn fold(character: char) -> &'static str {
    // Latin-1 letters U+00C0..=U+00FF, in code point order.
    const LATIN_1: [&str; 64] = [
        "A", "A", "A", "A", "A", "A", "AE", "C", "E", "E", "E", "E", "I", "I", "I", "I", //
        "D", "N", "O", "O", "O", "O", "O", "x", "O", "U", "U", "U", "U", "Y", "TH", "ss", //
        "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", //
        "d", "n", "o", "o", "o", "o", "o", "/", "o", "u", "u", "u", "u", "y", "th", "y",
    ];
    match character {
        '\u{C0}'..='\u{FF}' => LATIN_1[character as usize - 0xC0],
        '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' => " ",
        '\u{2010}'..='\u{2015}' | '\u{2212}' => "-",
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{2032}' => "'",
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{2033}' | '\u{AB}' | '\u{BB}' => "\"",
        '\u{2026}' => "...",
        '\u{2022}' | '\u{B7}' => "*",
        'Œ' => "OE",
        'œ' => "oe",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::scenes::scene_list;
    use crate::output::tests::analysis;

    #[test]
    fn one_event_per_scene_with_a_locator() {
        let analysis = analysis([Some("A red car."), None, Some("The “end” — Zürich…")]);
        let edl = render(&analysis, &scene_list(&analysis).unwrap());
        assert_eq!(
            edl,
            "TITLE: clip\nFCM: NON-DROP FRAME\n\
             \n001  AX       V     C        00:00:00:00 00:00:04:00 00:00:00:00 00:00:04:00\n\
             * FROM CLIP NAME: clip.mp4\n* FROM CLIP: clip.mp4\n\
             * LOC: 00:00:01:13 YELLOW  A red car.\n\
             \n002  AX       V     C        00:00:04:00 00:00:08:13 00:00:04:00 00:00:08:13\n\
             * FROM CLIP NAME: clip.mp4\n* FROM CLIP: clip.mp4\n\
             * LOC: 00:00:06:00 YELLOW\n\
             \n003  AX       V     C        00:00:08:13 00:00:12:00 00:00:08:13 00:00:12:00\n\
             * FROM CLIP NAME: clip.mp4\n* FROM CLIP: clip.mp4\n\
             * LOC: 00:00:10:06 YELLOW  The \"end\" - Zurich...\n"
        );
    }

    #[test]
    fn every_line_is_printable_ascii() {
        let mut analysis = analysis([
            Some("line one\r\n002  AX V C 00:00:00:00\n* FROM CLIP: /etc/passwd"),
            Some("Emoji 🚗, Hebrew שלום, NUL\0, tab\tend"),
            Some("Straße Œuvre"),
        ]);
        analysis.video.path = "/videos/Ünïcödé name.mp4".into();
        let edl = render(&analysis, &scene_list(&analysis).unwrap());
        for line in edl.lines() {
            assert!(
                line.chars().all(|c| (' '..='~').contains(&c)) || line.starts_with("* FROM CLIP: "),
                "{line:?}"
            );
        }
        assert_eq!(edl.lines().filter(|line| line.starts_with("00")).count(), 3);
        assert!(edl.contains("\n* LOC: 00:00:01:13 YELLOW  line one 002 AX V C 00:00:00:00 * FROM CLIP: /etc/passwd\n"));
        assert!(edl.contains("YELLOW  Emoji ?, Hebrew ????, NUL, tab end\n"));
        assert!(edl.contains("YELLOW  Strasse OEuvre\n"));
        assert!(edl.starts_with("TITLE: Unicode name\n"));
        assert!(edl.contains("\n* FROM CLIP: /videos/Ünïcödé name.mp4\n"));
    }
}
