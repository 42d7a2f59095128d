"""genlab-sample: grids of new samples from a finished run, by class or by caption, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST, TINY, run_cli
from PIL import Image

from genlab.sample import main


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cvae")
    made = run_cli("model=cvae", "data=digits", *TINY["digits"], *FAST, f"paths.log_dir={tmp}")
    assert made.returncode == 0, made.stderr[-2000:]
    [run] = list(tmp.glob("train/runs/*"))
    return run


def test_class_rows_free_samples_and_new_names(cvae_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(cvae_run), "--class", "7", "--class", "3", "-n", "5"])
    grid = cvae_run / "samples" / "class_7_3_seed0.png"
    assert grid.is_file() and "10 samples written" in capsys.readouterr().out
    main([str(cvae_run), "-n", "4", "--seed", "1"])
    assert (cvae_run / "samples" / "samples_seed1.png").is_file() and grid.is_file()  # a new name, nothing overwritten
    out = cvae_run / "mine.png"
    main([str(cvae_run), "-n", "3", "--out", str(out)])
    assert Image.open(out).size[0] > 0


def test_a_repeated_request_gets_a_new_file(cvae_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(cvae_run), "-n", "2", "--seed", "5"])
    first = cvae_run / "samples" / "samples_seed5.png"
    kept = first.read_bytes()
    main([str(cvae_run), "-n", "3", "--seed", "5"])
    second = cvae_run / "samples" / "samples_seed5-2.png"
    assert first.read_bytes() == kept and Image.open(second).size[0] > 0
    assert f"written to {second}" in capsys.readouterr().out


@pytest.mark.parametrize("args,expect", [
    (["--prompt", "a seven"], "not conditioned on text"),
    (["--class", "12"], "classes 0..9"),
    (["-n", "0"], "-n 0"),
    (["--steps", "0"], "--steps 0"),
    (["--class", "1", "--prompt", "x"], "give one of --prompt, --class and --variations"),
    (["--out", "grid.jpg"], ".png"),
    (["--prompt", " "], "a caption with words"),
    (["-n", "100000000"], "at most 4096"),
    (["-n", "1000", "--class", "1", "--class", "2", "--class", "3", "--class", "4", "--class", "5"], "5000 samples"),
])
def test_bad_requests_are_refused_in_one_line(cvae_run: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                               expect: str) -> None:
    with pytest.raises(SystemExit) as e:
        main([str(cvae_run), *args])
    assert e.value.code != 0 and expect in capsys.readouterr().err
