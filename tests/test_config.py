"""Composition and checks: the schema, the trainer field list, and exit-2 errors without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from ftkit.config import trainer_fields


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_cfg_job_prints_composed_config_without_torch(run_ftkit, tmp_path):
    result = run_ftkit("train", "recipe=tickets", "peft.r=8", "trainer.learning_rate=1e-4", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["peft"]["r"] == 8
    assert cfg["trainer"]["learning_rate"] == 1e-4
    assert cfg["recipe"]["name"] == "tickets"
    assert set(cfg) >= {"recipe", "model", "peft", "trainer", "launcher", "logger"}
    assert not (tmp_path / "outputs").exists()


def test_composing_and_checking_imports_no_torch():
    code = (
        "import sys; from ftkit.config.compose import compose; from ftkit.config.checks import check;"
        "check(compose(['peft.r=4']));"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules];"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_lists_groups_and_options(run_ftkit):
    result = run_ftkit("train", "--help")
    assert result.returncode == 0
    for line in (
        "recipe: multitask, ner, preference, report, sentiment, sft_instruct, tickets",
        "model: gemma2_2b, gemma2_9b, llama3_1_8b, llama3_2_1b, llama3_2_3b, mistral_7b_v0_3, phi3_5_mini, "
        "qwen2_5_0_5b, qwen2_5_1_5b, qwen2_5_7b, qwen3_0_6b, qwen3_4b, qwen3_8b, smollm2_135m, smollm2_1_7b, "
        "smollm2_360m",
        "peft: dora, lora, none, qlora",
        "trainer: default, gpu, preference",
        "launcher: ddp, deepspeed_zero2, deepspeed_zero2_offload, deepspeed_zero3, deepspeed_zero3_offload, fsdp, "
        "local, slurm",
        "logger: none",
    ):
        assert line in result.stdout
    assert "schema" not in result.stdout.split("== Composed config")[0]


def test_any_sftconfig_field_is_accepted_without_plus(run_ftkit):
    result = run_ftkit("train", "trainer.weight_decay=0.05", "trainer.max_grad_norm=0.5", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    trainer = yaml.safe_load(result.stdout)["trainer"]
    assert trainer["weight_decay"] == 0.05 and trainer["max_grad_norm"] == 0.5


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("peft.rr=8", ["peft.rr", "did you mean 'r'"]),
        ("model.max_lenght=128", ["model.max_lenght", "did you mean 'max_length'"]),
        ("peft.r=abc", ["peft.r", "could not be converted to Integer"]),
        ("trainer.learning_rat=1e-4", ["trainer.learning_rat", "did you mean 'learning_rate'"]),
        ("trainer.num_train_epochs=many", ["trainer.num_train_epochs", "expects float"]),
        ("trainer.output_dir=/tmp/x", ["trainer.output_dir", "hydra.run.dir"]),
        ("recipe=tiket", ["no recipe called 'tiket'", "tickets"]),
        ("model.path=???", ["model.path", "not set"]),
        ("trainer.learning_rate=-1", ["trainer.learning_rate", "positive"]),
        ("trainer.per_device_train_batch_size=0", ["per_device_train_batch_size", "positive"]),
        ("peft.r=[", ["cannot parse the override"]),
        ("model.dtype=fp8", ["model.dtype", "float32"]),
        ("recipe.labels=[A,A]", ["repeats A"]),
    ],
)
def test_config_mistakes_exit_2_with_the_key_and_a_fix(run_ftkit, tmp_path, override, fragments):
    result = run_ftkit("train", override)
    assert_user_error(result, "Fix:", *fragments)
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run directory


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.padding_free=true"],  # the model's default attention: sdpa
        ["trainer.packing=true"],  # bfd packing is padding-free too
        ["trainer.padding_free=true", "model.attn_implementation=eager"],
        ["trainer.padding_free=true", "model.attn_implementation=flash_attention_2"],
        ["trainer.packing=true", "data_checks.too_long=truncate"],  # packing truncates: TRL keeps max_length
    ],
)
def test_padding_free_passes_the_checks_under_sdpa_eager_and_flash(overrides):
    from ftkit.config.checks import check
    from ftkit.config.compose import compose

    check(compose([f"++{o}" if o.startswith("trainer.") else o for o in overrides]))


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            ["trainer.padding_free=true", "model.attn_implementation=flex_attention"],
            ["trainer.padding_free", "verified under flash, sdpa, eager", "not flex_attention"],
        ),
        (
            ["trainer.padding_free=true", "data_checks.too_long=truncate"],
            ["data_checks.too_long", "does not truncate", "=drop"],
        ),
    ],
)
def test_padding_free_refusals(run_ftkit, tmp_path, overrides, fragments):
    result = run_ftkit("train", *overrides)
    assert_user_error(result, "Fix:", *fragments)
    assert not (tmp_path / "outputs").exists()


def test_debug_shows_the_traceback(run_ftkit):
    result = run_ftkit("train", "peft.rr=8", env={"FTKIT_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_trainer_field_list_matches_installed_trl():
    """Fails when TRL changes SFTConfig: regenerate with `python -m ftkit.config.trainer_fields`."""
    checked_in = json.loads(trainer_fields.FIELDS_FILE.read_text())
    assert trainer_fields.generate()["fields"] == checked_in["fields"]


def test_trainer_value_kinds():
    assert trainer_fields.check_value("learning_rate", 1) is None
    assert trainer_fields.check_value("learning_rate", "fast") is not None
    assert trainer_fields.check_value("bf16", None) is None
    assert trainer_fields.check_value("seed", 1.5) is not None


def test_renamed_trainer_fields_are_passed_under_the_current_name(tmp_path):
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns on every run):
    either name is accepted, TRL gets the current one, and no FutureWarning is raised."""
    import warnings

    from ftkit.config.compose import compose
    from ftkit.config.overrides import rewrite_trainer_overrides
    from ftkit.recipes import get_recipe_class
    from ftkit.training.run import training_arguments

    assert trainer_fields.current_names({"gradient_checkpointing": True, "seed": 1}) == {
        "activation_checkpointing": True,
        "seed": 1,
    }
    for overrides, expected in (([], False), (["trainer.gradient_checkpointing=true"], True)):
        cfg = compose(rewrite_trainer_overrides(overrides))
        assert trainer_fields.activation_checkpointing(cfg.trainer) is expected
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args = training_arguments(cfg, get_recipe_class(cfg.recipe.name)(cfg.recipe), tmp_path)
        assert args.activation_checkpointing is expected
        assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]


def test_padding_free_needs_flash_where_transformers_cannot_keep_packed_examples_apart(monkeypatch):
    from ftkit.config import checks
    from ftkit.config.compose import compose
    from ftkit.errors import FtkitError

    assert checks._transformers_finds_packed_sequences()  # the installed transformers can
    monkeypatch.setattr(checks, "_transformers_finds_packed_sequences", lambda: False)
    with pytest.raises(FtkitError, match="verified under flash attention.*not None.*flash_attention_2"):
        checks.check(compose(["++trainer.padding_free=true"]))
    checks.check(compose(["++trainer.padding_free=true", "model.attn_implementation=flash_attention_2"]))


@pytest.mark.parametrize(
    ("override", "problem", "fix"),
    [
        # an open mapping that is empty here: the key is added with '+'
        ("model.architecture.hidden_size=64", "model.architecture is empty here", "+model.architecture.hidden_size="),
        # a wrong key deep down is named at its first wrong part, with the names valid there
        ("model.nosuch.deep=1", "unknown config key 'model.nosuch'", "architecture, attn_implementation"),
        ("+model.nosuch=1", "trainer.*, model.architecture.*", "architecture, attn_implementation"),
    ],
)
def test_unknown_keys_name_their_first_wrong_part_and_the_way_to_add_one(override, problem, fix):
    from ftkit.config.compose import compose
    from ftkit.errors import FtkitError

    with pytest.raises(FtkitError) as error:
        compose([override])
    assert problem in error.value.problem and fix in error.value.fix


def test_an_added_model_architecture_field_is_kept():
    from ftkit.config.compose import compose

    assert compose(["+model.architecture.hidden_size=64"]).model.architecture.hidden_size == 64
