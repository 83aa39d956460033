"""The command line: clear one-paragraph errors, exit codes, no tracebacks."""

from loclab.cli import main


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
