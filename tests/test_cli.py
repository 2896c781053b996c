import numpy as np
import pytest

from gradflow._cli import main


def test_demo_writes_summary_figure_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--seeds", "6", "--t1", "30", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "6 run(s)" in printed and "success: 6" in printed
    assert (out / "demo.png").stat().st_size > 10_000
    with np.load(out / "results.npz") as results:
        assert results["loss"].shape[0] == 6
        assert np.all(results["status"] == 0)
        assert np.all(results["loss"][:, -1] < results["loss"][:, 0])
    assert (out / "summary.txt").read_text().startswith("gradflow demo")


@pytest.mark.parametrize(
    "flag", [["--seeds", "0"], ["--scale", "-1"], ["--t1", "0"], ["--stationarity-tol", "0"]]
)
def test_demo_rejects_bad_options(flag, tmp_path):
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path), *flag])


def test_reproduce_finds_every_experiment_with_its_description():
    from gradflow._cli import _experiments

    found = _experiments()
    assert {"single-neuron", "spectral-bias"} <= set(found)
    assert "arXiv:2405.13787" in found["single-neuron"]
    assert "arXiv:2503.10587" in found["spectral-bias"]


def test_reproduce_refuses_a_checkpoint_it_cannot_keep(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "spectral-bias", "--out", str(tmp_path), "--checkpoint-dir", "x"])
    assert "--checkpoint-dir" in capsys.readouterr().err
