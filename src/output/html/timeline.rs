//! The report's timeline: an SVG plot of the change score over time with the scenes as
//! bands, the threshold as a line and the keyframes as numbered markers.

use super::markup::{Escaped, Html, Piece};
use super::Timeline;
use crate::analysis::Analysis;
use crate::output::{caption_spans, one_line, video_end_s};
use crate::time::MediaTime;

/// Keyframe markers carry their number while there are at most this many.
const NUMBERED_MARKERS: usize = 40;

/// Half the width of a time axis label (`00:00:05.000` in the 11 px axis font), in plot units.
const TIME_LABEL_HALF_WIDTH: f64 = 40.0;

/// Geometry of the timeline plot, in SVG user units.
pub(super) struct Plot {
    pub(super) left: f64,
    pub(super) right: f64,
    pub(super) top: f64,
    pub(super) bottom: f64,
    pub(super) end_s: f64,
    pub(super) max_change: f64,
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

/// Writes the timeline section; nothing for a video without a length.
pub(super) fn write_timeline(html: &mut Html, analysis: &Analysis, timeline: Option<&Timeline>) {
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

    html.fill(
        "<section class=\"panel timeline\">\n<h2>Scene changes over time</h2>\n<div class=\"timeline-scroll\">\n\
         <svg viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"Change score over time with the chosen keyframes\">\n",
        &[Piece::Trimmed(Plot::WIDTH, 0), Piece::Trimmed(Plot::HEIGHT, 0)],
    );
    write_scene_bands(html, analysis, &plot);
    write_change_axis(html, &plot, step);
    write_time_axis(html, &plot);
    if !points.is_empty() {
        write_curve(html, &plot, &points);
    }
    if let Some(threshold) = threshold {
        let y = plot.y(threshold);
        html.fill(
            "<line class=\"threshold\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\">\
             <title>Threshold {}</title></line>\n",
            &[
                Piece::Fixed(plot.left, 1),
                Piece::Fixed(y, 1),
                Piece::Fixed(plot.right, 1),
                Piece::Fixed(y, 1),
                Piece::Trimmed(threshold, 3),
            ],
        );
    }
    write_markers(html, analysis, &plot);
    html.markup("</svg>\n</div>\n<ul class=\"legend\">");
    if !points.is_empty() {
        html.markup("<li class=\"curve-key\">change score</li>");
    }
    if let Some(threshold) = threshold {
        html.fill(
            "<li class=\"threshold-key\">threshold {}</li>",
            &[Piece::Trimmed(threshold, 3)],
        );
    }
    html.markup("<li class=\"marker-key\">keyframe</li><li class=\"scene-key\">scene</li></ul>\n");
    if points.is_empty() {
        html.markup("<p class=\"note\">No per-frame change scores were given for this report: only the scenes and keyframes are drawn.</p>\n");
    }
    html.markup("</section>\n");
}

/// Scenes as alternating bands, each a link to its keyframe.
fn write_scene_bands(html: &mut Html, analysis: &Analysis, plot: &Plot) {
    for (position, span) in caption_spans(analysis).into_iter().enumerate() {
        let (x0, x1) = (plot.x(span.start.seconds()), plot.x(span.end.seconds()));
        let number = position + 1;
        let (start, end) = (
            Escaped::text(&span.start.timecode()),
            Escaped::text(&span.end.timecode()),
        );
        html.fill(
            "<a class=\"scene\" href=\"#k{}\"><title>Scene {}: {} \u{2013} {}</title>\
             <rect class=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/></a>\n",
            &[
                number.into(),
                number.into(),
                (&start).into(),
                (&end).into(),
                Piece::Markup(if position % 2 == 0 {
                    "band"
                } else {
                    "band-alt"
                }),
                Piece::Fixed(x0, 1),
                Piece::Fixed(plot.top, 1),
                Piece::Fixed((x1 - x0).max(0.5), 1),
                Piece::Fixed(plot.bottom - plot.top, 1),
            ],
        );
    }
}

/// Horizontal grid lines with the score's scale.
fn write_change_axis(html: &mut Html, plot: &Plot, step: f64) {
    let mut level = 0.0;
    while level <= plot.max_change + step / 2.0 {
        let y = plot.y(level);
        html.fill(
            "<line class=\"gridline\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\
             <text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            &[
                Piece::Fixed(plot.left, 1),
                Piece::Fixed(y, 1),
                Piece::Fixed(plot.right, 1),
                Piece::Fixed(y, 1),
                Piece::Fixed(plot.left - 6.0, 1),
                Piece::Fixed(y + 4.0, 1),
                Piece::Trimmed(level, 2),
            ],
        );
        level += step;
    }
}

/// Vertical grid lines at round times, labelled with their timecodes.
fn write_time_axis(html: &mut Html, plot: &Plot) {
    let tick_s = time_step(plot.end_s);
    let mut tick = 0.0;
    while tick <= plot.end_s + 1e-9 {
        let x = plot.x(tick);
        let label = Escaped::text(&MediaTime::from_seconds(tick).timecode());
        // A label centred on a tick near the right edge would run off the plot.
        let anchor = if x + TIME_LABEL_HALF_WIDTH > Plot::WIDTH {
            "end"
        } else {
            "middle"
        };
        html.fill(
            "<line class=\"gridline\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\
             <text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"{}\">{}</text>\n",
            &[
                Piece::Fixed(x, 1),
                Piece::Fixed(plot.bottom, 1),
                Piece::Fixed(x, 1),
                Piece::Fixed(plot.bottom + 5.0, 1),
                Piece::Fixed(x, 1),
                Piece::Fixed(plot.bottom + 19.0, 1),
                Piece::Markup(anchor),
                (&label).into(),
            ],
        );
        tick += tick_s;
    }
}

/// The change score as a filled area under a line.
fn write_curve(html: &mut Html, plot: &Plot, points: &[(f64, f64)]) {
    let curve = curve_points(plot, points);
    let write_line = |html: &mut Html| {
        for (position, &(x, y)) in curve.iter().enumerate() {
            html.fill(
                if position == 0 { "M{} {}" } else { " L{} {}" },
                &[Piece::Fixed(x, 1), Piece::Fixed(y, 1)],
            );
        }
    };
    let (first_x, last_x) = (curve[0].0, curve[curve.len() - 1].0);
    html.markup("<path class=\"area\" d=\"");
    write_line(html);
    html.fill(
        " L{} {} L{} {} Z\"/>\n<path class=\"curve\" d=\"",
        &[
            Piece::Fixed(last_x, 1),
            Piece::Fixed(plot.bottom, 1),
            Piece::Fixed(first_x, 1),
            Piece::Fixed(plot.bottom, 1),
        ],
    );
    write_line(html);
    html.markup("\"/>\n");
}

/// Keyframe markers, numbered while there is room for the numbers.
fn write_markers(html: &mut Html, analysis: &Analysis, plot: &Plot) {
    let numbered = analysis.keyframes.len() <= NUMBERED_MARKERS;
    for (position, keyframe) in analysis.keyframes.iter().enumerate() {
        let x = plot.x(keyframe.time_s);
        let number = position + 1;
        let caption = keyframe
            .caption
            .as_deref()
            .map(one_line)
            .unwrap_or_default();
        let time = Escaped::text(&keyframe.time().timecode());
        let caption = Escaped::text(&caption);
        html.fill(
            "<a class=\"marker\" href=\"#k{}\" data-keyframe=\"{}\">\
             <title>Keyframe {} at {}{}{}</title>\
             <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
            &[
                number.into(),
                number.into(),
                number.into(),
                (&time).into(),
                Piece::Markup(if caption.is_empty() { "" } else { ": " }),
                (&caption).into(),
                Piece::Fixed(x, 1),
                Piece::Fixed(if numbered { 25.0 } else { plot.top }, 1),
                Piece::Fixed(x, 1),
                Piece::Fixed(plot.bottom, 1),
            ],
        );
        if numbered {
            html.fill(
                "<circle cx=\"{}\" cy=\"16\" r=\"9.5\"/>\
                 <text x=\"{}\" y=\"19.5\" text-anchor=\"middle\">{}</text>",
                &[Piece::Fixed(x, 1), Piece::Fixed(x, 1), number.into()],
            );
        }
        html.markup("</a>\n");
    }
}

/// The curve's points in plot units; when frames outnumber the plot's columns, each column
/// keeps its highest score so that no spike disappears.
pub(super) fn curve_points(plot: &Plot, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
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
    fn round_steps() {
        assert!((nice_step(0.13) - 0.2).abs() < 1e-12);
        assert!((nice_step(0.1) - 0.1).abs() < 1e-12);
        assert!((nice_step(0.3) - 0.5).abs() < 1e-12);
        assert_eq!(time_step(30.0), 5.0);
        assert_eq!(time_step(3600.0), 600.0);
    }
}
