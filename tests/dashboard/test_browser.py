"""The dashboard in a real headless Chromium: log in, read the overview and a task, replay a
dead letter from its page, watch the page refresh by itself.

Selenium drives Debian's chromium through its chromium-driver (scripts/setup.sh installs
both). Its calls block, and the app runs on this test's event loop, so every browser step runs
in a thread. A screenshot of each page is kept in tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from shared.tasks import TaskStatus
from tests.support.dashboard_helpers import PRIVATE_TEXT, REPLY, Board, Seeded, reply_data, seed

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WAIT = 15.0

pytestmark = pytest.mark.timeout(120)


def _executables() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    message = "needs Debian's chromium and chromium-driver (bash scripts/setup.sh installs them)"
    # scripts/test.sh installs both and sets this, so the tests cannot silently skip there.
    if os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    binary, driver_path = _executables()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def text_of(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def wait_for_text(driver: WebDriver, css: str, expected: str) -> None:
    # The element may be replaced while it is read (navigation, the live refresh): look again.
    WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: expected in d.find_element(By.CSS_SELECTOR, css).text
    )


def log_in(driver: WebDriver, board: Board) -> None:
    driver.get(f"{board.url}/")
    assert "/login" in driver.current_url  # every page starts at the login form
    driver.find_element(By.NAME, "name").send_keys("alice")
    driver.find_element(By.NAME, "token").send_keys(board.token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for_text(driver, "h1", "Queues")


def read_overview(driver: WebDriver) -> None:
    row = "tr[data-type='generate_reply']"
    assert text_of(driver, f"{row} td.waiting") == "2"
    assert driver.find_elements(By.CSS_SELECTOR, f"{row} svg.chart rect.bar")
    assert "1 / 2" in text_of(driver, row)  # worker-alive alive, worker-gone dead
    screenshot(driver, "dashboard-overview")


def read_consumers_and_task(driver: WebDriver, seeded: Seeded) -> None:
    driver.find_element(By.LINK_TEXT, "Consumers").click()
    wait_for_text(driver, "[data-consumer='worker-alive']", "ALIVE")
    assert "DEAD" in text_of(driver, "[data-consumer='worker-gone']")
    # The running task is listed under its consumer; its link opens the task page.
    driver.find_element(By.LINK_TEXT, seeded.running_task).click()
    wait_for_text(driver, "dl.facts", "processing")
    assert "worker-alive" in text_of(driver, "dl.facts")
    assert PRIVATE_TEXT not in text_of(driver, "pre.payload")
    driver.find_element(By.LINK_TEXT, "Show user texts").click()
    wait_for_text(driver, "pre.payload", PRIVATE_TEXT)
    screenshot(driver, "dashboard-task")


def replay_from_dead_page(driver: WebDriver, seeded: Seeded) -> None:
    driver.find_element(By.LINK_TEXT, "Dead letters").click()
    row = f"tr[data-dead-id] a[href='/tasks/{seeded.dead_task}']"
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    assert "provider refused the request" in text_of(driver, "table.dead")
    driver.find_element(By.CSS_SELECTOR, "tr[data-dead-id] input[type=checkbox]").click()
    screenshot(driver, "dashboard-dead-letters")
    driver.find_element(By.XPATH, "//button[text()='Replay selected']").click()
    wait_for_text(driver, ".notice", "Replayed 1; skipped 0.")
    assert "No dead letters for generate_reply." in text_of(driver, "#live")


def watch_overview_refresh(driver: WebDriver, expected_waiting: str) -> None:
    wait_for_text(driver, "tr[data-type='generate_reply'] td.waiting", expected_waiting)


async def test_operator_logs_in_reads_and_replays_a_dead_letter(
    browser: WebDriver, board: Board, redis_client: aioredis.Redis
) -> None:
    seeded = await seed(board.queue, redis_client)

    await asyncio.to_thread(log_in, browser, board)
    await asyncio.to_thread(read_overview, browser)
    await asyncio.to_thread(read_consumers_and_task, browser, seeded)
    await asyncio.to_thread(replay_from_dead_page, browser, seeded)

    # Back on the stream as a fresh pending task, and out of the dead-letter stream.
    entries: Any = await redis_client.xrange(board.queue.keys.stream(REPLY))
    carried = [fields[b"task"] for _, fields in entries]
    assert any(seeded.dead_task.encode() in raw for raw in carried)
    assert await redis_client.xlen(board.queue.keys.dead(REPLY)) == 0
    task = await board.queue.get_task(seeded.dead_task)
    assert task is not None
    assert task.status is TaskStatus.PENDING

    # The overview refreshes itself: new work shows up without a reload (a reload would
    # drop the marker set on the page's window).
    await asyncio.to_thread(browser.get, f"{board.url}/")
    await asyncio.to_thread(watch_overview_refresh, browser, "3")
    await asyncio.to_thread(browser.execute_script, "window.notReloaded = true;")
    await board.queue.enqueue_task(REPLY, 7, reply_data("one more"))
    await asyncio.to_thread(watch_overview_refresh, browser, "4")
    assert await asyncio.to_thread(browser.execute_script, "return window.notReloaded;")
