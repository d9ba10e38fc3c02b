"""The dashboard in headless Chromium against a running api and workers.

scripts/browser-test.sh starts them, makes a virtualenv with the pinned
playwright from requirements.txt (its wheel brings its own driver, so no
Node.js is needed) and runs this file with `python -m unittest`.

The tests run in order (unittest sorts them by name, hence the numbers) on
one page, as a user would click through it. Every wait is on DOM state
(locators, wait_for_function), never a fixed sleep.

Environment: DASHBOARD_URL, DASHBOARD_API_KEY (set when the api runs with
API_KEYS), CHROMIUM_PATH (/usr/bin/chromium), SCREENSHOT_PATH.
"""

import os
import re
import unittest
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

DASHBOARD_URL = os.environ.get("DASHBOARD_URL", "http://127.0.0.1:18181/")
CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOT_PATH = os.environ.get(
    "SCREENSHOT_PATH",
    str(Path(__file__).resolve().parents[2] / "run" / "browser-test" / "dashboard.png"),
)
# Set when the api runs with API_KEYS: the page must ask for it.
API_KEY = os.environ.get("DASHBOARD_API_KEY", "")


def origin(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


ORIGIN = origin(DASHBOARD_URL)
# Chromium logs every 4xx answer to fetch(); the tests provoke a 400 and 401s on purpose.
EXPECTED_CONSOLE_ERROR = re.compile(r"status of (400 \(Bad Request\)|401 \(Unauthorized\))")

RECORD_PROGRESS_JS = """(taskId) => {
  window.__progress ??= {};
  const seen = (window.__progress[taskId] = []);
  const li = document.querySelector(`li.task[data-task-id="${taskId}"]`);
  const bar = li.querySelector('.bar');
  seen.push(Number(bar.getAttribute('aria-valuenow')));
  new MutationObserver(() => seen.push(Number(bar.getAttribute('aria-valuenow')))).observe(bar, {
    attributes: true,
    attributeFilter: ['aria-valuenow'],
  });
}"""

FILL_AT_FULL_WIDTH_JS = """(taskId) => {
  const li = document.querySelector(`li.task[data-task-id="${taskId}"]`);
  const bar = li.querySelector('.bar').getBoundingClientRect();
  const fill = li.querySelector('.fill').getBoundingClientRect();
  return bar.width > 0 && Math.abs(fill.width - bar.width) < 1;
}"""

DEMO_IMAGE = Path(__file__).resolve().parents[2] / "scripts" / "demo" / "colours.png"

# The preview's pixels, read back through a canvas: [[r, g, b], ...] at a few points.
PREVIEW_PIXELS_JS = """() => {
  const img = document.querySelector('#result-image');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const points = [[0, 0], [40, 10], [96, 64], [150, 100], [191, 127]];
  return points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
}"""

# The task's input blob, fetched with the page's stored API key.
BLOB_OF_INPUT_JS = """async (taskId) => {
  const key = localStorage.getItem('taskforge.apiKey');
  const headers = key ? { Authorization: 'Bearer ' + key } : {};
  const task = await (await fetch('/tasks/' + taskId, { headers })).json();
  const res = await fetch('/blobs/' + task.input.image, { headers });
  const size = (await res.arrayBuffer()).byteLength;
  return { blob_id: task.input.image, content_type: res.headers.get('content-type'), size };
}"""

# Counts the page's live streams where the page opens them: a streamed fetch
# with Accept: text/event-stream is open from the call until its body ends
# (the end is seen before the page's reader sees it), it fails, or its signal
# aborts. Playwright's request events cannot count this: the next stream's
# "request" can arrive before the previous one's "requestfinished".
COUNT_STREAMS_JS = """(() => {
  const streams = (window.__streams = { open: 0, max: 0 });
  const fetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const accept = init && init.headers && init.headers.Accept;
    if (accept !== 'text/event-stream') return fetch(input, init);
    let open = true;
    const close = () => {
      if (open) { open = false; streams.open -= 1; }
    };
    streams.open += 1;
    streams.max = Math.max(streams.max, streams.open);
    if (init.signal) init.signal.addEventListener('abort', close);
    let res;
    try {
      res = await fetch(input, init);
    } catch (e) {
      close();
      throw e;
    }
    if (!res.body) {
      close();
      return res;
    }
    const body = res.body.pipeThrough(new TransformStream({ flush: close }));
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
})();"""

PROGRESS_AT_LEAST_30_JS = """(taskId) =>
  Number(document.querySelector(`li.task[data-task-id="${taskId}"] .bar`).getAttribute('aria-valuenow')) >= 30"""


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pw = sync_playwright().start()
        cls.browser = cls.pw.chromium.launch(
            executable_path=CHROMIUM_PATH,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = cls.browser.new_context(
            viewport={"width": 1280, "height": 800},
            locale="en-GB",
            timezone_id="UTC",
            color_scheme="light",
        )
        cls.page = page = context.new_page()
        cls.offsite = []  # requests to anything but the api
        cls.page_errors = []  # uncaught exceptions and console errors
        page.add_init_script(COUNT_STREAMS_JS)

        def on_request(req):
            # blob: URLs are this page's own memory (the result image preview).
            if origin(req.url) != ORIGIN and not req.url.startswith(("data:", "blob:")):
                cls.offsite.append(req.url)

        def on_console(msg):
            if msg.type == "error" and not EXPECTED_CONSOLE_ERROR.search(msg.text):
                cls.page_errors.append(msg.text)

        page.on("request", on_request)
        page.on("pageerror", lambda err: cls.page_errors.append(str(err)))
        page.on("console", on_console)
        page.goto(DASHBOARD_URL)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.pw.stop()

    # --- helpers --------------------------------------------------------

    def row(self, task_id):
        return self.page.locator(f'li.task[data-task-id="{task_id}"]')

    def submit(self, fields):
        """Fills the form, submits, and returns the new task's id from the api's answer."""
        page = self.page
        for name, value in fields.items():
            page.get_by_label(name).fill(str(value))
        with page.expect_response(
            lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/tasks"
        ) as answer:
            page.get_by_role("button", name="Submit task").click()
        response = answer.value
        self.assertEqual(response.status, 202, "the api accepts the task")
        task_id = response.json()["task_id"]
        self.row(task_id).wait_for()
        return task_id

    def wait_for_status(self, task_id, status, timeout=30_000):
        """Waits until the task's row shows `status` (auto-waiting locator)."""
        self.page.locator(f'li.task[data-task-id="{task_id}"][data-status="{status}"]').wait_for(
            timeout=timeout
        )

    def cancel_button(self, task_id):
        return self.row(task_id).get_by_role("button", name=f"Cancel task {task_id[:8]}")

    # --- the tests, in order ---------------------------------------------

    def test_1_api_key_prompt(self):
        """The page asks for the API key, refuses a wrong one, then loads the list."""
        if not API_KEY:
            self.skipTest("the api runs without API_KEYS")
        page = self.page
        dialog = page.get_by_role("dialog", name="API key")
        dialog.wait_for()
        self.assertRegex(dialog.text_content(), r"needs an API key")

        dialog.get_by_label("Key").fill("not-the-key")
        dialog.get_by_role("button", name="Save").click()
        page.get_by_text("The api did not accept the stored API key").wait_for()

        dialog.get_by_label("Key").fill(API_KEY)
        dialog.get_by_role("button", name="Save").click()
        dialog.wait_for(state="hidden")
        page.locator("#tasks-empty").wait_for(state="visible")
        self.assertEqual(page.evaluate("() => localStorage.getItem('taskforge.apiKey')"), API_KEY)

    def test_2_task_completes(self):
        """A submitted task moves its bar to 100 % and turns COMPLETED."""
        page = self.page
        task_id = self.submit({"Stages": 3, "Stage length (ms)": 300, "Timeout (s)": 30, "Priority": 5})
        page.evaluate(RECORD_PROGRESS_JS, task_id)

        self.wait_for_status(task_id, "COMPLETED")

        r = self.row(task_id)
        self.assertEqual(r.locator(".status").text_content(), "COMPLETED")
        self.assertEqual(r.get_by_role("progressbar").get_attribute("aria-valuenow"), "100")
        # The fill is drawn at full width (after its transition).
        page.wait_for_function(FILL_AT_FULL_WIDTH_JS, arg=task_id)
        self.assertRegex(r.locator(".meta").text_content(), r"100 % · 3/3 stages · browser-w[12]")
        self.assertTrue(r.locator(".cancel").is_hidden(), "no cancel button on a finished task")

        # The bar moved there through the stages, live, never backwards.
        seen = page.evaluate("(taskId) => window.__progress[taskId]", task_id)
        self.assertTrue(any(0 < p < 100 for p in seen), f"the bar showed an intermediate value: {seen}")
        self.assertEqual(sorted(seen), seen, f"progress never went backwards: {seen}")
        self.assertEqual(seen[-1], 100)

        # Its history, in the side panel.
        r.get_by_role("button", name=f"Show the history of task {task_id}").click()
        history = page.get_by_role("complementary")
        history.locator("#history-events tr").nth(5).wait_for()
        rows = history.locator("#history-events tr").all_text_contents()
        self.assertEqual(len(rows), 6, f"QUEUED, PROCESSING, three stages, COMPLETED: {' | '.join(rows)}")
        self.assertRegex(rows[0], r"^1.*status\s*QUEUED")
        self.assertRegex(rows[-1], r"status\s*COMPLETED.*100 %")
        self.assertRegex(history.locator("#history-summary").text_content(), r"hello world")

    def test_3_cancel(self):
        """Cancelling a running task turns it CANCELLED."""
        task_id = self.submit({"Stages": 5, "Stage length (ms)": 3000, "Timeout (s)": 60, "Priority": 5})
        self.wait_for_status(task_id, "PROCESSING")

        self.cancel_button(task_id).click()

        self.wait_for_status(task_id, "CANCELLED", 10_000)
        r = self.row(task_id)
        self.assertEqual(r.locator(".status").text_content(), "CANCELLED")
        self.assertLess(int(r.get_by_role("progressbar").get_attribute("aria-valuenow")), 100)
        self.assertTrue(r.locator(".cancel").is_hidden(), "no cancel button on a finished task")

    def test_4_health(self):
        """Health shows Redis and RabbitMQ up, and links to the management UI on this host."""
        page = self.page
        page.locator('.pill[data-check="redis"][data-state="ok"]').wait_for()
        page.locator('.pill[data-check="rabbitmq"][data-state="ok"]').wait_for()
        self.assertRegex(
            page.locator('.pill[data-check="rabbitmq"]').text_content(), r"RabbitMQ\s+ok · [\d.]+ ms"
        )
        href = page.get_by_role("link", name="RabbitMQ management").get_attribute("href")
        self.assertEqual(href, f"http://{urlsplit(DASHBOARD_URL).hostname}:15672/")

    def test_5_form_error(self):
        """A form error from the api is shown to the user."""
        page = self.page
        page.get_by_label("Stages").fill("0")
        page.get_by_label("Stage length (ms)").fill("")
        page.get_by_role("button", name="Submit task").click()
        message = page.locator("#form-message.error")
        message.wait_for()
        self.assertRegex(message.text_content(), r"\(validation\)")

    def choose_algorithm(self, name):
        self.page.get_by_label("Algorithm").select_option(name)

    def submit_algorithm_task(self):
        """Clicks Submit and returns the new task's id from the api's answer."""
        page = self.page
        with page.expect_response(
            lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/tasks"
        ) as answer:
            page.get_by_role("button", name="Submit task").click()
        self.assertEqual(answer.value.status, 202, answer.value.text())
        task_id = answer.value.json()["task_id"]
        self.row(task_id).wait_for()
        return task_id

    def test_5a_algorithm_picker(self):
        """The picker lists the api's algorithms; pi with samples and a seed completes with its estimate."""
        page = self.page
        picker = page.get_by_label("Algorithm")
        page.wait_for_function("() => document.querySelectorAll('#algorithm option').length > 1")
        names = picker.locator("option").all_text_contents()
        for name in ("hello", "grayscale", "pi"):
            self.assertIn(name, names)
        try:
            self.choose_algorithm("pi")
            self.assertRegex(page.locator("#algorithm-description").text_content(), r"(?i)monte carlo")
            self.assertTrue(page.get_by_label("Samples").is_visible())
            self.assertTrue(page.get_by_label("Stage length (ms)").is_hidden(), "pi has no stage length")
            self.assertTrue(page.get_by_label("Image (PNG or JPEG)").is_hidden())
            page.get_by_label("Stages").fill("2")
            page.get_by_label("Samples").fill("200000")
            page.get_by_label("Seed (optional)").fill("7")
            page.get_by_label("Input (JSON, optional)").fill("")
            task_id = self.submit_algorithm_task()
            self.wait_for_status(task_id, "COMPLETED")

            self.row(task_id).get_by_role("button", name=f"Show the history of task {task_id}").click()
            summary = page.locator("#history-summary")
            summary.get_by_text('"pi":').wait_for()
            text = summary.text_content()
            self.assertIn('"samples":200000', text.replace(" ", ""))
            pi = float(re.search(r'"pi":\s*([0-9.]+)', text).group(1))
            self.assertAlmostEqual(pi, 3.14159, delta=0.05)
            self.assertTrue(page.locator("#result-preview").is_hidden(), "no image in pi's result")
        finally:
            self.choose_algorithm("hello")
        self.assertTrue(page.get_by_label("Stage length (ms)").is_visible())

    def test_5b_grayscale_preview(self):
        """A grayscale of an uploaded PNG shows its grey result image in the side panel."""
        page = self.page
        try:
            self.choose_algorithm("grayscale")
            page.get_by_label("Stages").fill("")
            # Without a file the form says so, and nothing is sent.
            page.get_by_role("button", name="Submit task").click()
            page.locator("#form-message.error", has_text="Choose an image").wait_for()

            page.get_by_label("Image (PNG or JPEG)").set_input_files(str(DEMO_IMAGE))
            with page.expect_response(
                lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/tasks"
            ) as created:
                with page.expect_response(
                    lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/blobs"
                ) as upload:
                    page.get_by_role("button", name="Submit task").click()
            self.assertEqual(upload.value.status, 201)
            self.assertEqual(created.value.status, 202)
            task_id = created.value.json()["task_id"]
            self.wait_for_status(task_id, "COMPLETED")
            # The input names the uploaded blob, stored as the PNG it is.
            # (Through the page: Chromium may drop an answer's body once read.)
            blob = page.evaluate(BLOB_OF_INPUT_JS, task_id)
            self.assertEqual(blob["content_type"], "image/png")
            self.assertEqual(blob["size"], DEMO_IMAGE.stat().st_size)

            self.row(task_id).get_by_role("button", name=f"Show the history of task {task_id}").click()
            image = page.get_by_role("img", name=f"Result image of task {task_id[:8]}")
            image.wait_for()
            page.wait_for_function(
                "() => { const i = document.querySelector('#result-image'); return i.complete && i.naturalWidth > 0; }"
            )
            self.assertEqual(image.evaluate("(i) => [i.naturalWidth, i.naturalHeight]"), [192, 128])
            self.assertRegex(page.locator("#result-caption").text_content(), r"192×128 PNG")
            for r, g, b in page.evaluate(PREVIEW_PIXELS_JS):
                self.assertTrue(r == g == b, f"grey pixels: {(r, g, b)}")
            self.assertIn(blob["blob_id"], page.locator("#history-summary").text_content(), "the input names the blob")
        finally:
            page.get_by_label("Image (PNG or JPEG)").set_input_files([])
            self.choose_algorithm("hello")

    def test_6_screenshot(self):
        """Screenshot of the dashboard, with a task in progress."""
        page = self.page
        # A longer task so the picture shows a live bar beside the two finished ones.
        task_id = self.submit(
            {
                "Stages": 10,
                "Stage length (ms)": 1000,
                "Timeout (s)": 60,
                "Priority": 5,
                "Input (JSON, optional)": '{"demo": true}',
            }
        )
        page.wait_for_function(PROGRESS_AT_LEAST_30_JS, arg=task_id, timeout=30_000)
        page.locator('.pill[data-check="redis"][data-state="ok"]').wait_for()
        page.locator("#form-message").evaluate("(el) => { el.textContent = ''; }")
        Path(SCREENSHOT_PATH).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOT_PATH, full_page=True, animations="disabled")

        self.cancel_button(task_id).click()
        self.wait_for_status(task_id, "CANCELLED", 10_000)

    def test_7_more_tasks_than_streams(self):
        """More running tasks than live streams all reach COMPLETED."""
        # The page keeps at most four streams open (HTTP/1.1 allows six
        # connections per host); the others wait for a slot and then replay
        # what they missed. Each task runs 4 s, so the first ones are still
        # live when the fourth is submitted, however slow a busy machine
        # makes the form.
        page = self.page
        page.evaluate("() => { window.__streams.max = window.__streams.open; }")
        ids = [
            self.submit(
                {
                    "Stages": 2,
                    "Stage length (ms)": 2000,
                    "Timeout (s)": 30,
                    "Priority": 5,
                    "Input (JSON, optional)": "",
                }
            )
            for _ in range(7)
        ]
        for task_id in ids:
            self.wait_for_status(task_id, "COMPLETED", 90_000)
        for task_id in ids:
            self.assertEqual(
                self.row(task_id).get_by_role("progressbar").get_attribute("aria-valuenow"), "100", task_id
            )
        self.assertEqual(page.evaluate("() => window.__streams.max"), 4, "four streams at most, and all four used")

    def test_8_narrow_window(self):
        """In a narrow window nothing overflows sideways."""
        page = self.page
        page.set_viewport_size({"width": 380, "height": 800})
        try:
            page.wait_for_function("() => document.documentElement.clientWidth === 380")
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            self.assertEqual(overflow, 0, "no horizontal scrolling at 380 px")
            shot = re.sub(r"\.png$", "-narrow.png", SCREENSHOT_PATH)
            page.screenshot(path=shot, full_page=True, animations="disabled")
        finally:
            page.set_viewport_size({"width": 1280, "height": 800})

    def test_9_nothing_offsite_no_errors(self):
        """The page made no request to another host and threw no error."""
        self.assertEqual(self.offsite, [])
        self.assertEqual(self.page_errors, [])


if __name__ == "__main__":
    unittest.main()
