"""The operator's page in a real browser: headless Debian Chromium driven by Selenium, against real services.

nginx-rtmp, the STS service in echo mode (each dub is the phrase's own audio), the media-service (`livedub media`)
dubbing into es and fr, and the speech fixture published in real time.

Checks: the page loads without console errors and says how to publish while there is no stream; the published
stream appears in the list within a few seconds; the output player plays the real HLS presentation (currentTime
advances, audio decodes); switching the language switches the audio rendition that loads; phrase lines show their
translations (lines appended to the stream's phrases.jsonl, since the echo STS transcribes nothing); a control
without the token is refused, with it the worker stops and starts again with other target languages; a stream
without audio, one in a codec the worker refuses and a stopped STS are said in words. Screenshots go to
out/operator/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from livedub.mediaserver import NginxRtmpServer, RtmpServerConfig
from livedub.stack import FilePublisher, ManagedProcess, free_ports, http_get

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTEFACTS = ROOT / "out" / "operator"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "operator-test-token"
STREAM = "optest"
TARGETS = ["es", "fr"]

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], within_s: float, every_s: float = 0.25) -> T:
    deadline = time.monotonic() + within_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        time.sleep(every_s)


@dataclass
class OperatorStack:
    media_url: str
    rtmp_url: str
    hls_dir: Path
    logs: Path
    fixture: Path
    sts: ManagedProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorStack]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian chromium and chromium-driver")
    from livedub.fixture import ensure_fixture

    fixture = ensure_fixture().path
    tmp = tmp_path_factory.mktemp("operator")
    rtmp_port, stat_port, sts_port, media_port = free_ports(4)
    media_url = f"http://127.0.0.1:{media_port}"
    sts_env = {**os.environ, "STS_HOST": "127.0.0.1", "STS_PORT": str(sts_port), "STS_PIPELINE": "echo"}
    media_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "RTMP_BASE_URL": f"rtmp://127.0.0.1:{rtmp_port}/live",
        "MEDIA_SERVER_STAT_URL": f"http://127.0.0.1:{stat_port}/stat",
        "STS_SERVICE_URL": f"http://127.0.0.1:{sts_port}",
        "WORKER_SOURCE_LANGUAGE": "en",
        "WORKER_TARGET_LANGUAGES": ",".join(TARGETS),
        "MEDIA_HLS_DIR": str(tmp / "hls"),
        "MONITOR_TOKEN": TOKEN,
        "SEGMENT_POLICY": "fixed",
        "SEGMENT_DURATION_MS": "3000",
        "OUTPUT_DELAY_MS": "4000",
    }
    sts = ManagedProcess("sts", [sys.executable, "-m", "livedub.cli", "sts"], tmp / "sts.log", env=sts_env)
    media_argv = [sys.executable, "-m", "livedub.cli", "media", "--port", str(media_port)]
    media = ManagedProcess("media", media_argv, tmp / "media.log", env=media_env)
    nginx = NginxRtmpServer(
        RtmpServerConfig(rtmp_port, stat_port, bind="127.0.0.1", hooks_url=media_url, workdir=tmp / "nginx")
    )
    try:
        sts.start()
        media.start()
        nginx.start()
        for url in (f"http://127.0.0.1:{sts_port}/health", f"{media_url}/health"):
            wait_for(url, lambda url=url: http_get(url)[0] == 200, 60)  # type: ignore[misc]
        yield OperatorStack(media_url, nginx.rtmp_url, tmp / "hls", tmp, fixture, sts)
    finally:
        media.stop(timeout=20)
        sts.stop()
        nginx.stop()
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        for log in ("media.log", "sts.log"):
            if (tmp / log).exists():
                shutil.copy(tmp / log, ARTEFACTS / log)


@pytest.fixture(scope="module")
def browser(stack: OperatorStack) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1400,1500",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def publisher(stack: OperatorStack) -> Iterator[FilePublisher]:
    pub = FilePublisher(stack.fixture, f"{stack.rtmp_url}/{STREAM}/in", stack.logs / "publisher.log", loop=True)
    yield pub
    pub.stop()


def js(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def test_1_empty_list_then_a_published_stream_appears(
    stack: OperatorStack, browser: Any, publisher: FilePublisher
) -> None:
    browser.get(f"{stack.media_url}/ui/")
    empty = wait_for("the empty state", lambda: browser.find_element(By.ID, "empty").is_displayed(), 10)
    assert empty
    url = browser.find_element(By.ID, "publish-url").text
    assert url == f"{stack.rtmp_url}/<stream id>/in", url
    wait_for("STS ready", lambda: "ready" in browser.find_element(By.ID, "sts-status").text, 10)
    assert js(browser, "return typeof Hls") == "function"
    assert console_errors(browser) == []

    publisher.start()
    started = time.monotonic()
    wait_for(
        "the stream in the list",
        lambda: browser.find_elements(By.CSS_SELECTOR, f'tr.stream[data-stream-id="{STREAM}"]'),
        20,
        every_s=0.1,
    )
    appeared_s = time.monotonic() - started
    print(f"stream listed {appeared_s:.1f} s after the publisher started")
    assert appeared_s < 10
    wait_for("state running", lambda: row_text(browser, "state") == "running", 20)
    assert wait_for("the languages", lambda: "en → es, fr" in row_text(browser, "languages"), 10)
    assert not browser.find_element(By.ID, "empty").is_displayed()
    assert console_errors(browser) == []


def row_text(driver: Any, column: str) -> str:
    """The cell's text, or "" while the page re-renders the row (the list is redrawn on each refresh: a cell found
    just before a redraw is stale by the time its text is read; the caller's wait_for asks again)."""
    columns = ["stream", "state", "languages", "lag", "dubbed", "tiers", "dropped", "sts", "notes"]
    try:
        cells = driver.find_elements(By.CSS_SELECTOR, f'tr.stream[data-stream-id="{STREAM}"] td')
        return str(cells[columns.index(column)].text) if cells else ""
    except StaleElementReferenceException:
        return ""


def player_state(driver: Any) -> dict[str, Any]:
    return js(  # type: ignore[no-any-return]
        driver,
        """const p = window.livedub.players.output; if (!p || !p.hls) return null;
        const v = p.video;
        return {time: v.currentTime, paused: v.paused, audioBytes: v.webkitAudioDecodedByteCount,
                videoBytes: v.webkitVideoDecodedByteCount, track: p.hls.audioTrack,
                tracks: p.hls.audioTracks.map(t => ({lang: t.lang, name: t.name, url: t.url})),
                subtitles: p.hls.subtitleTracks.map(t => t.lang),
                subtitle: (p.hls.subtitleTracks[p.hls.subtitleTrack] || {}).lang || null,
                loads: p.audioLoads.slice()};""",
    )


def test_2_output_player_plays_and_the_language_switch_changes_the_audio(stack: OperatorStack, browser: Any) -> None:
    browser.find_element(By.CSS_SELECTOR, f'tr.stream[data-stream-id="{STREAM}"]').click()
    wait_for("the stream view", lambda: browser.find_element(By.ID, "stream-view").is_displayed(), 5)
    # The worker writes its first HLS segments after the delay line (OUTPUT_DELAY_MS) and a segment.
    first = wait_for(
        "the output player", lambda: (s := player_state(browser)) and s["time"] > 0 and s["audioBytes"] > 0 and s, 60
    )
    # Playback advances more than 2 s within 4 s, and audio keeps decoding: asked until it does (the last ask is at
    # most 4 s after `first`: the deadline is one poll interval earlier).
    later = wait_for(
        "playback advancing",
        lambda: (
            (s := player_state(browser))["time"] > first["time"] + 2 and s["audioBytes"] > first["audioBytes"] and s
        ),
        4 - 0.25,
        every_s=0.25,
    )
    print(f"player: {first['time']:.2f} s -> {later['time']:.2f} s; audio bytes {later['audioBytes']}")
    assert later["time"] > first["time"] + 2, (first, later)
    assert later["audioBytes"] > first["audioBytes"] > 0, (first, later)
    assert later["videoBytes"] > 0
    langs = [t["lang"] for t in later["tracks"]]
    assert langs == ["en", *TARGETS], later["tracks"]
    assert later["track"] == 1, "the output starts on the first target's dub"
    assert set(later["subtitles"]) >= {"en", *TARGETS}
    assert later["subtitle"] == "es"

    Select(browser.find_element(By.ID, "audio-select")).select_by_value("2")  # fr
    switched = wait_for(
        "audio segments of the fr rendition",
        lambda: (s := player_state(browser))["track"] == 2 and any(load["track"] == 2 for load in s["loads"]) and s,
        20,
    )
    fr_dir = switched["tracks"][2]["url"].rsplit("/", 1)[0]
    fr_loads = [load["url"] for load in switched["loads"] if load["track"] == 2]
    assert all(url.startswith(fr_dir) for url in fr_loads)
    assert fr_loads[-1] not in {load["url"] for load in switched["loads"] if load["track"] == 1}
    assert switched["subtitle"] == "fr", "captions follow the language heard"
    before = switched["audioBytes"]
    wait_for("audio keeps decoding after the switch", lambda: player_state(browser)["audioBytes"] > before, 15)

    # The input's player (on demand) plays the original audio.
    browser.find_element(By.ID, "input-load").click()
    script = """const p = window.livedub.players.input; if (!p || !p.hls) return null;
        const t = p.hls.audioTracks[p.hls.audioTrack] || {};
        return {time: p.video.currentTime, lang: t.lang, name: t.name,
                audioBytes: p.video.webkitAudioDecodedByteCount};"""
    heard = wait_for("the input playing", lambda: (s := js(browser, script)) and s["time"] > 1 and s, 30)
    assert heard["lang"] == "en" and heard["name"].startswith("Original") and heard["audioBytes"] > 0, heard


def test_3_phrase_lines_show_their_translations(stack: OperatorStack, browser: Any) -> None:
    # The echo STS transcribes nothing: phrases with text are appended to the log the endpoint follows.
    log = stack.hls_dir / STREAM / "phrases.jsonl"
    wait_for("the worker's phrase log", log.exists, 30)
    lines = [
        {
            "sequence": 9000 + i,
            "language": lang,
            "start_s": 100.0 + 3 * i,
            "end_s": 102.5 + 3 * i,
            "status": status,
            "transcript": f"Phrase number {i} from the operator test.",
            "translation": f"[{lang}] traduction {i}",
            "voice": "espeak-ng:test",
            "stage_ms": {"asr": 310.0, "translation": 120.0, "tts": 450.0},
            "round_trip_ms": 1020.0,
        }
        for i, status in enumerate(["dubbed", "late"])
        for lang in TARGETS
    ]
    with log.open("a") as file:
        file.writelines(json.dumps(line) + "\n" for line in lines)

    def shown() -> list[dict[str, str]] | None:
        found = js(
            browser,
            """return [...document.querySelectorAll('#timeline .phrase')].flatMap(b =>
                [...b.querySelectorAll('.lang')].map(l => ({seq: b.dataset.sequence,
                  source: b.querySelector('.source').textContent, lang: l.dataset.language,
                  status: l.dataset.status, text: l.querySelector('.translation').textContent,
                  stages: l.querySelector('.stages').textContent})));""",
        )
        ours = [row for row in found if row["seq"].startswith("900")]
        return ours if len(ours) == len(lines) else None

    rows = wait_for("the phrase lines", shown, 15)
    for line in lines:
        row = next(r for r in rows if r["seq"] == str(line["sequence"]) and r["lang"] == line["language"])
        assert row["source"] == line["transcript"]
        assert row["text"] == line["translation"] and row["status"] == line["status"]
        assert "ASR 310 ms" in row["stages"] and "TTS 450 ms" in row["stages"]
    worker_lines = js(browser, "return window.livedub.phrases.filter(p => p.sequence < 9000).length")
    print(f"phrase lines from the worker itself: {worker_lines}")

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTEFACTS / "stream-view.png"))


def test_4_controls_need_the_token(stack: OperatorStack, browser: Any) -> None:
    message = browser.find_element(By.ID, "control-msg")
    browser.find_element(By.ID, "ctl-stop").click()
    wait_for("the refusal", lambda: "Refused (HTTP 401)" in message.text, 5)
    assert "MONITOR_TOKEN" in message.text
    time.sleep(1.5)
    assert browser.find_element(By.ID, "sv-state").text == "running"

    token = browser.find_element(By.ID, "token")
    token.send_keys(TOKEN)
    js(browser, "document.getElementById('token').dispatchEvent(new Event('change'))")
    browser.find_element(By.ID, "ctl-stop").click()
    wait_for("the stop", lambda: message.text == "Worker stopping.", 5)
    wait_for("state stopped", lambda: browser.find_element(By.ID, "sv-state").text == "stopped", 40)

    # The next start dubs into es and it instead of es and fr.
    for code, wanted in (("fr", False), ("it", True)):
        box = browser.find_element(By.CSS_SELECTOR, f'#ctl-langs input[value="{code}"]')
        if box.is_selected() != wanted:
            box.click()
    browser.find_element(By.ID, "ctl-config").click()
    wait_for("the languages set", lambda: "apply at the next start" in message.text, 5)
    wait_for("the next start shown", lambda: "next start: es, it" in browser.find_element(By.ID, "sv-langs").text, 5)
    browser.find_element(By.ID, "ctl-start").click()
    wait_for("the start", lambda: "worker started" in message.text, 10)
    wait_for("state running again", lambda: browser.find_element(By.ID, "sv-state").text == "running", 30)
    wait_for("the new languages", lambda: "en → es, it" in browser.find_element(By.ID, "sv-langs").text, 10)
    # The page follows the new worker: its presentation has the new renditions and plays.
    tracks = ["en", "es", "it"]
    first = wait_for(
        "the new presentation playing",
        lambda: (s := player_state(browser)) and [t["lang"] for t in s["tracks"]] == tracks and s["time"] > 0 and s,
        60,
    )
    wait_for("playback advancing", lambda: player_state(browser)["time"] > first["time"] + 1, 15)
    # ... and its own phrase log: lines in es and it, none of the last run's (fr, or the test's 9000s).
    phrases = "return window.livedub.phrases.map(p => [p.sequence, p.language])"
    wait_for("the new run's phrases", lambda: any(lang == "it" for _, lang in js(browser, phrases)), 30)
    languages = {lang for _, lang in js(browser, phrases)}
    assert languages == {"es", "it"} and all(seq < 9000 for seq, _ in js(browser, phrases))
    shown = {e.get_attribute("data-language") for e in browser.find_elements(By.CSS_SELECTOR, "#timeline .lang")}
    assert shown == {"es", "it"}
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTEFACTS / "stream-view-after-restart.png"))


def unhappy_inputs(directory: Path) -> dict[str, Path]:
    """A stream without audio (H.264 only) and one in a codec the worker refuses (Sorenson H.263 in FLV)."""
    from livedub.analysis import PatternSpec, write_pattern

    h263 = directory / "h263.flv"
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:d=30", "-f", "lavfi", "-i", "sine=d=30"]
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *lavfi, "-c:v", "flv1", "-c:a", "aac", str(h263)],
        check=True,
    )
    return {
        "noaudio": write_pattern(directory / "noaudio.flv", PatternSpec(duration_s=30.0, with_audio=False)),
        "h263": h263,
    }


def test_5_unhappy_states_are_shown(stack: OperatorStack, browser: Any) -> None:
    publishers = [
        FilePublisher(path, f"{stack.rtmp_url}/{name}/in", stack.logs / f"{name}.log").start()
        for name, path in unhappy_inputs(stack.logs).items()
    ]
    try:
        browser.get(f"{stack.media_url}/ui/#/")

        def note(stream_id: str, code: str) -> str | None:
            found = js(browser, "return (window.livedub.overview || {streams: []}).streams")
            row = next((r for r in found if r["stream_id"] == stream_id), None)
            problem = next((p for p in row["problems"] if p["code"] == code), None) if row else None
            cells = browser.find_elements(By.CSS_SELECTOR, f'tr.stream[data-stream-id="{stream_id}"] td')
            return problem["message"] if problem and cells and problem["message"] in cells[-1].text else None

        assert "no audio" in wait_for("the no-audio note", lambda: note("noaudio", "no_audio"), 30)
        assert "not supported" in wait_for("the codec note", lambda: note("h263", "unsupported_codec"), 30)

        stack.sts.stop()  # STS goes down: the page says so, and since when
        banner = browser.find_element(By.ID, "sts-banner")
        wait_for("the STS banner", lambda: banner.is_displayed() and "STS is down since" in banner.text, 15)
        assert browser.find_element(By.ID, "sts-status").text == "STS down"
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTEFACTS / "stream-list-unhappy.png"))
    finally:
        for publisher in publishers:
            publisher.stop()
