"""The MLflow dashboard as a user sees it, in a real browser: two one-epoch ``mlc train`` runs (losses bce and asl,
negative ratios 0.5 and 0.8), served by ``mlc ui``, opened in headless Chromium through Selenium and Debian's
chromium-driver. The API tests (``tests/test_ui.py``, ``tests/test_train_e2e.py``) show the store holds the right
things; this shows MLflow's React app puts them where the README says: the runs table in the model-training view,
mlc's run names, the *Dataset* column, *Group by* ``mlc.loss``, and a metric chart on the run's page.

MLflow 3.17's UI picks the GenAI or the model-training view from its own sidebar switch (kept in the browser's
local storage; the default is GenAI) or a ``?workflowType=machine_learning`` URL parameter (for that page only:
the links on it drop it), not from the experiment's ``mlflow.experimentKind`` tag: a fresh browser opening the
plain experiment link lands on the GenAI overview. So the test does what a user does there: it clicks the
sidebar's *Model training* switch once (dismissing a first-visit tip that covers it), and then checks that a plain
link (a run's, from the table) stays in the model-training view.

Screenshots of each step are saved in the test's ``tmp_path`` (``*.png``), with the page source where a wait fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs
from tests.test_tracking_server import stop, wait_healthy
from tests.test_ui import free_port

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MODEL_TRAINING = "workflowType=machine_learning"  # MLflow's switch to its model-training view, as a URL parameter
RUNS = {"bce": 0.5, "asl": 0.8}  # loss -> negative ratio: each run has its own dataset name (digits neg=...)
WAIT = 60  # s: a React page on a loaded 2-core machine; the waits return as soon as the page shows it


@pytest.fixture
def chrome(tmp_path):
    """A headless Chromium driven by chromium-driver; skipped (before anything is trained) where either is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"no {' and no '.join(missing)}: apt-get install -y --no-install-recommends chromium "
                    "chromium-driver (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -c "
                                                                 "constraints.txt -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1920,1080"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def start_runs_and_dashboard(outputs: Path, cache: Path, port: int, log: Path) -> tuple[dict, subprocess.Popen]:
    """The two ``mlc train`` runs and ``mlc ui`` on their store, started together (each is mostly interpreter
    start-up). The store is made first, here, so that the server and the runs find it migrated (a fresh SQLite
    store is built by one process at a time). Returns the running jobs by loss, and the server."""
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{outputs}/mlflow.db").search_experiments(max_results=1)
    jobs = {loss: subprocess.Popen(
        [sys.executable, "-m", "mlc.cli.train", f"loss={loss}", f"dataset.negative_ratio={ratio}",
         "trainer.max_epochs=1", "tracking.system_metrics=false", *SMALL, f"paths.cache={cache}"],
        cwd=ROOT, env=cli_env(outputs), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for loss, ratio in RUNS.items()}
    with log.open("w") as sink:  # mlc's own dashboard command
        server = subprocess.Popen([sys.executable, "-m", "mlc.cli.ui", "--outputs", str(outputs), "--port", str(port)],
                                  cwd=ROOT, env=cli_env(outputs), stdout=sink, stderr=subprocess.STDOUT)
    return jobs, server


def finished_runs(jobs: dict[str, subprocess.Popen], outputs: Path) -> dict[str, object]:
    """The MLflow run of each job (by loss), once all have ended well."""
    for loss, job in jobs.items():
        out, _ = job.communicate(timeout=300)
        assert job.returncode == 0, f"mlc train loss={loss}:\n{out[-3000:]}"
    return {r.data.tags["mlc.loss"]: r for r in mlflow_runs(outputs)}


def test_the_dashboard_shows_runs_datasets_groups_and_charts(chrome, outputs, data_cache, tmp_path):
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    port, log = free_port(), tmp_path / "ui.log"
    base = f"http://127.0.0.1:{port}"
    jobs, server = start_runs_and_dashboard(outputs, data_cache, port, log)
    shots = iter(range(1, 100))

    def shot(name: str) -> None:
        chrome.save_screenshot(str(tmp_path / f"{next(shots):02d}-{name}.png"))

    def until(what: str, condition):
        """``condition(driver)``'s first truthy value, asked again while the elements it reads are missing or
        re-rendered; on a timeout, a screenshot and the page source to read."""
        try:
            return WebDriverWait(chrome, WAIT, poll_frequency=0.25,  # React replaces elements as it renders
                                 ignored_exceptions=(NoSuchElementException, StaleElementReferenceException,
                                                     ElementClickInterceptedException)
                                 ).until(condition)
        except TimeoutException:
            shot("timeout")
            (tmp_path / "timeout.html").write_text(chrome.page_source)
            raise AssertionError(f"the dashboard did not show {what} within {WAIT} s (at {chrome.current_url}; "
                                 f"screenshots and timeout.html in {tmp_path})") from None

    def click(what: str, by: str, selector: str) -> None:
        """Click the element once it is there and clickable (found and clicked in one step: React may replace it)."""
        until(what, lambda d: d.find_element(by, selector).click() or True)

    def choose_model_training(d) -> bool:
        """Click the sidebar's GenAI | Model training switch (it stays so in this browser). A first-visit tip
        over the GenAI overview (a modal popover: "Detect Issues in Your Traces") takes the click: dismiss it
        with its "Got it", as a user would, and try again."""
        try:
            d.find_element(By.XPATH, "//*[@role='button'][normalize-space(.)='Model training']").click()
            return True
        except ElementClickInterceptedException:
            for tip in d.find_elements(By.XPATH, "//*[@role='dialog']//button[normalize-space(.)='Got it']"):
                tip.click()
            return False

    def model_training_sidebar(d) -> bool:
        nav = text_of("nav")  # Runs, Models, ... here; Overview, Observability, Evaluation runs, ... in the GenAI view
        return "/overview" not in d.current_url and "Runs" in nav and "Model registry" in nav \
            and "Observability" not in nav

    def text_of(css: str) -> str:
        """The text of every element ``css`` matches (hidden overflow included: a run name cell is cut short)."""
        return " ".join(e.get_attribute("textContent") or "" for e in chrome.find_elements(By.CSS_SELECTOR, css))

    try:
        runs = finished_runs(jobs, outputs)
        assert sorted(runs) == sorted(RUNS)
        experiment = next(iter(runs.values())).info.experiment_id
        wait_healthy(base, server, log)
        # 1. The experiment's plain link, in a fresh browser (MLflow 3.17: its GenAI overview, whatever the tag),
        # then the sidebar's Model training switch: the runs table, and the sidebar of the model-training view.
        chrome.get(f"{base}/#/experiments/{experiment}")
        until("the experiment's first page", lambda d: any(f"/experiments/{experiment}/{page}" in d.current_url
                                                          for page in ("runs", "overview")))
        shot("first-open-" + ("runs" if f"/experiments/{experiment}/runs" in chrome.current_url else "genai"))
        until("the Model training switch", choose_model_training)
        until("the runs table", lambda d: f"/experiments/{experiment}/runs" in d.current_url
              and d.find_elements(By.CSS_SELECTOR, "[role=grid] [role=row][row-id]"))
        assert MODEL_TRAINING in chrome.current_url, chrome.current_url  # the link to give users for this view
        until("the model-training view's sidebar", model_training_sidebar)
        # 2. Each run's row: mlc's run name, and its datasets (train, val, test) by name in the Dataset column.
        for loss, run in runs.items():
            row = f'[role=row][row-id="{run.info.run_id}"]'
            until(f"the run {run.info.run_name!r}", lambda d, row=row, run=run:
                  run.info.run_name in text_of(f'{row} [col-id="attributes.`Run Name`"]'))
            until(f"the dataset of {run.info.run_name!r}", lambda d, row=row, loss=loss:
                  f"digits neg={RUNS[loss]}" in text_of(f'{row} [col-id="attributes.`Dataset`"]'))
        assert "Dataset" in text_of('[role=columnheader][col-id="attributes.`Dataset`"]')
        shot("runs-table")
        # 3. Group by -> the tag mlc.loss: a group per loss, each run in its loss's group.
        click("the Group by control", By.XPATH, "//button[starts-with(normalize-space(.), 'Group by')]")
        click("mlc.loss among the group-by choices", By.XPATH,
              "//*[@role='menuitemcheckbox'][normalize-space(.)='mlc.loss']")
        chrome.switch_to.active_element.send_keys(Keys.ESCAPE)
        until("the runs grouped by mlc.loss", lambda d: all(
            f"Group: {loss}" in text_of(f'[role=row][row-id="tag.mlc.loss.{loss}"]')
            and d.find_elements(By.CSS_SELECTOR, f'[role=row][row-id="tag.mlc.loss.{loss}.{run.info.run_id}"]')
            for loss, run in runs.items()))
        assert "Group by: mlc.loss" in text_of("button")
        shot("grouped-by-loss")
        # 4. A run's page (its name in the table) -> Model metrics: the chart of val/f1_macro, drawn.
        run = runs["bce"]
        click("the run's link", By.CSS_SELECTOR, f'[row-id$="{run.info.run_id}"] a[href$="/runs/{run.info.run_id}"]')
        until("the run's page", lambda d: f"/runs/{run.info.run_id}" in d.current_url
              and text_of("[data-testid=runs-header]").strip() == run.info.run_name)
        until("the model-training view's sidebar on the run's page", model_training_sidebar)  # by a plain link
        click("the run page's Model metrics tab", By.XPATH, "//*[@role='tab'][normalize-space(.)='Model metrics']")
        until("the metric chart search", lambda d: d.find_element(
            By.CSS_SELECTOR, "input[placeholder='Search metric charts']").send_keys("val/f1_macro") or True)
        legend = until("a drawn chart of val/f1_macro", lambda d: next((
            c.text for c in d.find_elements(By.CSS_SELECTOR, "[data-testid=experiment-view-compare-runs-card]")
            if c.find_elements(By.CSS_SELECTOR, "h4[title='val/f1_macro']")
            and any(p.get_attribute("d") for p in c.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer "
                                                                                    ".trace path"))), None))
        assert f"{run.info.run_name} (val/f1_macro)" in legend  # the chart's legend: the run, the metric
        shot("run-chart")
    finally:
        for job in jobs.values():
            if job.poll() is None:  # a failed assertion above left it running
                job.kill()
                job.communicate()
        stop(server)
