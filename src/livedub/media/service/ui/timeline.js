// The live phrase timeline: one block per phrase (sequence), the source transcript and one line per language with
// its translation, status (dubbed, late, dropped, failed, original kept) and the STS time per stage.

const MAX_PHRASES = 300;

const STATUS_WORDS = {
  dubbed: "dubbed",
  late: "late",
  dropped: "dropped",
  failed: "failed",
  original: "original kept",
};

export class Timeline {
  constructor(root, languageNames = {}) {
    this.root = root;
    this.languageNames = languageNames;
    this.blocks = new Map(); // sequence -> element
    this.count = 0;
  }

  clear() {
    this.blocks.clear();
    this.count = 0;
    this.root.replaceChildren(placeholder());
  }

  add(phrase) {
    if (typeof phrase.sequence !== "number") return;
    if (!this.count) this.root.replaceChildren();
    this.count += 1;
    let block = this.blocks.get(phrase.sequence);
    if (!block) {
      block = newBlock(phrase);
      this.insert(phrase.sequence, block);
    }
    if (phrase.transcript) block.querySelector(".source").textContent = phrase.transcript;
    const language = phrase.language || "?";
    let line = block.querySelector(`.lang[data-language="${CSS.escape(language)}"]`);
    if (!line) {
      line = newLine(language, this.languageNames[language]);
      block.append(line);
    }
    fillLine(line, phrase);
  }

  // Newest first; a phrase that arrives out of order goes to its place.
  insert(sequence, block) {
    this.blocks.set(sequence, block);
    const later = [...this.blocks.keys()].filter((s) => s > sequence).sort((a, b) => a - b)[0];
    const before = later === undefined ? this.root.firstChild : this.blocks.get(later).nextSibling;
    this.root.insertBefore(block, before);
    while (this.blocks.size > MAX_PHRASES) {
      const oldest = Math.min(...this.blocks.keys());
      this.blocks.get(oldest).remove();
      this.blocks.delete(oldest);
    }
  }
}

function placeholder() {
  const p = document.createElement("p");
  p.className = "muted placeholder";
  p.textContent = "No phrase yet.";
  return p;
}

function newBlock(phrase) {
  const block = document.createElement("div");
  block.className = "phrase";
  block.dataset.sequence = String(phrase.sequence);
  const head = document.createElement("div");
  head.className = "head";
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = `#${phrase.sequence} ${clock(phrase.start_s)}–${clock(phrase.end_s)}`;
  const source = document.createElement("span");
  source.className = "source";
  head.append(when, source);
  block.append(head);
  return block;
}

function newLine(language, name) {
  const line = document.createElement("div");
  line.className = "lang";
  line.dataset.language = language;
  const code = document.createElement("span");
  code.className = "code";
  code.textContent = language;
  if (name) code.title = name;
  const status = document.createElement("span");
  status.className = "status";
  const text = document.createElement("span");
  text.className = "translation";
  const stages = document.createElement("span");
  stages.className = "stages";
  line.append(code, status, text, stages);
  return line;
}

function fillLine(line, phrase) {
  const status = line.querySelector(".status");
  status.className = `status ${phrase.status || ""}`;
  status.textContent = STATUS_WORDS[phrase.status] || phrase.status || "?";
  line.dataset.status = phrase.status || "";
  line.querySelector(".translation").textContent = phrase.translation || "";
  const stage = phrase.stage_ms || {};
  const parts = [];
  for (const [key, label] of [["asr", "ASR"], ["translation", "MT"], ["tts", "TTS"]]) {
    if (typeof stage[key] === "number") parts.push(`${label} ${Math.round(stage[key])} ms`);
  }
  if (typeof phrase.round_trip_ms === "number") parts.push(`round trip ${(phrase.round_trip_ms / 1000).toFixed(2)} s`);
  if (phrase.voice) parts.push(phrase.voice);
  // Which tiers made it, when not the best ones: the fast translator (Apertium) or the fast voice.
  if (phrase.translator === "fast") parts.push("fast translator");
  if (phrase.voice_tier === "fast") parts.push("fast voice");
  line.querySelector(".stages").textContent = parts.join(" · ");
}

function clock(seconds) {
  if (typeof seconds !== "number") return "?";
  const m = Math.floor(seconds / 60);
  const s = (seconds - m * 60).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}
