"""Measure the demo as a user meets it, in headless Chromium, and print the figures.

    python -m demo.measure [--model DIR ...] [--clip a.wav] [--runs 5]

1. ``wavssl demo`` started as a command: seconds until the page answers.
2. The Transcribe tab: seconds from clicking Transcribe to the transcript of ``--clip`` (default: a
   10 s stretch of the example clips) in the page, median of ``--runs`` fresh page loads.
3. The Live tab, Chromium's fake microphone playing the clip: seconds from pressing Record to the
   first partial text in the page.

Needs Debian's ``chromium`` and the ``playwright`` package (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from wavssl_onnx.audio import read_audio

from .app import DEFAULT_EXAMPLES, read_examples
from .screenshot import ARGS, CHROMIUM

RATE = 16000


def default_clip(out: Path, seconds: float = 10.0) -> Path:
    """The example clips joined (0.2 s apart) and cut to ``seconds``, as a 16 kHz WAV."""
    clips, _ = read_examples(DEFAULT_EXAMPLES)
    if not clips:
        raise SystemExit("no example clips in demo/examples/: pass --clip")
    pieces = [np.concatenate([read_audio(p, RATE), np.zeros(RATE // 5, np.float32)]) for p, _ in clips]
    wave = np.concatenate(pieces * int(np.ceil(seconds * RATE / sum(map(len, pieces)))))[: int(seconds * RATE)]
    sf.write(out, wave, RATE, subtype="PCM_16")
    return out


def start_demo(models: list[Path], port: int) -> tuple[subprocess.Popen[bytes], float]:
    """``wavssl demo`` as a subprocess, and the seconds until its page answered."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "wavssl", "demo", "--port", str(port),
           *[arg for m in models for arg in ("--model", str(m))]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return proc, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"wavssl demo exited with status {proc.returncode}") from None
            time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, action="append", default=[], help="model directory (default: demo/models/)")
    p.add_argument("--clip", type=Path, help="audio to transcribe and to speak into the fake microphone")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--port", type=int, default=7862)
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        clip = a.clip or default_clip(Path(tmp) / "clip.wav")
        wave = read_audio(clip, RATE)
        mic = Path(tmp) / "mic48k.wav"  # 16-bit 48 kHz, then silence: Chromium loops the file
        sf.write(mic, np.concatenate([soxr.resample(wave, RATE, 48000), np.zeros(3 * 48000, np.float32)]), 48000,
                 subtype="PCM_16")
        proc, startup = start_demo(a.model, a.port)
        url = f"http://127.0.0.1:{a.port}/"
        print(f"wavssl demo -> page answers: {startup:.2f} s")
        args = ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                       f"--use-file-for-fake-audio-capture={mic}"]
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch_persistent_context(str(Path(tmp) / "profile"), executable_path=CHROMIUM,
                                                                headless=True, args=args,
                                                                viewport={"width": 1400, "height": 1000})
                page = browser.new_page()
                times = []
                for _ in range(a.runs):
                    page.goto(url)
                    page.wait_for_selector("#asr-run")
                    page.set_input_files("#asr-audio input[type=file]", str(clip))
                    page.wait_for_selector("#asr-audio audio", state="attached")
                    t0 = time.perf_counter()
                    page.click("#asr-run")
                    page.wait_for_function("document.querySelector('#transcript textarea').value.length > 0",
                                           polling=10)
                    times.append(time.perf_counter() - t0)
                    page.wait_for_selector("#posteriorgram img")
                print(f"{len(wave) / RATE:.1f} s clip, click -> transcript in the page: "
                      f"{' '.join(f'{x:.2f}' for x in times)} s (median {statistics.median(times):.2f} s)")
                print("  server:", page.inner_text("#asr-stats").replace("\n", " | ").replace("\t", " "))
                page.get_by_role("tab", name="Live").click()
                t0 = time.perf_counter()
                page.click("#live-mic .record-button")
                page.wait_for_function("document.querySelector('#live-partial textarea').value.length > 0",
                                       polling=10, timeout=60_000)
                print(f"Record -> first live partial in the page: {time.perf_counter() - t0:.2f} s")
                page.wait_for_timeout(2000)
                page.click("#live-mic .stop-button")
                page.wait_for_selector("#live-recording a[download]")
                print("  server:", page.inner_text("#live-summary").replace("\n", " "))
                browser.close()
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
