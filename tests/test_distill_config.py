import argparse

import pytest
import yaml

from blazedistill.cli import distill as distill_cli
from blazedistill.distill.config import ConfigError, RunConfig, load_config, save_config


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    distill_cli.register(parser.add_subparsers())
    return parser.parse_args(["distill", *argv])


def test_config_round_trips_through_yaml(tmp_path):
    cfg = RunConfig()
    cfg.set("optim.lr", 3e-4)
    cfg.set("data.train", ["a/{0..3}.tar", "b/"])
    cfg.set("loss.kwargs", {"temperature": 2.0})
    cfg.set("train.max_steps", 123)
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.optim.lr == 3e-4 and again.data.train == ["a/{0..3}.tar", "b/"]
    assert again.loss.kwargs == {"temperature": 2.0} and again.train.max_steps == 123


def test_partial_file_keeps_defaults_and_ints_pass_as_floats(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1\ntrain:\n  epochs: 3\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3 and cfg.train.batch_size == RunConfig().train.batch_size


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epoch: 3\n", "unknown config key 'train.epoch'"),
        ("train:\n  epochs: three\n", "train.epochs must be int"),
        ("train:\n  amp: 1\n", "train.amp must be bool"),
        ("train: 3\n", "section 'train' must be a mapping"),
        ("train: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_flags_override_the_config_file(tmp_path):
    cfg = RunConfig()
    cfg.set("train.epochs", 7)
    cfg.set("optim.lr", 0.01)
    cfg.set("loss.name", "seed")
    save_config(cfg, tmp_path / "config.yaml")
    args = parse(["--config", str(tmp_path / "config.yaml"), "--epochs", "2", "--set", "optim.weight_decay=0.5"])
    resolved = distill_cli.resolve_config(args)
    assert resolved.train.epochs == 2  # flag wins
    assert resolved.optim.lr == 0.01 and resolved.loss.name == "seed"  # file values kept
    assert resolved.optim.weight_decay == 0.5


def test_resume_reads_the_run_folders_config(tmp_path):
    cfg = RunConfig()
    cfg.set("train.batch_size", 5)
    save_config(cfg, tmp_path / "config.yaml")
    resolved = distill_cli.resolve_config(parse(["--resume", str(tmp_path)]))
    assert resolved.train.batch_size == 5 and resolved.train.out == str(tmp_path)


def test_every_flag_maps_to_a_real_key():
    args = parse(["--data", "x", "y", "--data", "z", "--val-size", "9", "--lr", "1e-4", "--ema", "0.99"])
    resolved = distill_cli.resolve_config(args)
    assert resolved.data.train == ["x", "y", "z"]
    assert resolved.data.val_size == 9 and resolved.optim.lr == 1e-4 and resolved.optim.ema_decay == 0.99
    for key in distill_cli.FLAG_KEYS.values():
        section, name = key.split(".")
        assert hasattr(getattr(RunConfig(), section), name)


def test_saved_config_is_plain_yaml(tmp_path):
    save_config(RunConfig(), tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert set(data) == {"model", "data", "loss", "optim", "train", "val"}


def test_bad_or_unavailable_device_is_a_value_error():
    import torch

    from blazedistill.distill.runtime import pick_device

    with pytest.raises(ValueError, match="--device bogus: not a torch device"):
        pick_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_distill_cli_reports_a_bad_device_in_one_line(capsys):
    from blazedistill.cli.main import main

    assert main(["distill", "--device", "bogus", "--max-steps", "1"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("blazedistill distill: error: --device bogus")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-steps", "0"], "train.max_steps must be >= 1"),
        (["--max-steps", "-5"], "train.max_steps must be >= 1"),
        (["--epochs", "0"], "train.epochs must be >= 1"),
        (["--batch-size", "0"], "train.batch_size must be >= 1"),
        (["--time-limit", "-1"], "train.time_limit must be > 0"),
        (["--ema", "1.5"], "optim.ema_decay must be in"),
        (["--lr", "-1"], "optim.lr must be >= 0"),
        (["--workers", "-1"], "data.workers must be >= 0"),
        (["--set", "optim.betas=[0.9]"], "optim.betas must be two numbers"),
    ],
)
def test_out_of_range_values_are_refused_before_training(tmp_path, capsys, argv, message):
    from blazedistill.cli.main import main

    assert main(["distill", "--out", str(tmp_path / "run"), *argv]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line
    assert not (tmp_path / "run").exists()


def test_set_with_invalid_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match="--set train.batch_size: '\\[' is not a valid YAML value"):
        distill_cli.resolve_config(parse(["--set", "train.batch_size=["]))


def test_resume_of_a_missing_run_names_it(tmp_path):
    missing = tmp_path / "runs" / "nope"
    with pytest.raises(ConfigError, match=f"--resume {missing}: no such run folder or checkpoint"):
        distill_cli.resolve_config(parse(["--resume", str(missing)]))
