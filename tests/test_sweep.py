"""A sweep as a user reads it: the summary table printed and written when a multirun ends, the
settings beside the test metrics in TensorBoard's HParams tab (through TensorBoard's HTTP API),
genlab-report's means and confidence intervals over seeds, genlab-eval on a whole sweep folder."""

from __future__ import annotations

import csv
import json
import math
import socket
import statistics
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli
from scipy import stats as scipy_stats

from genlab import report
from genlab.evaluate import main as eval_main
from genlab.runs import load, swept_keys

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 6-job sweep (model=ae,dae × seed=0,1,2) on digits, two batches per stage; (folder, stdout)."""
    logs = tmp_path_factory.mktemp("sweep")
    res = run_cli("-m", f"paths.log_dir={logs}", "model=ae,dae", "seed=0,1,2", "trainer=debug", "data.max_train=96",
                  *QUIET, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (folder,) = (logs / "train" / "multiruns").iterdir()
    return folder, res.stdout


@pytest.mark.slow
def test_the_end_of_a_sweep_prints_and_writes_a_table_of_all_jobs(sweep) -> None:
    folder, out = sweep
    with (folder / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["seed"]) for r in rows] == [(m, s) for m in ("ae", "dae") for s in ("0", "1", "2")]
    for r in rows:  # every metric of every job, read back from its own metrics.json
        recorded = json.loads((Path(r["folder"]) / "metrics.json").read_text())["metrics"]
        assert float(r["test/sq_err_per_image"]) == pytest.approx(recorded["test/sq_err_per_image"])
    best = min(rows, key=lambda r: float(r["val/loss"]))  # optimized_metric: val/loss, minimised
    assert f"best job      : {best['folder']}" in out
    assert f"sweep {folder} (6 jobs)" in out.splitlines()  # on one line, however long the path
    md = (folder / "summary.md").read_text()
    assert md.count("\n| ") == 1 + 6 and "| job | model | seed | val/loss |" in md


def test_the_sweep_names_a_best_job_only_where_its_metric_ranks_the_runs(sweep, tmp_path: Path) -> None:
    from genlab.runs import Run
    from genlab.sweep import best_run, write_summary

    folder, _ = sweep
    ae_dae = load([folder])  # autoencoders: val/loss is the reconstruction error in both
    assert {r.record["val_loss"]["means"] for r in ae_dae} == {
        "the reconstruction error of clean inputs (plus the model's penalties)"}
    assert best_run(ae_dae, "val/loss") is min(ae_dae, key=lambda r: r.metrics["val/loss"])

    def run(name: str, model: str, loss: float, data: str = "digits", **val_loss: object) -> Run:
        record = {"model": model, "data": data, "metrics": {"val/loss": loss, "test/fid": 10 * loss},
                  "val_loss": {"ranks": True, "means": model, **val_loss}}
        return Run(tmp_path / name, {"model": model}, record)

    mixed = [run("0", "gan", 0.01, ranks=False), run("1", "vae", 40.0, means="the negative ELBO")]
    assert best_run(mixed, "val/loss") is None
    assert best_run(mixed, "test/fid") is mixed[0]  # a test metric ranks models of any kind
    assert best_run([run("0", "vae", 40.0, means="the negative ELBO"),
                     run("1", "vae", 30.0, means="reconstruction + 4 x KL")], "val/loss") is None
    assert best_run([run("0", "ae", 1.0), run("1", "ae", 2.0, data="shapes")], "test/fid") is None
    for r in mixed:
        r.path.mkdir()
    assert write_summary(tmp_path, mixed, "val/loss", "minimize") is None
    assert "No best job: val/loss of gan is an adversarial loss" in (tmp_path / "summary.md").read_text()


def test_tensorboard_shows_the_sweep_settings_beside_the_test_metrics(sweep) -> None:
    from tensorboard import program

    folder, _ = sweep
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(folder), "--port", str(port), "--host", "127.0.0.1"])
    url = board.launch()

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
        return json.loads(urllib.request.urlopen(req, timeout=30).read())

    for _ in range(60):  # TensorBoard loads the event files in the background
        experiment = post("data/plugin/hparams/experiment", {"experimentName": ""})
        if len(experiment.get("hparamInfos", [])) > 1:
            break
        time.sleep(0.5)
    # the keys of the command line, the swept ones (those that differ) first in TensorBoard's columns
    differs = {h["name"]: h.get("differs", False) for h in experiment["hparamInfos"]}
    assert differs == {"model": True, "seed": True, "data": False, "trainer": False, "data.max_train": False}
    assert {"test/sq_err_per_image", "test/knn_acc"} <= {m["name"]["tag"] for m in experiment["metricInfos"]}
    groups = post("data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "colParams": [],
        "startIndex": 0, "sliceSize": 100})["sessionGroups"]
    names = sorted(g["name"] for g in groups)
    assert len(names) == 6 and all("/tensorboard/" in n for n in names)
    assert sum("/tensorboard/ae-digits" in n for n in names) == 3 and sum("dae-digits" in n for n in names) == 3
    assert {f"seed={s}" for s in range(3)} <= {part for n in names for part in n.split("-")}
    for g in groups:  # each run: its metrics, equal to its metrics.json
        job = folder / g["name"].split("/")[0]
        recorded = json.loads((job / "metrics.json").read_text())["metrics"]
        values = {v["name"]["tag"]: v["value"] for v in g["metricValues"]}
        assert values["test/sq_err_per_image"] == pytest.approx(recorded["test/sq_err_per_image"], rel=1e-6)


def test_genlab_report_gives_mean_and_confidence_interval_over_seeds(sweep, tmp_path, capsys) -> None:
    folder, _ = sweep
    report.main([str(folder), "--out", str(tmp_path / "report")])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| model=ae | 3 |" in md and "| model=dae | 3 |" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<table>" in html  # self-contained: figures inline
    runs = load([folder])
    assert swept_keys(runs) == ["model", "seed"]
    groups = {g.label: g for g in report.group_runs(runs)}
    values = [r.metrics["test/sq_err_per_image"] for r in runs if r.overrides["model"] == "ae"]
    mean, sem = statistics.fmean(values), statistics.stdev(values) / math.sqrt(3)
    low, high = scipy_stats.t.interval(0.95, 2, loc=mean, scale=sem)  # independently, from scipy
    got = groups["model=ae"].stats("test/sq_err_per_image")
    assert got.n == 3 and got.mean == pytest.approx(mean) and got.ci == pytest.approx((high - low) / 2)
    assert f"{got.mean:.4g} ± {got.ci:.2g}" in md
    out = capsys.readouterr().out
    assert "model=dae" in out and str(tmp_path / "report" / "report.md") in out


def test_report_statistics_against_hand_computation() -> None:
    s = report.stats([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3) and s.std == pytest.approx(math.sqrt(7 / 3))
    assert s.ci == pytest.approx(4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3))  # t(0.975, 2) = 4.3027
    single = report.stats([5.0])
    assert single.n == 1 and math.isnan(single.ci) and str(single) == "5"


def test_genlab_eval_takes_a_sweep_folder_or_the_readme_glob(sweep, tmp_path, capsys) -> None:
    folder, _ = sweep
    everything = sorted(str(p) for p in folder.iterdir())  # what `<sweep>/*` expands to: jobs, files, report/
    assert any(p.endswith("multirun.yaml") for p in everything)
    eval_main([*everything, "--out", str(tmp_path / "table.csv")])
    with (tmp_path / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0", "1", "2"}
    assert {r["model"] for r in rows} == {"ae", "dae"}
    out = capsys.readouterr().out
    assert f"{folder.name}/0" in out  # whole run names, not cut


def test_summary_csv_has_each_column_once(tmp_path: Path) -> None:
    from genlab.runs import Run
    from genlab.sweep import write_summary

    runs = []
    for job, (model, seed) in enumerate([("ae", "0"), ("ae", "1"), ("dae", "0")]):
        (tmp_path / str(job)).mkdir()
        record = {"model": model, "data": "digits", "seed": int(seed), "metrics": {"val/loss": 1.0 + job}}
        runs.append(Run(tmp_path / str(job), {"model": model, "seed": seed}, record))
    write_summary(tmp_path, runs, "val/loss", "minimize")
    with (tmp_path / "summary.csv").open() as f:
        header = next(csv.reader(f))
    assert len(header) == len(set(header)) and header[:4] == ["job", "folder", "model", "seed"]
