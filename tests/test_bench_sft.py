"""The SFT benchmark's seed handling: command-line parsing and the per-method spread over seeds."""

import pytest

from bench.bench_sft import main, markdown_table, parse_methods, parse_seeds, summarise
from registry.errors import ConfigError


def test_seeds_parse_as_distinct_integers():
    assert parse_seeds("42,7, 1") == [42, 7, 1]
    for bad in ("", "1,a", "3,3"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_methods_accept_hyphenated_names_and_reject_unknown_ones():
    assert parse_methods("sft,zero-shot", ("sft", "zero_shot")) == ["sft", "zero_shot"]
    with pytest.raises(ConfigError, match="svm"):
        parse_methods("sft,svm", ("sft", "zero_shot"))


def test_summary_keeps_seeds_and_gives_mean_sample_sd_and_range():
    runs = {
        "sft": [{"seed": s, "f1_macro": f, "f1_weighted": f, "wall_s": w} for s, f, w in [(42, 0.9, 10), (7, 1.0, 30)]],
        "logreg": [],
    }
    summary = summarise(runs)
    assert list(summary) == ["sft"]
    f1 = summary["sft"]["f1_macro"]
    assert summary["sft"]["seeds"] == [42, 7]
    assert f1["mean"] == pytest.approx(0.95) and f1["sd"] == pytest.approx(0.0707, abs=1e-4)
    assert (f1["min"], f1["max"]) == (0.9, 1.0)
    assert "| 0.950 ± 0.071 | 0.900–1.000 | 42, 7 | 20 s (10–30) |" in markdown_table(summary)


@pytest.mark.parametrize("argv", [["--seeds", "1,x"], ["--set", "seed=3"], ["--methods", "svm"]])
def test_bad_arguments_are_one_line_errors_before_any_work(argv, capsys):
    assert main([*argv, "--no-mlflow"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_setfit_needs_its_environment(capsys):
    assert main(["--methods", "sft,setfit", "--no-mlflow"]) == 2
    assert "setfit" in capsys.readouterr().err
