//! The report's page around the timeline: head, masthead, summary and chapters, the
//! keyframe cards with the filter box, and the footer.

use super::format::{csp_hash, image_mime};
use super::markup::{Escaped, Html, Piece};
use super::{SCRIPT, STYLE};
use crate::analysis::Analysis;
use crate::output::{caption_spans, chapter_spans, file_name, one_line, video_end_s, Span};
use crate::time::{duration_text, MediaTime};

/// The document's head and the opening of its body.
pub(super) fn write_head(html: &mut Html, analysis: &Analysis) {
    let name = Escaped::text(file_name(&analysis.video.path));
    html.fill(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         img-src data:; style-src '{}'; script-src '{}'; \
         base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"generator\" content=\"keyscribe {}\">\n\
         <title>{} \u{2014} keyscribe report</title>\n\
         <style>{}</style>\n</head>\n<body>\n",
        &[
            (&csp_hash(STYLE)).into(),
            (&csp_hash(SCRIPT)).into(),
            Piece::Markup(env!("CARGO_PKG_VERSION")),
            (&name).into(),
            Piece::Markup(STYLE),
        ],
    );
}

/// The closing script and the end of the document.
pub(super) fn write_end(html: &mut Html) {
    html.fill(
        "<script>{}</script>\n</body>\n</html>\n",
        &[Piece::Markup(SCRIPT)],
    );
}

/// The banner with the video's name and facts.
pub(super) fn write_masthead(html: &mut Html, analysis: &Analysis) {
    let video = &analysis.video;
    html.fill(
        "<header class=\"masthead\">\n<div class=\"wrap\">\n\
         <p class=\"eyebrow\">keyscribe report</p>\n\
         <h1 title=\"{}\">{}</h1>\n<ul class=\"facts\">",
        &[
            (&Escaped::text(&video.path)).into(),
            (&Escaped::text(file_name(&video.path))).into(),
        ],
    );
    html.fill(
        "<li><b>{}</b> long</li>",
        &[(&Escaped::text(&duration_text(video_end_s(analysis)))).into()],
    );
    if video.width > 0 && video.height > 0 {
        html.fill(
            "<li><b>{}\u{d7}{}</b></li>",
            &[video.width.into(), video.height.into()],
        );
    }
    if video.fps > 0.0 {
        html.fill("<li><b>{}</b> fps</li>", &[Piece::Trimmed(video.fps, 2)]);
    }
    let keyframes = analysis.keyframes.len();
    html.fill(
        "<li><b>{}</b> {}</li>",
        &[keyframes.into(), Piece::Markup(plural(keyframes))],
    );
    let models = &analysis.models;
    html.fill(
        "<li>keyframes by <b>{}</b></li>",
        &[(&Escaped::text(&models.embedder.name)).into()],
    );
    if let Some(captioner) = &models.captioner {
        html.fill(
            "<li>captions by <b>{}</b></li>",
            &[(&Escaped::text(&captioner.name)).into()],
        );
    }
    html.markup("</ul>\n</div>\n</header>\n");
}

/// `keyframe` or `keyframes`.
fn plural(count: usize) -> &'static str {
    if count == 1 {
        "keyframe"
    } else {
        "keyframes"
    }
}

/// The summary and the list of chapters, when the analysis has them.
pub(super) fn write_overview(html: &mut Html, analysis: &Analysis) {
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
    html.markup(if single {
        "<div class=\"overview single\">\n"
    } else {
        "<div class=\"overview\">\n"
    });
    if let Some(summary) = summary {
        html.fill(
            "<section class=\"panel summary\">\n<h2>Summary</h2>\n<p>{}</p>\n</section>\n",
            &[(&Escaped::text(summary)).into()],
        );
    }
    if !chapters.is_empty() {
        html.markup("<nav class=\"panel chapters\" aria-label=\"Chapters\">\n<h2>Chapters</h2>\n<ol class=\"chapter-list\">\n");
        for (position, chapter) in chapters.iter().enumerate() {
            html.fill(
                "<li><a href=\"#chapter-{}\"><span class=\"tc\">{}</span><span class=\"title\">{}</span></a></li>\n",
                &[
                    (position + 1).into(),
                    (&Escaped::text(&MediaTime::from_seconds(chapter.start_s).timecode())).into(),
                    (&chapter_title(analysis, position)).into(),
                ],
            );
        }
        html.markup("</ol>\n</nav>\n");
    }
    html.markup("</div>\n");
}

/// The filter box and one card per keyframe, with the chapters' headings between them.
pub(super) fn write_keyframes(
    html: &mut Html,
    analysis: &Analysis,
    thumbnails: &[Option<Vec<u8>>],
) {
    let count = analysis.keyframes.len();
    html.fill(
        "<section class=\"keyframes\" aria-label=\"Keyframes\">\n<div class=\"toolbar\">\n\
         <h2>Keyframes</h2>\n<label class=\"search\">\
         <svg viewBox=\"0 0 24 24\" aria-hidden=\"true\"><circle cx=\"11\" cy=\"11\" r=\"7\"/><path d=\"M20 20l-4-4\"/></svg>\
         <input id=\"filter\" type=\"search\" placeholder=\"Filter captions\u{2026}  (press /)\" \
         aria-label=\"Filter keyframes by caption\" autocomplete=\"off\" spellcheck=\"false\"></label>\n\
         <output id=\"filter-count\" class=\"count\" for=\"filter\">{} {}</output>\n</div>\n\
         <ol id=\"keyframes\" class=\"grid\">\n",
        &[count.into(), Piece::Markup(plural(count))],
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
    html.markup(
        "</ol>\n<p id=\"filter-empty\" class=\"empty\" hidden>No caption matches the filter.</p>\n</section>\n",
    );
}

fn write_chapter_break(html: &mut Html, analysis: &Analysis, chapter: usize) {
    let number = chapter + 1;
    let start = MediaTime::from_seconds(analysis.chapters[chapter].start_s);
    html.fill(
        "<li class=\"chapter-break\" id=\"chapter-{}\"><span class=\"chapter-no\">Chapter {}</span>\
         <h3>{}</h3><a class=\"tc\" href=\"#chapter-{}\">{}</a></li>\n",
        &[
            number.into(),
            number.into(),
            (&chapter_title(analysis, chapter)).into(),
            number.into(),
            (&Escaped::text(&start.timecode())).into(),
        ],
    );
}

fn write_card(
    html: &mut Html,
    analysis: &Analysis,
    position: usize,
    span: Span,
    thumbnail: Option<&[u8]>,
) {
    let keyframe = &analysis.keyframes[position];
    let number = position + 1;
    let timecode = Escaped::text(&keyframe.time().timecode());
    html.fill(
        "<li class=\"card\" id=\"k{}\" data-keyframe=\"{}\"><figure>",
        &[number.into(), number.into()],
    );
    match thumbnail {
        Some(bytes) => {
            html.fill(
                "<a class=\"thumb\" href=\"#k{}\"><img src=\"data:{};base64,{}\"",
                &[
                    number.into(),
                    Piece::Markup(image_mime(bytes)),
                    Piece::Base64(bytes),
                ],
            );
            let video = &analysis.video;
            if video.width > 0 && video.height > 0 {
                html.fill(
                    " width=\"{}\" height=\"{}\"",
                    &[video.width.into(), video.height.into()],
                );
            }
            html.fill(
                " alt=\"Keyframe {} at {}\">",
                &[number.into(), (&timecode).into()],
            );
        }
        None => html.fill(
            "<a class=\"thumb missing\" href=\"#k{}\">",
            &[number.into()],
        ),
    }
    html.fill(
        "<span class=\"badge\">{}</span><span class=\"badge time\">{}</span></a>\n<figcaption>",
        &[number.into(), (&timecode).into()],
    );
    match keyframe
        .caption
        .as_deref()
        .map(str::trim)
        .filter(|caption| !caption.is_empty())
    {
        Some(caption) => html.fill(
            "<p class=\"caption\">{}</p>",
            &[(&Escaped::text(caption)).into()],
        ),
        None => html.markup("<p class=\"caption none\">No caption</p>"),
    }
    let scene_length = (span.end.seconds() - span.start.seconds()).max(0.0);
    html.fill(
        "<p class=\"meta\"><a class=\"tc\" href=\"#k{}\">{}</a>\
         <span title=\"Scene {} \u{2013} {}\">scene {}</span>\
         <span title=\"Change score: how far this scene moved away from the previous one\">\
         \u{394} {}</span></p></figcaption></figure></li>\n",
        &[
            number.into(),
            (&timecode).into(),
            (&Escaped::text(&span.start.timecode())).into(),
            (&Escaped::text(&span.end.timecode())).into(),
            (&Escaped::text(&duration_text(scene_length))).into(),
            Piece::Fixed(f64::from(keyframe.change), 2),
        ],
    );
}

/// The closing line: what made the report and how long the analysis took.
pub(super) fn write_footer(html: &mut Html, analysis: &Analysis) {
    html.fill(
        "<footer>\n<div class=\"wrap\">\n<p>Made by keyscribe {} from an analysis document ({}).",
        &[
            Piece::Markup(env!("CARGO_PKG_VERSION")),
            (&Escaped::text(&analysis.schema)).into(),
        ],
    );
    let timings = &analysis.timings;
    if timings.total_s > 0.0 {
        let stage = |seconds: f64| Escaped::text(&duration_text(seconds));
        html.fill(
            " Analysed in {} (decoding {}, embedding {}, selection {}, captions {}).",
            &[
                (&stage(timings.total_s)).into(),
                (&stage(timings.decode_s)).into(),
                (&stage(timings.embed_s)).into(),
                (&stage(timings.select_s)).into(),
                (&stage(timings.caption_s)).into(),
            ],
        );
    }
    html.markup("</p>\n</div>\n</footer>\n");
}

/// A chapter's title on one line, or its timecode when the title is blank.
fn chapter_title(analysis: &Analysis, chapter: usize) -> Escaped {
    let chapter = &analysis.chapters[chapter];
    let title = one_line(&chapter.title);
    if title.is_empty() {
        Escaped::text(&MediaTime::from_seconds(chapter.start_s).timecode())
    } else {
        Escaped::text(&title)
    }
}
