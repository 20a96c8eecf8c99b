import pytest

from codepeft.config import load_config, parse_config
from codepeft.errors import CodepeftError


def test_defaults_and_overrides_parse_yaml_scalars():
    cfg = load_config(None, ["method.name=ia3", "train.max_steps=7", "data.packing=true", "method.r=16"])
    assert cfg.method.name == "ia3"
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)
    assert cfg.data.packing is True
    assert cfg.method.options == {"r": 16}


def test_override_reaches_into_default_list():
    cfg = load_config(None, ["data.train.0.limit=5"])
    assert cfg.data.train[0].source == "stdlib-instruct" and cfg.data.train[0].limit == 5


def test_unknown_key_is_named_with_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(CodepeftError, match=r"unknown config key 'train.max_stepz'") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_unknown_key_via_set():
    with pytest.raises(CodepeftError, match="unknown config key 'model.dtypee'"):
        load_config(None, ["model.dtypee=fp32"])


def test_bad_value_and_bad_yaml(tmp_path):
    with pytest.raises(CodepeftError, match="model.dtype"):
        parse_config({"model": {"dtype": "fp8"}})
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(CodepeftError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(CodepeftError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_data_train_shorthand():
    cfg = parse_config({"data": {"train": "conala"}})
    assert [s.source for s in cfg.data.train] == ["conala"]


def test_repo_configs_parse():
    """Every shipped config is valid: run configs as runs, study configs (they list models) as studies."""
    from pathlib import Path

    import yaml

    from codepeft.study import load_study

    kinds = []
    configs = Path(__file__).parents[1] / "configs"
    for path in sorted([*configs.glob("*.yaml"), *configs.glob("replicate/*.yaml")]):
        if "models" in yaml.safe_load(path.read_text()):
            load_study(path)
            kinds.append("study")
        else:
            load_config(path)
            kinds.append("run")
    assert kinds.count("study") >= 4 and kinds.count("run") >= 1


@pytest.mark.parametrize("pack", ["astraios", "peft-for-code"])
def test_replication_packs_scale_down_with_the_overrides_they_document(pack):
    """The `--set` lines in a pack's header give a valid offline study on the built-in model."""
    import re
    from pathlib import Path

    from codepeft.study import load_study
    from codepeft.study.cells import expand

    path = Path(__file__).parents[1] / "configs" / "replicate" / f"{pack}.yaml"
    header = path.read_text().split("Scaled down", 1)[1].split("\nname:", 1)[0]
    overrides = [a or b for a, b in re.findall(r"--set '([^']*)'|--set (\S+)", header)]
    assert len(overrides) > 5
    full, small = load_study(path), load_study(path, overrides)
    assert small.name != full.name and [m.name_or_path for m in small.models] == ["smollm2-135m"]
    assert {m.name for m in small.methods} == {m.name for m in full.methods}  # the same methods, scaled
    assert all(not t.startswith(("humanevalsynthesize-java", "clone", "defect")) for t in small.eval.tasks)
    assert 0 < len(expand(small)) < len(expand(full))


def test_check_reports_every_problem_before_anything_loads(tmp_path, tiny_model, monkeypatch):
    import codepeft.training.runner as runner
    from codepeft.errors import CodepeftError
    from codepeft.training import train

    loaded = []
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: loaded.append(a) or pytest.fail("the model loaded"))
    cfg = load_config(
        None,
        [
            f"model.name_or_path={tiny_model('gpt_bigcode')}",
            "method.name=prefix",  # refuses gradient checkpointing; virtual tokens refuse packing
            "train.gradient_checkpointing=true",
            "data.packing=true",
            "train.mixed_precision=fp16",  # needs a GPU
            "data.max_length=100000",  # above the model's 512 positions
            f"data.train.0.source={tmp_path / 'absent.jsonl'}",
        ],
    )
    with pytest.raises(CodepeftError) as err:
        train(cfg, tmp_path / "run")
    text = str(err.value)
    assert text.startswith("the run config has 5 problems")
    for part in ("gradient checkpointing", "data.packing cannot be used with prefix", "fp16 needs a GPU",
                 "max_length=100000 is above the 512", "data file not found"):  # fmt: skip
        assert part in text, part
    assert not loaded and not (tmp_path / "run").exists()  # nothing loaded, nothing written


def test_study_dry_run_lists_every_cell_of_a_pack_and_runs_nothing(tmp_path, monkeypatch):
    from pathlib import Path

    from typer.testing import CliRunner

    from codepeft.cli import app

    monkeypatch.chdir(tmp_path)
    pack = Path(__file__).parents[1] / "configs" / "replicate" / "astraios.yaml"
    result = CliRunner().invoke(app, ["study", str(pack), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "28 cells" in result.output and "starcoderbase-15b/Parallel/guanaco-commits/seed0" in result.output
    assert "quantization=8bit" in result.output
    assert not (tmp_path / "studies").exists()
