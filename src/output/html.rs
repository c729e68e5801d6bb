//! The HTML report: one self-contained file with the keyframes' pictures, timecodes and
//! captions, a timeline of the change score, the summary and chapters, and a filter box that
//! searches the captions offline.
//!
//! The file loads nothing: pictures are `data:` URIs, the style sheet and script are inline,
//! and a Content-Security-Policy allows only those (by hash), so even text that slipped past
//! escaping could not run a script or fetch anything. All text from the analysis (captions,
//! titles, paths) is HTML-escaped.
//!
//! The filter box matches every word typed against each caption (and timecode), hides the
//! other keyframes, their chapters' headings when emptied, and dims their timeline markers.
//! A link can open the report filtered: `report.html?q=red+car`.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{caption_spans, chapter_spans, video_end_s, Span};
use crate::analysis::{Analysis, FrameEmbeddings};
use crate::time::MediaTime;

const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// What the report shows besides the analysis; the caller fetches it (the report never
/// opens the video or the sidecar itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportInputs {
    /// One encoded picture (JPEG, PNG or WebP) per keyframe, in keyframe order; `None` (or a
    /// missing entry) shows a placeholder.
    pub thumbnails: Vec<Option<Vec<u8>>>,
    /// The change score of every sampled frame, for the timeline plot.
    pub timeline: Option<Timeline>,
}

/// The selector's change score over time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Frame times in seconds, increasing.
    pub time_s: Vec<f64>,
    /// The change score at each time.
    pub change: Vec<f32>,
    /// The score above which a new scene starts, drawn as a line when known.
    pub threshold: Option<f32>,
}

impl Timeline {
    /// The timeline stored in an analysis's embeddings sidecar.
    pub fn from_frames(frames: &FrameEmbeddings) -> Timeline {
        Timeline {
            time_s: frames.time_s.clone(),
            change: frames.change.clone(),
            threshold: frames.threshold,
        }
    }
}

/// Renders the report as one HTML document.
pub fn render(analysis: &Analysis, inputs: &ReportInputs) -> String {
    let name = escape(&file_name(&analysis.video.path));
    let mut html = String::with_capacity(
        64 * 1024
            + inputs
                .thumbnails
                .iter()
                .flatten()
                .map(|bytes| bytes.len() * 4 / 3 + 64)
                .sum::<usize>(),
    );
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         img-src data:; style-src '{style_hash}'; script-src '{script_hash}'; \
         base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"generator\" content=\"keyscribe {version}\">\n\
         <title>{name} \u{2014} keyscribe report</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n",
        style_hash = csp_hash(STYLE),
        script_hash = csp_hash(SCRIPT),
        version = env!("CARGO_PKG_VERSION"),
    );
    write_masthead(&mut html, analysis, &name);
    html.push_str("<main class=\"wrap\">\n");
    write_overview(&mut html, analysis);
    write_timeline(&mut html, analysis, inputs.timeline.as_ref());
    write_keyframes(&mut html, analysis, &inputs.thumbnails);
    html.push_str("</main>\n");
    write_footer(&mut html, analysis);
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    html
}

fn write_masthead(html: &mut String, analysis: &Analysis, name: &str) {
    let video = &analysis.video;
    let mut facts = vec![format!(
        "<b>{}</b> long",
        human_duration(video_end_s(analysis))
    )];
    if video.width > 0 && video.height > 0 {
        facts.push(format!("<b>{}\u{d7}{}</b>", video.width, video.height));
    }
    if video.fps > 0.0 {
        facts.push(format!("<b>{}</b> fps", trim_number(video.fps, 2)));
    }
    let keyframes = analysis.keyframes.len();
    facts.push(format!(
        "<b>{keyframes}</b> {}",
        if keyframes == 1 {
            "keyframe"
        } else {
            "keyframes"
        }
    ));
    let models = &analysis.models;
    facts.push(format!(
        "keyframes by <b>{}</b>",
        escape(&models.embedder.name)
    ));
    if let Some(captioner) = &models.captioner {
        facts.push(format!("captions by <b>{}</b>", escape(&captioner.name)));
    }
    let _ = write!(
        html,
        "<header class=\"masthead\">\n<div class=\"wrap\">\n\
         <p class=\"eyebrow\">keyscribe report</p>\n\
         <h1 title=\"{path}\">{name}</h1>\n<ul class=\"facts\">",
        path = escape(&video.path),
    );
    for fact in facts {
        let _ = write!(html, "<li>{fact}</li>");
    }
    html.push_str("</ul>\n</div>\n</header>\n");
}

fn write_overview(html: &mut String, analysis: &Analysis) {
    let summary = analysis
        .summary
        .as_deref()
        .map(str::trim)
        .filter(|summary| !summary.is_empty());
    let chapters = &analysis.chapters;
    if summary.is_none() && chapters.is_empty() {
        return;
    }
    let single = summary.is_none() || chapters.is_empty();
    let _ = writeln!(
        html,
        "<div class=\"overview{}\">",
        if single { " single" } else { "" }
    );
    if let Some(summary) = summary {
        let _ = writeln!(
            html,
            "<section class=\"panel summary\">\n<h2>Summary</h2>\n<p>{}</p>\n</section>",
            escape(summary)
        );
    }
    if !chapters.is_empty() {
        html.push_str("<nav class=\"panel chapters\" aria-label=\"Chapters\">\n<h2>Chapters</h2>\n<ol class=\"chapter-list\">\n");
        for (number, chapter) in chapters.iter().enumerate() {
            let _ = writeln!(
                html,
                "<li><a href=\"#chapter-{}\"><span class=\"tc\">{}</span><span class=\"title\">{}</span></a></li>",
                number + 1,
                short_timecode(MediaTime::from_seconds(chapter.start_s)),
                escape(&chapter_title(analysis, number)),
            );
        }
        html.push_str("</ol>\n</nav>\n");
    }
    html.push_str("</div>\n");
}

/// Geometry of the timeline plot, in SVG user units.
struct Plot {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    end_s: f64,
    max_change: f64,
}

impl Plot {
    const WIDTH: f64 = 1000.0;
    const HEIGHT: f64 = 214.0;

    fn x(&self, time_s: f64) -> f64 {
        let fraction = (time_s / self.end_s).clamp(0.0, 1.0);
        self.left + fraction * (self.right - self.left)
    }

    fn y(&self, change: f64) -> f64 {
        let fraction = (change / self.max_change).clamp(0.0, 1.0);
        self.bottom - fraction * (self.bottom - self.top)
    }
}

fn write_timeline(html: &mut String, analysis: &Analysis, timeline: Option<&Timeline>) {
    let end_s = video_end_s(analysis);
    if end_s <= 0.0 {
        return;
    }
    let points: Vec<(f64, f64)> = timeline
        .map(|timeline| {
            timeline
                .time_s
                .iter()
                .zip(&timeline.change)
                .filter(|(time, change)| time.is_finite() && change.is_finite())
                .map(|(&time, &change)| (time, f64::from(change)))
                .collect()
        })
        .unwrap_or_default();
    let threshold = timeline
        .and_then(|timeline| timeline.threshold)
        .filter(|threshold| threshold.is_finite() && *threshold > 0.0)
        .map(f64::from);
    let peak = points
        .iter()
        .map(|&(_, change)| change)
        .chain(threshold.map(|threshold| threshold * 1.15))
        .fold(0.05, f64::max);
    let step = nice_step(peak / 4.0);
    let plot = Plot {
        left: 42.0,
        right: Plot::WIDTH - 12.0,
        top: 32.0,
        bottom: 184.0,
        end_s,
        max_change: (peak / step).ceil() * step,
    };

    html.push_str("<section class=\"panel timeline\">\n<h2>Scene changes over time</h2>\n<div class=\"timeline-scroll\">\n");
    let _ = writeln!(
        html,
        "<svg viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"Change score over time with the chosen keyframes\">",
        Plot::WIDTH,
        Plot::HEIGHT
    );

    // Scenes as alternating bands, each a link to its keyframe.
    for (position, span) in caption_spans(analysis).into_iter().enumerate() {
        let (x0, x1) = (plot.x(span.start.seconds()), plot.x(span.end.seconds()));
        let _ = writeln!(
            html,
            "<a class=\"scene\" href=\"#k{number}\"><title>Scene {number}: {start} \u{2013} {end}</title>\
             <rect class=\"{class}\" x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{height:.1}\"/></a>",
            number = position + 1,
            start = span.start.timecode(),
            end = span.end.timecode(),
            class = if position % 2 == 0 { "band" } else { "band-alt" },
            top = plot.top,
            width = (x1 - x0).max(0.5),
            height = plot.bottom - plot.top,
        );
    }

    // Horizontal grid with the score's scale.
    let mut level = 0.0;
    while level <= plot.max_change + step / 2.0 {
        let y = plot.y(level);
        let _ = writeln!(
            html,
            "<line class=\"gridline\" x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            plot.left,
            plot.right,
            plot.left - 6.0,
            y + 4.0,
            trim_number(level, 2)
        );
        level += step;
    }

    // Time axis.
    let tick_s = time_step(end_s);
    let mut tick = 0.0;
    while tick <= end_s + 1e-9 {
        let x = plot.x(tick);
        let _ = writeln!(
            html,
            "<line class=\"gridline\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            plot.bottom,
            plot.bottom + 5.0,
            plot.bottom + 19.0,
            clock(tick)
        );
        tick += tick_s;
    }

    if !points.is_empty() {
        let curve = curve_points(&plot, &points);
        let mut line = String::new();
        for (position, (x, y)) in curve.iter().enumerate() {
            let _ = write!(
                line,
                "{}{x:.1} {y:.1}",
                if position == 0 { "M" } else { " L" }
            );
        }
        let (first_x, last_x) = (curve[0].0, curve[curve.len() - 1].0);
        let _ = writeln!(
            html,
            "<path class=\"area\" d=\"{line} L{last_x:.1} {bottom:.1} L{first_x:.1} {bottom:.1} Z\"/>\n\
             <path class=\"curve\" d=\"{line}\"/>",
            bottom = plot.bottom
        );
    }

    if let Some(threshold) = threshold {
        let y = plot.y(threshold);
        let _ = writeln!(
            html,
            "<line class=\"threshold\" x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\">\
             <title>Threshold {}</title></line>",
            plot.left,
            plot.right,
            trim_number(threshold, 3)
        );
    }

    // Keyframe markers, numbered while there is room for the numbers.
    let numbered = analysis.keyframes.len() <= 40;
    for (position, keyframe) in analysis.keyframes.iter().enumerate() {
        let x = plot.x(keyframe.time_s);
        let number = position + 1;
        let caption = keyframe
            .caption
            .as_deref()
            .map(super::one_line)
            .unwrap_or_default();
        let _ = write!(
            html,
            "<a class=\"marker\" href=\"#k{number}\" data-keyframe=\"{number}\">\
             <title>Keyframe {number} at {time}{separator}{caption}</title>\
             <line x1=\"{x:.1}\" y1=\"{line_top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>",
            time = keyframe.time().timecode(),
            separator = if caption.is_empty() { "" } else { ": " },
            caption = escape(&caption),
            line_top = if numbered { 25.0 } else { plot.top },
            bottom = plot.bottom,
        );
        if numbered {
            let _ = write!(
                html,
                "<circle cx=\"{x:.1}\" cy=\"16\" r=\"9.5\"/>\
                 <text x=\"{x:.1}\" y=\"19.5\" text-anchor=\"middle\">{number}</text>"
            );
        }
        html.push_str("</a>\n");
    }
    html.push_str("</svg>\n</div>\n<ul class=\"legend\">");
    if !points.is_empty() {
        html.push_str("<li class=\"curve-key\">change score</li>");
    }
    if let Some(threshold) = threshold {
        let _ = write!(
            html,
            "<li class=\"threshold-key\">threshold {}</li>",
            trim_number(threshold, 3)
        );
    }
    html.push_str(
        "<li class=\"marker-key\">keyframe</li><li class=\"scene-key\">scene</li></ul>\n",
    );
    if points.is_empty() {
        html.push_str("<p class=\"note\">No per-frame change scores were given for this report: only the scenes and keyframes are drawn.</p>\n");
    }
    html.push_str("</section>\n");
}

/// The curve's points in plot units; when frames outnumber the plot's columns, each column
/// keeps its highest score so that no spike disappears.
fn curve_points(plot: &Plot, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let columns = (plot.right - plot.left) as usize;
    let placed = points
        .iter()
        .map(|&(time, change)| (plot.x(time), plot.y(change)));
    if points.len() <= columns * 2 {
        return placed.collect();
    }
    let mut kept: Vec<(f64, f64)> = Vec::with_capacity(columns + 1);
    for (x, y) in placed {
        let column = x.floor();
        match kept.last_mut() {
            Some(last) if last.0.floor() == column => {
                if y < last.1 {
                    *last = (x, y);
                }
            }
            _ => kept.push((x, y)),
        }
    }
    kept
}

fn write_keyframes(html: &mut String, analysis: &Analysis, thumbnails: &[Option<Vec<u8>>]) {
    let count = analysis.keyframes.len();
    let _ = write!(
        html,
        "<section class=\"keyframes\" aria-label=\"Keyframes\">\n<div class=\"toolbar\">\n\
         <h2>Keyframes</h2>\n<label class=\"search\">\
         <svg viewBox=\"0 0 24 24\" aria-hidden=\"true\"><circle cx=\"11\" cy=\"11\" r=\"7\"/><path d=\"M20 20l-4-4\"/></svg>\
         <input id=\"filter\" type=\"search\" placeholder=\"Filter captions\u{2026}  (press /)\" \
         aria-label=\"Filter keyframes by caption\" autocomplete=\"off\" spellcheck=\"false\"></label>\n\
         <output id=\"filter-count\" class=\"count\" for=\"filter\">{count} {noun}</output>\n</div>\n\
         <ol id=\"keyframes\" class=\"grid\">\n",
        noun = if count == 1 { "keyframe" } else { "keyframes" },
    );
    let spans = caption_spans(analysis);
    let chapter_starts: Vec<u64> = chapter_spans(analysis)
        .iter()
        .map(|span| span.start.millis())
        .collect();
    let mut next_chapter = 0;
    for (position, span) in spans.iter().enumerate() {
        // Chapters open before the first keyframe whose scene starts at or after them.
        while next_chapter < chapter_starts.len()
            && chapter_starts[next_chapter] <= span.start.millis()
        {
            write_chapter_break(html, analysis, next_chapter);
            next_chapter += 1;
        }
        let thumbnail = thumbnails.get(position).and_then(Option::as_deref);
        write_card(html, analysis, position, *span, thumbnail);
    }
    while next_chapter < chapter_starts.len() {
        write_chapter_break(html, analysis, next_chapter);
        next_chapter += 1;
    }
    html.push_str(
        "</ol>\n<p id=\"filter-empty\" class=\"empty\" hidden>No caption matches the filter.</p>\n</section>\n",
    );
}

fn write_chapter_break(html: &mut String, analysis: &Analysis, chapter: usize) {
    let start = MediaTime::from_seconds(analysis.chapters[chapter].start_s);
    let _ = writeln!(
        html,
        "<li class=\"chapter-break\" id=\"chapter-{number}\"><span class=\"chapter-no\">Chapter {number}</span>\
         <h3>{title}</h3><a class=\"tc\" href=\"#chapter-{number}\">{timecode}</a></li>",
        number = chapter + 1,
        title = escape(&chapter_title(analysis, chapter)),
        timecode = start.timecode(),
    );
}

fn write_card(
    html: &mut String,
    analysis: &Analysis,
    position: usize,
    span: Span,
    thumbnail: Option<&[u8]>,
) {
    let keyframe = &analysis.keyframes[position];
    let number = position + 1;
    let time = keyframe.time();
    let _ = write!(
        html,
        "<li class=\"card\" id=\"k{number}\" data-keyframe=\"{number}\"><figure>"
    );
    match thumbnail {
        Some(bytes) => {
            let video = &analysis.video;
            let size = if video.width > 0 && video.height > 0 {
                format!(" width=\"{}\" height=\"{}\"", video.width, video.height)
            } else {
                String::new()
            };
            let _ = write!(
                html,
                "<a class=\"thumb\" href=\"#k{number}\"><img src=\"data:{mime};base64,{data}\"{size} \
                 alt=\"Keyframe {number} at {timecode}\">",
                mime = image_mime(bytes),
                data = BASE64.encode(bytes),
                timecode = time.timecode(),
            );
        }
        None => {
            let _ = write!(html, "<a class=\"thumb missing\" href=\"#k{number}\">");
        }
    }
    let _ = write!(
        html,
        "<span class=\"badge\">{number}</span><span class=\"badge time\">{}</span></a>\n<figcaption>",
        short_timecode(time)
    );
    match keyframe
        .caption
        .as_deref()
        .map(str::trim)
        .filter(|caption| !caption.is_empty())
    {
        Some(caption) => {
            let _ = write!(html, "<p class=\"caption\">{}</p>", escape(caption));
        }
        None => html.push_str("<p class=\"caption none\">No caption</p>"),
    }
    let _ = writeln!(
        html,
        "<p class=\"meta\"><a class=\"tc\" href=\"#k{number}\">{timecode}</a>\
         <span title=\"Scene {start} \u{2013} {end}\">scene {length} s</span>\
         <span title=\"Change score: how far this scene moved away from the previous one\">\
         \u{394} {change:.2}</span></p></figcaption></figure></li>",
        timecode = time.timecode(),
        start = span.start.timecode(),
        end = span.end.timecode(),
        length = trim_number((span.end.seconds() - span.start.seconds()).max(0.0), 1),
        change = keyframe.change,
    );
}

fn write_footer(html: &mut String, analysis: &Analysis) {
    let _ = write!(
        html,
        "<footer>\n<div class=\"wrap\">\n<p>Made by keyscribe {} from an analysis document ({}).",
        env!("CARGO_PKG_VERSION"),
        escape(&analysis.schema)
    );
    let timings = &analysis.timings;
    if timings.total_s > 0.0 {
        let _ = write!(
            html,
            " Analysed in {} (decoding {}, embedding {}, selection {}, captions {}).",
            stage_time(timings.total_s),
            stage_time(timings.decode_s),
            stage_time(timings.embed_s),
            stage_time(timings.select_s),
            stage_time(timings.caption_s),
        );
    }
    html.push_str("</p>\n</div>\n</footer>\n");
}

/// A stage's wall time: `41.6 s`, or `<0.1 s` for what took almost nothing.
fn stage_time(seconds: f64) -> String {
    if seconds > 0.0 && seconds < 0.05 {
        "<0.1 s".to_string()
    } else {
        format!("{} s", trim_number(seconds, 1))
    }
}

/// A chapter's title on one line, or its timecode when the title is blank.
fn chapter_title(analysis: &Analysis, chapter: usize) -> String {
    let chapter = &analysis.chapters[chapter];
    let title = super::one_line(&chapter.title);
    if title.is_empty() {
        MediaTime::from_seconds(chapter.start_s).timecode()
    } else {
        title
    }
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A Content-Security-Policy source allowing exactly this inline script or style.
fn csp_hash(source: &str) -> String {
    format!(
        "sha256-{}",
        BASE64.encode(Sha256::digest(source.as_bytes()))
    )
}

/// The MIME type of an encoded picture, from its first bytes (JPEG unless it is clearly PNG
/// or WebP).
fn image_mime(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

/// The last component of a path written with `/` or `\`.
fn file_name(path: &str) -> String {
    path.rsplit(['/', '\\'])
        .find(|part| !part.is_empty())
        .unwrap_or(path)
        .to_string()
}

/// `M:SS.s` under an hour, `H:MM:SS` from an hour on: short enough for badges.
fn short_timecode(time: MediaTime) -> String {
    let tenths = (time.seconds() * 10.0).round() as u64;
    let (hours, minutes) = (tenths / 36_000, tenths / 600 % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{:02}", tenths / 10 % 60)
    } else {
        format!("{minutes}:{:02}.{}", tenths / 10 % 60, tenths % 10)
    }
}

/// `M:SS` or `H:MM:SS`, whole seconds, for the time axis.
fn clock(seconds: f64) -> String {
    let whole = seconds.round() as u64;
    let (hours, minutes, seconds) = (whole / 3600, whole / 60 % 60, whole % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

/// A duration for people: `12.5 s` under a minute, else `M:SS` or `H:MM:SS`.
fn human_duration(seconds: f64) -> String {
    if seconds < 59.95 {
        format!("{} s", trim_number(seconds, 1))
    } else {
        clock(seconds)
    }
}

/// A number with at most `decimals` decimals and no trailing zeros.
fn trim_number(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A round step (1, 2 or 5 times a power of ten) at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw * 0.999)
        .unwrap_or(10.0 * magnitude)
}

/// The time axis's tick spacing: the smallest round interval giving at most ten ticks.
fn time_step(end_s: f64) -> f64 {
    const STEPS: [f64; 14] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    STEPS
        .into_iter()
        .find(|step| end_s / step <= 10.0)
        .unwrap_or_else(|| (end_s / 10.0 / 3600.0).ceil() * 3600.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::analysis;

    fn report(captions: [Option<&str>; 3]) -> String {
        render(&analysis(captions), &ReportInputs::default())
    }

    #[test]
    fn model_text_is_escaped_everywhere() {
        let attack = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";
        let mut analysis = analysis([Some(attack), None, None]);
        analysis.summary = Some(attack.into());
        analysis.chapters[0].title = attack.into();
        analysis.video.path = format!("/videos/{attack}.mp4");
        analysis.models.embedder.name = attack.into();
        let html = render(&analysis, &ReportInputs::default());
        let body = &html[html.find("<body>").unwrap()..];
        let body = &body[..body.rfind("<script>").unwrap()];
        assert!(!body.contains("<script"), "an injected script tag survived");
        assert!(!body.contains("<img src=x"), "an injected image survived");
        assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"));
        assert_eq!(html.matches("<script>").count(), 1);
    }

    #[test]
    fn the_page_loads_nothing_from_outside() {
        let html = render(
            &analysis([Some("a"), Some("b"), Some("c")]),
            &ReportInputs {
                thumbnails: vec![Some(b"\xff\xd8\xff".to_vec())],
                timeline: None,
            },
        );
        for (at, _) in html.match_indices(" src=\"") {
            assert!(
                html[at + 6..].starts_with("data:"),
                "{}",
                &html[at..at + 40]
            );
        }
        for (at, _) in html.match_indices(" href=\"") {
            assert!(html[at + 7..].starts_with('#'), "{}", &html[at..at + 40]);
        }
        for pattern in [
            "http:", "https:", "url(", "@import", "<link", "<iframe", "fetch(",
        ] {
            assert!(!html.contains(pattern), "found `{pattern}` in the report");
        }
        assert!(html.contains("default-src 'none'"));
    }

    #[test]
    fn the_policy_hashes_the_inline_style_and_script() {
        let html = report([Some("a"), None, None]);
        assert!(html.contains(&format!("style-src '{}'", csp_hash(STYLE))));
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        // sha256 of the empty string, a known value.
        assert_eq!(
            csp_hash(""),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn one_card_per_keyframe_with_anchored_timecodes() {
        let mut analysis = analysis([Some("first"), None, Some("third")]);
        let inputs = ReportInputs {
            thumbnails: vec![Some(b"\xff\xd8\xffjpeg".to_vec()), None],
            timeline: None,
        };
        analysis.keyframes[2].time_s = 3725.5;
        let html = render(&analysis, &inputs);
        assert_eq!(html.matches("<li class=\"card\"").count(), 3);
        assert_eq!(
            html.matches("<img src=\"data:image/jpeg;base64,").count(),
            1
        );
        assert_eq!(html.matches("class=\"thumb missing\"").count(), 2);
        assert!(html.contains("id=\"k1\""));
        assert!(html.contains("<a class=\"tc\" href=\"#k3\">01:02:05.500</a>"));
        assert!(html.contains("<p class=\"caption none\">No caption</p>"));
        assert_eq!(html.matches("class=\"chapter-break\"").count(), 2);
        assert!(
            html.find("id=\"chapter-2\"").unwrap() > html.find("id=\"k2\"").unwrap()
                && html.find("id=\"chapter-2\"").unwrap() < html.find("id=\"k3\"").unwrap(),
            "chapter 2 opens before keyframe 3, whose scene starts it"
        );
    }

    #[test]
    fn the_timeline_draws_curve_threshold_and_markers() {
        let analysis = analysis([Some("a"), Some("b"), Some("c")]);
        let inputs = ReportInputs {
            thumbnails: Vec::new(),
            timeline: Some(Timeline {
                time_s: (0..24).map(|frame| frame as f64 * 0.5).collect(),
                change: (0..24).map(|frame| (frame % 8) as f32 * 0.05).collect(),
                threshold: Some(0.3),
            }),
        };
        let html = render(&analysis, &inputs);
        assert_eq!(html.matches("<path class=\"curve\"").count(), 1);
        assert!(html.contains("<li class=\"threshold-key\">threshold 0.3</li>"));
        assert_eq!(html.matches("<a class=\"marker\"").count(), 3);
        assert!(!html.contains("No per-frame change scores"));
        let without = report([Some("a"), Some("b"), Some("c")]);
        assert!(!without.contains("class=\"curve\""));
        assert!(without.contains("No per-frame change scores"));
    }

    #[test]
    fn the_timeline_comes_from_the_sidecar_frames() {
        let frames = FrameEmbeddings {
            time_s: vec![0.0, 0.5],
            change: vec![0.0, 0.4],
            embeddings: vec![1.0, 0.0, 0.0, 1.0],
            dim: 2,
            threshold: Some(0.3),
        };
        let timeline = Timeline::from_frames(&frames);
        assert_eq!(timeline.time_s, frames.time_s);
        assert_eq!(timeline.change, frames.change);
        assert_eq!(timeline.threshold, Some(0.3));
    }

    #[test]
    fn long_timelines_keep_one_point_per_column_and_every_spike() {
        let plot = Plot {
            left: 0.0,
            right: 100.0,
            top: 0.0,
            bottom: 100.0,
            end_s: 1000.0,
            max_change: 1.0,
        };
        let mut points: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64 * 0.1, 0.1)).collect();
        points[4321].1 = 0.9;
        let curve = curve_points(&plot, &points);
        assert!(curve.len() <= 101, "{}", curve.len());
        assert!(curve.iter().any(|&(_, y)| (y - 10.0).abs() < 1e-9));
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(short_timecode(MediaTime::from_seconds(3.754)), "0:03.8");
        assert_eq!(short_timecode(MediaTime::from_seconds(3725.5)), "1:02:05");
        assert_eq!(clock(90.0), "1:30");
        assert_eq!(human_duration(30.0), "30 s");
        assert_eq!(stage_time(0.01), "<0.1 s");
        assert_eq!(stage_time(41.63), "41.6 s");
        assert_eq!(human_duration(754.0), "12:34");
        assert_eq!(trim_number(29.97, 2), "29.97");
        assert_eq!(trim_number(0.5, 3), "0.5");
        assert!((nice_step(0.13) - 0.2).abs() < 1e-12);
        assert!((nice_step(0.1) - 0.1).abs() < 1e-12);
        assert!((nice_step(0.3) - 0.5).abs() < 1e-12);
        assert_eq!(time_step(30.0), 5.0);
        assert_eq!(time_step(3600.0), 600.0);
        assert_eq!(file_name("C:\\videos\\a.mp4"), "a.mp4");
        assert_eq!(file_name("dir/b.mov"), "b.mov");
        assert_eq!(image_mime(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(image_mime(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
    }
}
