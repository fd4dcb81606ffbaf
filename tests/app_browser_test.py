"""The web app (facegen_jax/inference/app.py) in a real browser: Debian's chromium and
chromium-driver, headless, driven by Selenium.

The test starts `experiments/app.py` with the shipped weights on 127.0.0.1 at a free port, uploads
the bundled photo and a clip (the first frames of a bundled clip, its audio kept, so a request
takes seconds), runs them, waits for the result and checks the returned video's frame count, frame
rate and audio against the clip's; saves a screenshot; uploads a corrupt clip and waits for the
error message in the page; runs a third, good request; and stops the browser and the app.

The screenshot goes to $FACEGEN_APP_SCREENSHOT (the README's docs/app.png is made with
`FACEGEN_APP_SCREENSHOT=docs/app.png pytest tests/app_browser_test.py`), else into the test's
temporary folder.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from facegen_jax.io import video as video_io
from tests.conftest import REPO_ROOT

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WEIGHTS = REPO_ROOT / "weights" / "demo_128"
PHOTO = REPO_ROOT / "sample_data" / "barack_obama__face_recognition__obama.jpg"
CLIP = REPO_ROOT / "sample_data" / "lp_d12_man__liveportrait__d12.mp4"  # 25 fps, with audio
FRAMES = 8
STARTUP_S, REQUEST_S = 300, 300
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000")


def _browser_missing() -> str:
  missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
  try:
    import selenium  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    missing.append("the selenium package (pip install -e .[app])")
  return ", ".join(missing)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
  """The app, started on 127.0.0.1 at a free port; stopped (its whole process group) at the end."""
  missing = _browser_missing()
  if missing:
    if os.environ.get("CI"):  # .ci/run installs chromium and chromium-driver: missing is an error there
      pytest.fail(f"missing for the browser test: {missing}")
    pytest.skip(f"missing for the browser test: {missing} (apt-get install -y chromium chromium-driver)")
  port = _free_port()
  log = open(tmp_path_factory.mktemp("app") / "app.log", "w+", encoding="utf-8")  # pylint: disable=consider-using-with
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "experiments" / "app.py"), f"--checkpoint={WEIGHTS}",
                           f"--port={port}"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                          start_new_session=True)
  url = f"http://127.0.0.1:{port}/"
  try:
    deadline = time.monotonic() + STARTUP_S
    while True:
      assert proc.poll() is None, f"the app exited ({proc.returncode}):\n{_tail(log)}"
      try:
        with urllib.request.urlopen(url, timeout=5) as response:
          if response.status == 200:
            break
      except OSError:
        pass
      assert time.monotonic() < deadline, f"the app did not answer within {STARTUP_S} s:\n{_tail(log)}"
      time.sleep(1)
    yield url
  finally:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
    log.close()


def _tail(log) -> str:
  log.flush()
  log.seek(0)
  return log.read()[-3000:]


@pytest.fixture()
def browser():
  from selenium import webdriver  # pylint: disable=import-outside-toplevel
  from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
  profile = tempfile.mkdtemp(prefix="facegen_chromium_")
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}",):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  try:
    yield driver
  finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _upload(driver, elem_id: str, path) -> None:
  """Puts `path` into the file box `elem_id` (clearing what it holds)."""
  from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
  box = driver.find_element(By.ID, elem_id)
  for clear in box.find_elements(By.CSS_SELECTOR, "button[aria-label='Clear']"):
    clear.click()
  box.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))
  _wait(driver, lambda d: d.find_element(By.ID, elem_id).find_elements(By.CSS_SELECTOR, "td.filename"), 60,
        f"the upload of {path}")


def _wait(driver, condition, seconds, what):
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=import-outside-toplevel
  return WebDriverWait(driver, seconds, poll_frequency=0.5).until(condition, f"waited {seconds} s for {what}")


def _result_video(driver, previous=None) -> str:
  """Clicks Reenact and waits for a new result video; returns its URL."""
  from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
  driver.find_element(By.ID, "run").click()

  def new_video(d):
    found = d.find_element(By.ID, "result_video").find_elements(By.TAG_NAME, "video")
    src = found[0].get_attribute("src") if found else None
    return src if src and src != previous else None

  return _wait(driver, new_video, REQUEST_S, "the result video")


def _check_video(url: str, folder, clip: str) -> None:
  path = os.path.join(folder, f"result_{time.monotonic_ns()}.mp4")
  with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as f:
    f.write(response.read())
  info, expected = video_io.probe(path), video_io.probe(clip)
  assert info.num_frames == expected.num_frames == FRAMES, (info, expected)
  assert sum(1 for _ in video_io.read_frames(path)) == FRAMES
  assert info.fps == expected.fps and info.has_audio, info


def test_upload_run_error_and_run_again(app_url, browser, tmp_path):
  from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
  clip = str(tmp_path / "d12_short.mp4")
  video_io.write_video(clip, video_io.read_frames(str(CLIP), FRAMES), video_io.probe(str(CLIP)).fps,
                       audio_from=str(CLIP))
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))  # an mp4 header, then noise

  browser.get(app_url)
  _wait(browser, lambda d: d.find_elements(By.ID, "run"), 60, "the page")
  _upload(browser, "source", PHOTO)
  _upload(browser, "driving", clip)
  first = _result_video(browser)
  _check_video(first, tmp_path, clip)
  status = browser.find_element(By.ID, "status").text
  assert f"{FRAMES} frames at 25 fps" in status and "audio kept" in status, status
  grid = browser.find_element(By.ID, "grid").find_elements(By.CSS_SELECTOR, "td.filename")
  assert grid and grid[0].get_attribute("aria-label") == "grid.png"
  screenshot = os.environ.get("FACEGEN_APP_SCREENSHOT") or str(tmp_path / "app.png")
  os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
  assert browser.save_screenshot(screenshot)

  # A corrupt clip: the reason is shown in the page, naming the file.
  _upload(browser, "driving", corrupt)
  browser.find_element(By.ID, "run").click()
  message = _wait(browser, lambda d: [e for e in d.find_elements(By.XPATH, "//*[contains(text(), 'corrupt.mp4')]")
                                      if e.is_displayed() and e.tag_name != "span"], REQUEST_S, "the error message")
  assert "cannot read video corrupt.mp4" in message[0].text, message[0].text

  # The app still serves: the good clip again, side by side this time (a new video: the page
  # serves a file by its content), makes a new result.
  _upload(browser, "driving", clip)
  browser.find_element(By.XPATH, "//label[contains(., 'Side by side')]//input").click()
  third = _result_video(browser, previous=first)
  _check_video(third, tmp_path, clip)


def _audio_only(path: str) -> None:
  """An .mp4 holding only the bundled clip's audio track: a video without frames."""
  import av  # pylint: disable=import-outside-toplevel
  with av.open(str(CLIP)) as src, av.open(path, "w") as out:
    audio = out.add_stream_from_template(src.streams.audio[0])
    for packet in src.demux(src.streams.audio[0]):
      if packet.dts is not None:
        packet.stream = audio
        out.mux(packet)


def test_bad_inputs_are_messages_and_the_next_request_is_served(tmp_path):
  """The app's request function (no browser): each bad input of the issue raises gradio.Error with
  a reason naming the uploaded file's own name; a good request after them succeeds."""
  gr = pytest.importorskip("gradio") if not os.environ.get("CI") else __import__("gradio")
  import numpy as np  # pylint: disable=import-outside-toplevel
  import zlib  # pylint: disable=import-outside-toplevel
  import struct  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from facegen_jax.inference import app  # pylint: disable=import-outside-toplevel

  Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "blank.png")
  data = PHOTO.read_bytes()
  (tmp_path / "truncated.jpg").write_bytes(data[:len(data) // 3])

  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)

  # A small file claiming 40000 x 40000 pixels: too large to decode safely.
  (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
                                      + chunk(b"IDAT", zlib.compress(b"\x00" * 40001)) + chunk(b"IEND", b""))
  _audio_only(str(tmp_path / "no_frames.mp4"))
  driving_photo = str(REPO_ROOT / "sample_data" / "lp_d18_d19_man__liveportrait__d19.jpg")
  models = app.Models([str(WEIGHTS)])
  bad = {  # (source, driving) -> what the message says
      (tmp_path / "blank.png", driving_photo): "no face found",
      (tmp_path / "truncated.jpg", driving_photo): "truncated.jpg",
      (tmp_path / "huge.png", driving_photo): "huge.png",
      (PHOTO, tmp_path / "no_frames.mp4"): "no_frames.mp4",
      (PHOTO, tmp_path / "notes.txt"): "unknown extension",
  }
  for (source, driving), expected in bad.items():
    with pytest.raises(gr.Error) as caught:
      app.reenact_request(models, str(source), str(driving), "demo_128", "relative", False, True, False, False, 0)
    assert expected in caught.value.message and str(tmp_path) not in caught.value.message, caught.value.message
  video, image, grid, status = app.reenact_request(models, str(PHOTO), driving_photo, "demo_128", "relative",
                                                   False, True, False, False, 0)
  assert video is None and grid is None and status
  assert Image.open(image).size == Image.open(PHOTO).size
