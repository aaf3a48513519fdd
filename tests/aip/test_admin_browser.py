"""Live progress of jobs in a real browser: headless Chromium against pytest-django's live server.

The job rows are changed in the database while the page is open, and the progress
bar must follow without a reload. A variable set on ``window`` before the change
proves that no reload happened, because a reload would drop it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from aip.models import Job
from repository.services import administrator_create

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
EMAIL = "browser-admin@example.org"
PASSWORD = "a long browser password"
# The page polls every 2 s; this leaves room for a slow machine.
WAIT_SECONDS = 15


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Debian's chromedriver; fails (never skips) when either is missing."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.is_file():
            pytest.fail(
                f"{program} is missing, so the browser tests cannot run. Install Debian's chromium and "
                "chromium-driver packages (apt-get install chromium chromium-driver)."
            )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as error:
        pytest.fail(f"Starting {CHROMIUM} through {CHROMEDRIVER} failed: {error.msg}")
    yield driver
    driver.quit()


@pytest.fixture
def logged_in(browser, live_server, transactional_db):
    """The browser, logged in to the live server's admin as an administrator."""
    administrator_create(email=EMAIL, password=PASSWORD)
    browser.delete_all_cookies()
    browser.get(live_server.url + reverse("admin:login"))
    browser.find_element(By.NAME, "username").send_keys(EMAIL)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, WAIT_SECONDS).until(lambda driver: "/login/" not in driver.current_url)
    return browser


def running_job(**fields) -> Job:
    """Save a running site export, 2 of 10 objects and 1 KiB done unless ``fields`` give other values."""
    values = {
        "kind": Job.Kind.EXPORT,
        "state": Job.State.RUNNING,
        "eperson_email": EMAIL,
        "handle": "123456789/0",
        "path": "exports/20260101T000000Z/SITE@123456789-0.zip",
        "storage": "aips",
        "objects_done": 2,
        "objects_total": 10,
        "bytes_done": 1024,
    }
    return Job.objects.create(**{**values, **fields})


def progress_text(browser, job: Job) -> str:
    element = browser.find_element(By.CSS_SELECTOR, f'.aip-progress[data-job-id="{job.pk}"] .aip-progress-text')
    return element.text.replace("\xa0", " ")


def text_wait(browser, job: Job, expected: str) -> None:
    try:
        WebDriverWait(browser, WAIT_SECONDS).until(lambda driver: progress_text(driver, job) == expected)
    except TimeoutException:
        pytest.fail(
            f"The progress of job {job.pk} still reads {progress_text(browser, job)!r} after {WAIT_SECONDS} s, "
            f"expected {expected!r}; the page did not poll its progress endpoint."
        )


def test_job_page_progress_follows_job(logged_in, live_server):
    job = running_job(log="Wrote COMMUNITY@123456789-1.zip\n")
    logged_in.get(live_server.url + reverse("admin:aip_job_change", args=[job.pk]))
    assert progress_text(logged_in, job) == "2 / 10 objects, 1.0 KB"
    logged_in.execute_script("window.aipMarker = 'set before the change';")

    Job.objects.filter(pk=job.pk).update(
        objects_done=7, bytes_done=4096, log="Wrote COMMUNITY@123456789-1.zip\nWrote ITEM@123456789-5.zip\n"
    )
    text_wait(logged_in, job, "7 / 10 objects, 4.0 KB")

    bar = logged_in.find_element(By.CSS_SELECTOR, f'.aip-progress[data-job-id="{job.pk}"] progress')
    assert logged_in.execute_script("return window.aipMarker") == "set before the change"
    assert bar.get_property("value") == 7
    assert "Wrote ITEM@123456789-5.zip" in logged_in.find_element(By.CSS_SELECTOR, ".aip-log").text


def test_job_list_rows_follow_jobs(logged_in, live_server):
    first = running_job()
    second = running_job(objects_done=0, objects_total=None, bytes_done=0)
    logged_in.get(live_server.url + reverse("admin:aip_job_changelist"))
    logged_in.execute_script("window.aipMarker = 'set before the change';")

    Job.objects.filter(pk=first.pk).update(objects_done=9, state=Job.State.SUCCEEDED)
    Job.objects.filter(pk=second.pk).update(objects_done=3, bytes_done=2048)
    text_wait(logged_in, first, "9 / 10 objects, 1.0 KB")
    text_wait(logged_in, second, "3 objects, 2.0 KB")

    state = logged_in.find_element(By.CSS_SELECTOR, f'[data-aip-state="{first.pk}"]')
    assert logged_in.execute_script("return window.aipMarker") == "set before the change"
    assert state.text == "Succeeded"
