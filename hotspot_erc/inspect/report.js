// The report's per-dialogue view, drawn from the JSON embedded in the page (no network).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var view = data.dialogues;
  var select = document.getElementById("dialogue-select");
  var colourBy = document.getElementById("colour-by");
  var box = document.getElementById("dialogue-view");
  var rangeNote = document.getElementById("colour-range");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function shade(v, range) {
    var lo = range[0], hi = range[1];
    var t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    t = Math.max(0, Math.min(1, t));
    return "rgba(214, 39, 40, " + t.toFixed(3) + ")";
  }

  function fmt(v, digits) { return v === null || v === undefined ? "n/a" : Number(v).toFixed(digits); }

  function valuesFor(md, key) { return key === "gate" && md.gate ? md.gate : md.score; }

  function rangeFor(m, key, md) {
    var r = view.ranges[m] || {};
    return key === "gate" && md.gate && r.gate ? r.gate : r.score;
  }

  function frameTitle(md, i) {
    var t = "frame " + i + ": score " + fmt(md.score[i], 3);
    if (md.gate) { t += ", gate " + fmt(md.gate[i], 4); }
    if (md.window[i]) { t += ", in a hotspot window"; }
    if (md.truth && md.truth[i] === 1) { t += ", evidence burst"; }
    if (md.truth && md.truth[i] === 2) { t += ", decoy/distractor burst"; }
    return t;
  }

  function modalityRow(m, md, key) {
    var row = el("div", "mod");
    row.appendChild(el("span", "modname", m));
    if (!md.score.length) {
      row.appendChild(el("span", "missing", "no frames"));
      return row;
    }
    var vals = valuesFor(md, key), range = rangeFor(m, key, md);
    var holder = el("span", md.words ? "words" : "strip");
    for (var i = 0; i < vals.length; i++) {
      var cell = el("span", md.words ? "word" : "cell", md.words ? md.words[i] : undefined);
      cell.style.backgroundColor = shade(vals[i], range);
      if (md.window[i]) { cell.classList.add("win"); }
      if (md.truth && md.truth[i] === 1) { cell.classList.add("ev"); }
      if (md.truth && md.truth[i] === 2) { cell.classList.add("decoy"); }
      cell.title = frameTitle(md, i);
      holder.appendChild(cell);
    }
    row.appendChild(holder);
    return row;
  }

  function linkText(l) {
    var parts = l.pair.split("->");
    var q = parts[1] + " frame " + l.query + (l.query_word ? " (\u201c" + l.query_word + "\u201d)" : "");
    var s = l.sources.map(function (x) {
      return parts[0] + " " + x[0] + (x[2] ? " (\u201c" + x[2] + "\u201d)" : "") + " " + fmt(x[1], 2);
    });
    return l.pair + ": " + q + " \u2192 " + s.join(", ");
  }

  function utterance(u, key) {
    var wrong = u.true !== null && u.true !== u.pred;
    var card = el("div", "utt" + (wrong ? " wrong" : ""));
    card.setAttribute("data-utterance", u.id);
    var head = el("div", "utthead");
    head.appendChild(el("span", "turn", "turn " + u.turn));
    head.appendChild(el("span", "speaker", "speaker " + u.speaker));
    head.appendChild(el("span", "true", "true " + (u.true === null ? "(unlabelled)" : u.true)));
    head.appendChild(el("span", "pred", "predicted " + u.pred + " (" + fmt(u.confidence, 2) + ")"));
    card.appendChild(head);
    Object.keys(u.modalities).forEach(function (m) { card.appendChild(modalityRow(m, u.modalities[m], key)); });
    if (u.links.length) {
      var det = el("details", "links");
      det.appendChild(el("summary", null, "strongest MoA links (" + u.links.length + ")"));
      var ul = el("ul");
      u.links.forEach(function (l) { ul.appendChild(el("li", null, linkText(l))); });
      det.appendChild(ul);
      card.appendChild(det);
    }
    if (u.neighbours.length) {
      var nb = el("details", "neighbours");
      nb.appendChild(el("summary", null, "graph neighbours (" + u.neighbours.length + " utterances)"));
      var list = el("ul");
      u.neighbours.forEach(function (n) {
        list.appendChild(el("li", null, "turn " + n.turn + ": " + n.relations.join("; ")));
      });
      nb.appendChild(list);
      card.appendChild(nb);
    }
    return card;
  }

  function render() {
    box.textContent = "";
    if (!view.dialogues.length) {
      box.appendChild(el("p", "note", "The split has no dialogue to show."));
      return;
    }
    var d = view.dialogues[Number(select.value) || 0];
    var key = colourBy.value;
    box.setAttribute("data-dialogue", d.id);
    box.appendChild(el("h3", null, "dialogue " + d.id + " (" + d.utterances.length + " turns)"));
    var notes = Object.keys(view.ranges).map(function (m) {
      var r = view.ranges[m][key] || view.ranges[m].score;
      return m + ": " + fmt(r[0], key === "gate" ? 4 : 2) + " (light) \u2013 " + fmt(r[1], key === "gate" ? 4 : 2) +
        " (dark)";
    });
    rangeNote.textContent = notes.join("; ");
    d.utterances.forEach(function (u) { box.appendChild(utterance(u, key)); });
  }

  view.dialogues.forEach(function (d, i) {
    var o = document.createElement("option");
    o.value = String(i);
    o.textContent = d.id + " (" + d.utterances.length + " turns)";
    select.appendChild(o);
  });
  select.addEventListener("change", render);
  colourBy.addEventListener("change", render);
  render();
})();
