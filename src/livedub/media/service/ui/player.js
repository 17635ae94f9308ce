// An HLS player (hls.js) with audio-language and captions switches. The page keeps its players in
// window.livedub.players so that an operator (or a test) can look at hls.audioTrack and the video element.

import { token } from "./api.js";

export class Player {
  // options: {audio: "original" | "dub" (which rendition to start with), audioSelect, subsSelect, note}
  constructor(video, url, options = {}) {
    this.video = video;
    this.url = url;
    this.options = options;
    this.hls = null;
    this.retry = null;
    this.audioLoads = []; // the last audio segments loaded: {track, url} (which rendition is really heard)
  }

  start() {
    const Hls = window.Hls;
    if (!Hls || !Hls.isSupported()) {
      this.say("This browser cannot play HLS with hls.js (or /ui/vendor/hls.min.js is missing).");
      return this;
    }
    const hls = new Hls({
      xhrSetup: (xhr) => {
        const t = token();
        if (t) xhr.setRequestHeader("Authorization", `Bearer ${t}`);
      },
      liveSyncDurationCount: 2,
      manifestLoadingMaxRetry: 2,
      renderTextTracksNatively: true,
    });
    this.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      this.say("");
      this.play();
    });
    hls.on(Hls.Events.AUDIO_TRACKS_UPDATED, () => this.audioTracksChanged());
    hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, () => this.showAudio());
    hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, () => this.subtitleTracksChanged());
    hls.on(Hls.Events.ERROR, (_, data) => this.error(data));
    hls.on(Hls.Events.FRAG_LOADED, (_, data) => {
      if (data.frag.type !== "audio") return;
      this.audioLoads.push({ track: data.frag.level, url: data.frag.url });
      if (this.audioLoads.length > 30) this.audioLoads.shift();
    });
    hls.loadSource(this.url);
    hls.attachMedia(this.video);
    this.wireSelects();
    return this;
  }

  destroy() {
    clearTimeout(this.retry);
    if (this.hls) this.hls.destroy();
    this.hls = null;
  }

  play() {
    this.video.play().catch(() => {
      // Browsers refuse sound before a click: play muted and say so.
      this.video.muted = true;
      this.video.play().catch(() => {});
      this.say("Muted by the browser: unmute in the player.");
    });
  }

  say(text) {
    if (this.options.note) this.options.note.textContent = text;
  }

  error(data) {
    if (!data.fatal) return;
    const Hls = window.Hls;
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
      this.hls.recoverMediaError();
      return;
    }
    // The presentation may not exist yet (the worker writes its first segments) or has ended: try again.
    this.say(`Waiting for the HLS presentation (${data.details}).`);
    const url = this.url;
    this.destroy();
    this.retry = setTimeout(() => {
      this.url = url;
      this.start();
    }, 3000);
  }

  audioTracksChanged() {
    const tracks = this.hls.audioTracks;
    const select = this.options.audioSelect;
    if (select) {
      select.replaceChildren(
        ...tracks.map((track, index) => option(index, `${track.name || track.lang} (${track.lang || "?"})`)),
      );
    }
    const original = Math.max(0, tracks.findIndex((t) => t.default || /^original/i.test(t.name || "")));
    const dubbed = tracks.findIndex((_, index) => index !== original);
    const wanted = this.options.audio === "dub" && dubbed >= 0 ? dubbed : original;
    if (tracks.length && this.hls.audioTrack !== wanted) this.hls.audioTrack = wanted;
    if (tracks.length) this.wantedAudio = wanted;
    this.captionsFollow(this.wantedAudio);
    this.showAudio();
  }

  showAudio() {
    const select = this.options.audioSelect;
    if (select && this.hls) select.value = String(this.hls.audioTrack);
  }

  subtitleTracksChanged() {
    const tracks = this.hls.subtitleTracks;
    const select = this.options.subsSelect;
    if (!select) return;
    select.replaceChildren(
      option(-1, "off"),
      ...tracks.map((track, index) => option(index, `${track.name || track.lang} (${track.lang || "?"})`)),
    );
    select.value = String(this.hls.subtitleTrack);
    // hls.js picks its default track right after this event: choose ours once it has.
    setTimeout(() => this.hls && this.captionsFollow(this.wantedAudio), 0);
  }

  // On the output, captions start in the language heard (the operator's own choice stays).
  captionsFollow(audioIndex) {
    const select = this.options.subsSelect;
    if (!select || select.dataset.chosen === "yes" || this.options.audio !== "dub" || audioIndex === undefined) return;
    const lang = (this.hls.audioTracks[audioIndex] || {}).lang;
    const match = this.hls.subtitleTracks.findIndex((t) => t.lang === lang);
    if (match >= 0 && this.hls.subtitleTrack !== match) this.setSubs(match);
  }

  // The operator's audio choice; captions follow it unless the operator chose them.
  setAudio(index) {
    this.hls.audioTrack = index;
    this.wantedAudio = index;
    this.captionsFollow(index);
  }

  setSubs(index) {
    this.hls.subtitleTrack = index;
    this.hls.subtitleDisplay = index >= 0;
    if (this.options.subsSelect) this.options.subsSelect.value = String(index);
  }

  wireSelects() {
    const { audioSelect, subsSelect } = this.options;
    if (audioSelect) audioSelect.onchange = () => this.setAudio(Number(audioSelect.value));
    if (subsSelect) {
      subsSelect.onchange = () => {
        subsSelect.dataset.chosen = "yes";
        this.setSubs(Number(subsSelect.value));
      };
    }
  }
}

function option(value, text) {
  const element = document.createElement("option");
  element.value = String(value);
  element.textContent = text;
  return element;
}
