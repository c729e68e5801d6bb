//! The HTML report in a real browser: headless Chromium opens the file, runs its script and
//! hands back the DOM and every console message.
//!
//! Needs Chromium: Debian's `chromium` package (`apt-get install -y chromium`), or any
//! Chrome/Chromium binary named by `KEYSCRIBE_CHROMIUM`. `KEYSCRIBE_BLESS=1` also rewrites the
//! README's screenshot, `docs/report.png`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyscribe::analysis::Analysis;
use keyscribe::output::html::{self, ReportInputs, Timeline};
use keyscribe::pipeline::keyframe_thumbnails;

/// How long one browser run may take before the test gives up on it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

/// The size of the screenshot in docs/.
const SCREENSHOT_SIZE: (u32, u32) = (1280, 2250);

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Analysis {
    let path = repository().join(format!("tests/golden/{name}.analysis.json"));
    Analysis::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

/// The Chromium binary: `KEYSCRIBE_CHROMIUM`, or the first of the usual names on `PATH`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("KEYSCRIBE_CHROMIUM") {
        return PathBuf::from(path);
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "headless Chromium is needed to test the HTML report and was not found on PATH: \
                 install Debian's `chromium` package (apt-get install -y chromium), or set \
                 KEYSCRIBE_CHROMIUM to a Chrome or Chromium binary"
            )
        })
}

/// What the browser saw.
struct Visit {
    /// The DOM after the page loaded and its scripts ran, serialised.
    dom: String,
    /// Every message the page wrote to its console: script errors, policy violations,
    /// failed loads and any `console.*` call. The report writes none.
    console: Vec<String>,
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or `--screenshot=...`).
fn run_chromium(url: &str, action: &[String]) -> Visit {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(action)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", chromium().display()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Chromium did not finish {url} within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = out_reader.join().unwrap().unwrap();
    let log = err_reader.join().unwrap().unwrap();
    assert!(
        status.success(),
        "Chromium failed on {url}: {status}\n{log}"
    );
    // Console messages are logged as `[...:INFO:CONSOLE:<line>] "message", source: ...`.
    let console = log
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    Visit { dom, console }
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Opens a page (with an optional `?q=` filter) and returns its DOM and console.
fn visit(page: &Path, filter: Option<&str>) -> Visit {
    let mut url = file_url(page);
    if let Some(filter) = filter {
        url.push_str("?q=");
        url.push_str(filter);
    }
    let visit = run_chromium(&url, &["--dump-dom".to_string()]);
    assert!(
        visit.dom.contains("</html>"),
        "no DOM came back from {url}: {:?}",
        visit.dom
    );
    visit
}

/// A change score for every half second of the scenes sample, shaped like the selector's:
/// low with a little noise inside scenes, a peak at each cut, a broad bump through the fade
/// and the dissolve, a lone spike at the one-frame flash and a raised level during the pan.
fn scenes_timeline(analysis: &Analysis) -> Timeline {
    let time_s: Vec<f64> = (0..60).map(|frame| f64::from(frame) * 0.5).collect();
    let change = time_s
        .iter()
        .map(|&time| {
            let noise = ((time * 12.9898).sin() * 43_758.547).fract().abs() * 0.05;
            let mut score = 0.03 + noise;
            for keyframe in analysis.keyframes.iter().skip(1) {
                let start = keyframe.scene.start_s;
                let gradual = (11.0..=18.5).contains(&start);
                let width = if gradual { 0.9 } else { 0.3 };
                let distance = (time - start).abs();
                score += f64::from(keyframe.change) * (-(distance / width).powi(2)).exp();
            }
            if (14.0..14.5).contains(&time) {
                score += 0.22;
            }
            if (22.5..28.0).contains(&time) {
                score += 0.06;
            }
            score as f32
        })
        .collect();
    Timeline {
        time_s,
        change,
        threshold: Some(0.3),
    }
}

/// The scenes fixture's report with thumbnails taken from `samples/scenes.mp4`.
fn scenes_report() -> (Analysis, ReportInputs) {
    let analysis = fixture("scenes");
    let video = repository().join("samples/scenes.mp4");
    let thumbnails = keyframe_thumbnails(&video, &analysis)
        .unwrap_or_else(|error| panic!("thumbnails of {}: {error}", video.display()));
    let inputs = ReportInputs {
        thumbnails: thumbnails.into_iter().map(Some).collect(),
        timeline: Some(scenes_timeline(&analysis)),
    };
    (analysis, inputs)
}

fn write_page(dir: &Path, name: &str, html: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, html).unwrap();
    path
}

/// The opening tags of the elements with `class` (an exact class attribute).
fn tags_with_class<'a>(dom: &'a str, tag: &str, class: &str) -> Vec<&'a str> {
    let opening = format!("<{tag} class=\"{class}\"");
    dom.match_indices(&opening)
        .map(|(at, _)| &dom[at..at + dom[at..].find('>').unwrap()])
        .collect()
}

#[test]
fn console_messages_are_caught() {
    // The check below is only as good as the console capture: prove that it sees errors.
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(
        dir.path(),
        "noisy.html",
        "<!DOCTYPE html><html><body><script>console.error('broken on purpose');\
         missingFunction();</script></body></html>",
    );
    let seen = visit(&page, None);
    assert_eq!(seen.console.len(), 2, "{:#?}", seen.console);
    assert!(seen.console[0].contains("broken on purpose"));
    assert!(seen.console[1].contains("missingFunction"));
}

#[test]
fn the_report_loads_cleanly_with_every_thumbnail_decoded() {
    let (analysis, inputs) = scenes_report();
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path(), "report.html", &html::render(&analysis, &inputs));
    let seen = visit(&page, None);
    assert!(
        seen.console.is_empty(),
        "the report wrote to the console:\n{}",
        seen.console.join("\n")
    );
    let keyframes = analysis.keyframes.len();
    assert_eq!(seen.dom.matches("<img ").count(), keyframes);
    // The page's own script marks each picture once the browser has decoded it (or not).
    let shown = tags_with_class(&seen.dom, "a", "thumb")
        .iter()
        .filter(|tag| tag.contains("data-thumbnail=\"shown\""))
        .count();
    assert_eq!(shown, keyframes, "thumbnails the browser decoded");
    assert_eq!(tags_with_class(&seen.dom, "li", "card").len(), keyframes);
    assert_eq!(tags_with_class(&seen.dom, "a", "marker").len(), keyframes);
    assert!(seen.dom.contains(
        "<output id=\"filter-count\" class=\"count\" for=\"filter\">7 keyframes</output>"
    ));
}

#[test]
fn an_undecodable_thumbnail_is_marked_and_the_rest_shown() {
    let (analysis, mut inputs) = scenes_report();
    inputs.thumbnails[2] = Some(b"\xff\xd8\xff\xe0 this is not a JPEG".to_vec());
    inputs.thumbnails[4] = None;
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path(), "report.html", &html::render(&analysis, &inputs));
    let seen = visit(&page, None);
    let thumbs = tags_with_class(&seen.dom, "a", "thumb");
    let states: Vec<&str> = thumbs
        .iter()
        .map(|tag| {
            if tag.contains("data-thumbnail=\"shown\"") {
                "shown"
            } else if tag.contains("data-thumbnail=\"broken\"") {
                "broken"
            } else {
                "unmarked"
            }
        })
        .collect();
    assert_eq!(
        states,
        ["shown", "shown", "broken", "shown", "shown", "shown"]
    );
    assert_eq!(tags_with_class(&seen.dom, "a", "thumb missing").len(), 1);
}

#[test]
fn the_filter_box_filters_the_captions() {
    let (analysis, inputs) = scenes_report();
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path(), "report.html", &html::render(&analysis, &inputs));
    let seen = visit(&page, Some("Fractal"));
    assert!(seen.console.is_empty(), "{}", seen.console.join("\n"));
    let visible: Vec<&str> = tags_with_class(&seen.dom, "li", "card")
        .into_iter()
        .filter(|tag| !tag.contains(" hidden"))
        .collect();
    assert_eq!(visible.len(), 2, "{visible:#?}");
    assert!(visible[0].contains("id=\"k3\"") && visible[1].contains("id=\"k6\""));
    assert!(seen.dom.contains(">2 of 7 keyframes</output>"));
    assert!(seen.dom.contains("<mark>fractal</mark>"));
    // A chapter with no matching keyframe is hidden with its cards.
    let chapters = tags_with_class(&seen.dom, "li", "chapter-break");
    let hidden: Vec<bool> = chapters.iter().map(|tag| tag.contains(" hidden")).collect();
    assert_eq!(hidden, [true, false, false]);
    let dimmed = tags_with_class(&seen.dom, "a", "marker dim").len();
    assert_eq!(dimmed, 5, "timeline markers of hidden keyframes are dimmed");

    let seen = visit(&page, Some("zebra"));
    assert!(seen.dom.contains(">0 of 7 keyframes</output>"));
    assert!(seen
        .dom
        .contains("<p id=\"filter-empty\" class=\"empty\">No caption matches the filter.</p>"));
}

#[test]
fn hostile_captions_stay_text_in_the_browser() {
    let analysis = fixture("tricky");
    let (_, scenes) = scenes_report();
    let thumbnails: Vec<Option<Vec<u8>>> = (0..analysis.keyframes.len())
        .map(|position| scenes.thumbnails[position % scenes.thumbnails.len()].clone())
        .collect();
    let inputs = ReportInputs {
        thumbnails,
        timeline: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path(), "tricky.html", &html::render(&analysis, &inputs));
    let seen = visit(&page, None);
    // An injected script would be blocked by the page's policy, which logs a violation.
    assert!(seen.console.is_empty(), "{}", seen.console.join("\n"));
    assert_eq!(
        seen.dom.matches("<script").count(),
        1,
        "only the report's own script"
    );
    assert_eq!(
        seen.dom.matches("<img ").count(),
        analysis.keyframes.len(),
        "no injected image"
    );
    assert!(!seen.dom.contains("onerror=alert(1)>"));
    assert!(seen
        .dom
        .contains("&lt;script&gt;alert(\"caption\")&lt;/script&gt; on a screen"));
    assert!(seen
        .dom
        .contains("\"&gt;&lt;img src=x onerror=alert(1)&gt; and a sign saying 'Tom &amp; Jerry'"));
}

#[test]
fn screenshot_of_the_report() {
    let (analysis, inputs) = scenes_report();
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path(), "report.html", &html::render(&analysis, &inputs));
    let shot = dir.path().join("report.png");
    run_chromium(
        &file_url(&page),
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={},{}", SCREENSHOT_SIZE.0, SCREENSHOT_SIZE.1),
        ],
    );
    let picture = image::open(&shot)
        .unwrap_or_else(|error| panic!("{}: {error}", shot.display()))
        .to_rgb8();
    assert_eq!(picture.dimensions(), SCREENSHOT_SIZE);
    // A blank or unstyled page has few colours; the report's pictures bring thousands.
    let colours: std::collections::HashSet<[u8; 3]> =
        picture.pixels().map(|pixel| pixel.0).collect();
    assert!(colours.len() > 2000, "only {} colours", colours.len());
    if std::env::var_os("KEYSCRIBE_BLESS").is_some_and(|value| value == "1") {
        let docs = repository().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        // Chromium writes quick PNGs; the committed copy is compressed harder.
        let file = std::fs::File::create(docs.join("report.png")).unwrap();
        let encoder = image::codecs::png::PngEncoder::new_with_quality(
            std::io::BufWriter::new(file),
            image::codecs::png::CompressionType::Best,
            image::codecs::png::FilterType::Adaptive,
        );
        picture.write_with_encoder(encoder).unwrap();
    }
}
