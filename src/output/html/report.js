// keyscribe report: filter the keyframes by their captions, offline.
// Captions are read from the page's own text; nothing is ever parsed as HTML.
(() => {
  "use strict";

  const filter = document.getElementById("filter");
  const counter = document.getElementById("filter-count");
  const empty = document.getElementById("filter-empty");
  const grid = document.getElementById("keyframes");
  if (!filter || !grid) {
    return;
  }

  const markers = new Map();
  for (const marker of document.querySelectorAll(".marker")) {
    markers.set(marker.dataset.keyframe, marker);
  }

  // The grid in order: chapter headings, each followed by its keyframe cards.
  const entries = Array.from(grid.children).map((element) => {
    const caption = element.querySelector(".caption");
    const timecode = element.querySelector(".meta .tc");
    const text = caption ? caption.textContent : "";
    return {
      element,
      isCard: element.classList.contains("card"),
      caption,
      text,
      haystack: (text + " " + (timecode ? timecode.textContent : "")).toLowerCase(),
    };
  });
  const cardCount = entries.filter((entry) => entry.isCard).length;

  // Rewrites a caption as text nodes with the matched words in <mark>.
  function highlight(entry, words) {
    const lower = entry.text.toLowerCase();
    // Lower-casing can change a text's length (a few scripts); then only filter.
    if (!entry.caption || lower.length !== entry.text.length) {
      return;
    }
    const ranges = [];
    for (const word of words) {
      let from = lower.indexOf(word);
      while (from !== -1) {
        ranges.push([from, from + word.length]);
        from = lower.indexOf(word, from + word.length);
      }
    }
    ranges.sort((a, b) => a[0] - b[0]);
    const parts = [];
    let position = 0;
    for (const [start, end] of ranges) {
      if (end <= position) {
        continue;
      }
      const begin = Math.max(start, position);
      if (begin > position) {
        parts.push(document.createTextNode(entry.text.slice(position, begin)));
      }
      const mark = document.createElement("mark");
      mark.textContent = entry.text.slice(begin, end);
      parts.push(mark);
      position = end;
    }
    if (position < entry.text.length) {
      parts.push(document.createTextNode(entry.text.slice(position)));
    }
    entry.caption.replaceChildren(...parts);
  }

  function apply() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    let chapter = null;
    let chapterHasMatch = false;
    const closeChapter = () => {
      if (chapter) {
        chapter.element.hidden = !chapterHasMatch;
      }
    };
    for (const entry of entries) {
      if (!entry.isCard) {
        closeChapter();
        chapter = entry;
        chapterHasMatch = false;
        continue;
      }
      const match = words.every((word) => entry.haystack.includes(word));
      entry.element.hidden = !match;
      highlight(entry, match ? words : []);
      const marker = markers.get(entry.element.dataset.keyframe);
      if (marker) {
        marker.classList.toggle("dim", !match);
      }
      if (match) {
        shown += 1;
        chapterHasMatch = true;
      }
    }
    closeChapter();
    const noun = cardCount === 1 ? "keyframe" : "keyframes";
    counter.textContent = words.length
      ? `${shown} of ${cardCount} ${noun}`
      : `${cardCount} ${noun}`;
    empty.hidden = shown > 0;
  }

  filter.addEventListener("input", apply);
  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement;
    if (event.key === "/" && !typing) {
      event.preventDefault();
      filter.focus();
      filter.select();
    } else if (event.key === "Escape" && event.target === filter) {
      filter.value = "";
      apply();
    }
  });

  // A link can carry a filter: report.html?q=robot
  const query = new URLSearchParams(window.location.search).get("q");
  if (query) {
    filter.value = query;
  }
  apply();

  // Pictures that the browser cannot decode are marked, and shown as a placeholder.
  window.addEventListener("load", () => {
    for (const image of document.querySelectorAll(".thumb img")) {
      const decoded = image.complete && image.naturalWidth > 0;
      image.parentElement.dataset.thumbnail = decoded ? "shown" : "broken";
    }
  });
})();
