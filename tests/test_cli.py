"""The command line: one-paragraph errors and exit code 2 for what a user can fix, tracebacks for bugs."""

import subprocess
import sys

import pytest

from loclab.cli import main
from loclab.data.errors import DataError
from loclab.models.detector import DETECTOR_MODELS
from loclab.models.keypoints import KEYPOINT_MODELS


def test_unusable_output_directory_fails_before_training(tiny_data_root, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["train", "detector", "--data-root", str(tiny_data_root), "--out", str(blocker / "run"),
                 "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write to the output directory" in err and "Traceback" not in err


def test_missing_dataset_says_how_to_make_one(tmp_path, capsys):
    code = main(["train", "keypoints", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "keypoints/train_annotations.json" in err and "loclab generate figures" in err
    assert not (tmp_path / "run").exists()


def test_bad_override_names_the_field(tiny_data_root, tmp_path, capsys):
    code = main(["train", "detector", "--data-root", str(tiny_data_root), "--out", str(tmp_path / "r"),
                 "--set", "train.optim.lrr=1"])
    assert code == 2 and "no field 'lrr'" in capsys.readouterr().err


def test_foreign_checkpoint_is_refused_clearly(tmp_path, capsys):
    import torch

    torch.save({"weights": 1}, tmp_path / "model.pth")
    code = main(["predict", "detector", "--weights", str(tmp_path / "model.pth"), str(tmp_path / "x.png")])
    assert code == 2 and "not a loclab checkpoint" in capsys.readouterr().err


def _malformed_ground_truth(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text('{"images": [')
    pred.write_text("[]")
    return ["eval", "keypoints", "--gt", str(gt), "--pred", str(pred)]


def test_data_error_is_one_paragraph_and_exit_2(tmp_path, capsys):
    code = main(_malformed_ground_truth(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("loclab: error: ") and "gt.json" in err and "malformed JSON" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_debug_raises_user_errors_with_their_traceback(tmp_path):
    with pytest.raises(DataError, match="malformed JSON"):
        main(["--debug", *_malformed_ground_truth(tmp_path)])


def test_unknown_model_is_a_config_error(tiny_data_root, tmp_path, capsys):
    code = main(["train", "keypoints", "--set", "model=no_such_model", "--data-root", str(tiny_data_root),
                 "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown keypoint model 'no_such_model'" in err and "Traceback" not in err


@pytest.mark.parametrize("task", ["detector", "keypoints"])
def test_model_choices_come_from_the_registries(task, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", task, "--model", "no_such_model", "--data-root", str(tmp_path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    registry = DETECTOR_MODELS if task == "detector" else KEYPOINT_MODELS
    assert exit.value.code == 2 and "invalid choice: 'no_such_model'" in err
    assert all(repr(name) in err for name in registry)


def test_a_bug_keeps_its_traceback(tmp_path):
    """A ValueError from deep inside loclab is not a user error: the process shows the traceback and fails."""
    code = (
        "import sys\n"
        "import loclab.report.build as build\n"
        "def broken(out):\n"
        "    raise ValueError('a bug deep inside')\n"
        "build.build_report = broken\n"
        "from loclab.cli import main\n"
        f"sys.exit(main(['report', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "ValueError: a bug deep inside" in done.stderr
    assert "loclab: error:" not in done.stderr
