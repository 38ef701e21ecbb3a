"""recipe=preference (DPO): records and their errors, config rules, the reference being the starting policy, the
SFT -> DPO chain through the real `ftkit train` / `ftkit eval` / `ftkit serve`, and resume after SIGKILL."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ftkit.config.checks import check
from ftkit.config.compose import compose
from ftkit.config.overrides import rewrite_trainer_overrides
from ftkit.errors import FtkitError
from ftkit.recipes import get_recipe_class
from ftkit.reporting import statistics
from ftkit.tasks.preference import LOSS_TYPES
from tests.conftest import tiny_overrides
from tests.test_resume import adapter, assert_same_weights, ftkit
from tests.test_serve import FTKIT, free_port, ftkit_env

PAIR = {"prompt": "Write the report.", "chosen": "Asset: M-1\nLine: 2", "rejected": "Asset: M-9"}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def composed(*overrides: str) -> Any:
    cfg = compose(rewrite_trainer_overrides(["recipe=preference", *overrides]))
    check(cfg)
    return cfg


def make_recipe(*overrides: str) -> Any:
    return get_recipe_class("preference")(composed(*overrides).recipe)


def preference_overrides(model: Path, run_dir: Path, *extra: str) -> list[str]:
    capped = {"recipe.data.max_train_examples", "evaluate.max_examples", "trainer.per_device_train_batch_size"}
    base = [o for o in tiny_overrides(model, run_dir) if o.split("=")[0] not in capped]
    return [
        "recipe=preference",
        *base,
        "recipe.data.max_train_examples=32",
        "evaluate.max_examples=12",
        "trainer.per_device_train_batch_size=4",
        "trainer.learning_rate=5e-3",
        "recipe.max_new_tokens=8",
        "peft.top_layers=null",  # the tiny model has 2 layers
        *extra,
    ]


# ---- what TRL has: the lists ftkit keeps without importing it ------------------------------------------------
def test_loss_types_are_trls():
    from trl.trainer.dpo_trainer import DPOTrainer

    source = inspect.getsource(DPOTrainer._compute_loss)
    assert set(LOSS_TYPES) == set(re.findall(r'loss_type == "(\w+)"', source))


def test_sft_only_fields_are_those_dpoconfig_lacks():
    from trl import DPOConfig, SFTConfig

    from ftkit.config.trainer_fields import SFT_ONLY

    names = {f.name for f in dataclasses.fields(SFTConfig)} - {f.name for f in dataclasses.fields(DPOConfig)}
    assert set(SFT_ONLY) == names


# ---- records -------------------------------------------------------------------------------------------------
def test_bundled_pairs_read_and_the_trainer_profile_is_chosen():
    cfg = composed()
    assert cfg.trainer.learning_rate == 5e-4 and cfg.trainer.train_sampling_strategy == "random"
    assert composed("trainer=gpu").trainer.learning_rate == 2e-4  # the command line's trainer wins
    recipe = get_recipe_class("preference")(cfg.recipe)
    splits = {name: recipe.load_split(name) for name in ("train", "validation", "test")}
    assert [len(records) for records in splits.values()] == [120, 40, 120]
    first = splits["train"][0]
    assert first["prompt"][0]["role"] == "user" and first["chosen"] != first["rejected"]
    example = recipe.to_example(first)
    assert example["prompt"][0] == {"role": "system", "content": cfg.recipe.system_prompt}
    assert example["chosen"] == [{"role": "assistant", "content": first["chosen"]}]


def test_the_conversational_and_implicit_forms_read_as_the_standard_one(tmp_path):
    user = {"role": "user", "content": PAIR["prompt"]}
    records = [
        PAIR,
        {
            "prompt": [user],
            "chosen": [{"role": "assistant", "content": PAIR["chosen"]}],
            "rejected": [{"role": "assistant", "content": PAIR["rejected"]}],
        },
        {
            "chosen": [user, {"role": "assistant", "content": PAIR["chosen"]}],
            "rejected": [user, {"role": "assistant", "content": PAIR["rejected"]}],
        },
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    pairs = make_recipe(f"recipe.data.train={path}").load_split("train")
    assert [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs] == [
        {"prompt": [user], "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    ] * 3
    assert [p["source"] for p in pairs] == [f"{path}:{line}" for line in (1, 2, 3)]


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"prompt": "Write.", "chosen": "A"}, "no 'rejected' field"),
        ({"prompt": "Write.", "rejected": "A"}, "no 'chosen' field"),
        ({"prompt": "Write.", "chosen": "Same.", "rejected": " Same. "}, "the same text"),
        ({"prompt": "Write.", "chosen": "", "rejected": "B"}, "field 'chosen' is empty"),
        ({"prompt": "", "chosen": "A", "rejected": "B"}, "field 'prompt' is empty"),
        ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "A", "rejected": "B"}, "ends on a 'assistant'"),
        ({"prompt": "Write.", "chosen": [{"role": "user", "content": "A"}], "rejected": "B"}, "one assistant message"),
        ({"chosen": [{"role": "user", "content": "a"}], "rejected": [{"role": "user", "content": "b"}]}, "share"),
        ({"prompt": "Write.", "chosen": 3, "rejected": "B"}, "text or a non-empty list"),
    ],
)
def test_bad_pairs_are_refused_with_file_and_line(bad, fragment, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR, bad])
    recipe = make_recipe(f"recipe.data.train={path}")
    with pytest.raises(FtkitError) as error:
        recipe.load_split("train")
    assert error.value.where == f"{path}:2"
    assert fragment in error.value.problem and error.value.fix


def test_a_bad_pair_exits_2_through_the_cli(run_ftkit, tiny_model, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [PAIR, {**PAIR, "rejected": PAIR["chosen"]}])
    result = run_ftkit("train", *preference_overrides(tiny_model, tmp_path / "run", f"recipe.data.train={path}"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{path}:2: the chosen and rejected answers are the same text" in result.stderr
    assert "Fix:" in result.stderr and "Traceback" not in result.stderr


# ---- config rules --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["recipe.beta=0"], "recipe.beta must be above 0"),
        (["recipe.loss_type=sigmod"], "did you mean 'sigmoid'"),
        (["recipe.loss_type=[sigmoid,sft]", "recipe.loss_weights=[1.0]"], "one weight of 0 or more per loss"),
        (["recipe.max_new_tokens=0"], "recipe.max_new_tokens must be at least 1"),
        (["peft=none"], "full fine-tuning has no adapter"),
        (["trainer.packing=true"], "trainer.packing is an SFT setting"),
        (["trainer.train_sampling_strategy=group_by_length"], "a preference pair is two sequences"),
        (["data.balance=oversample"], "needs a label per record"),
        (["recipe.init_from=no/such/run"], "is not a finished ftkit run"),
    ],
)
def test_config_mistakes_are_refused(overrides, fragment):
    with pytest.raises(FtkitError) as error:
        composed(*overrides)
    assert fragment in str(error.value)


def finished_run(folder: Path, model_path: str, init_from: str | None = None) -> Path:
    """The files that make a folder a finished run, as ftkit writes them (an adapter of a run of model_path)."""
    import torch
    from safetensors.torch import save_file

    (folder / "adapter").mkdir(parents=True)
    adapter_config = {"peft_type": "LORA", "base_model_name_or_path": model_path}
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_config))
    save_file({"lora_A": torch.zeros(1)}, folder / "adapter" / "adapter_model.safetensors")
    config = {"recipe": {"name": "report", "init_from": init_from}, "model": {"path": model_path}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "overrides.yaml").write_text("[]\n")
    metrics = {"finetuned": {"rouge_l": 0.5}, "train": {}, "primary_metric": "rouge_l"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_init_from_a_run_of_another_model_or_in_a_circle_is_refused(tmp_path):
    run = finished_run(tmp_path / "sft", "some/other-model")
    with pytest.raises(FtkitError) as error:
        composed(f"recipe.init_from={run}")
    assert "trained an adapter for model.path='some/other-model'" in error.value.problem
    first = finished_run(tmp_path / "a", "x", init_from=str(tmp_path / "b"))
    finished_run(tmp_path / "b", "x", init_from=str(first))
    with pytest.raises(FtkitError) as error:
        composed(f"recipe.init_from={first}")
    assert "in a circle" in error.value.problem


# ---- the reference is the starting policy --------------------------------------------------------------------
def test_the_reference_is_the_starting_policy_so_every_margin_starts_at_zero(tiny_model):
    """Scored by the recipe and by TRL's own DPO loss, before any step: rewards 0, loss log 2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftkit.training.callbacks import StopOnSignal
    from ftkit.training.models import adapter_config
    from ftkit.training.run import build_trainer, training_arguments

    cfg = composed(*(o for o in preference_overrides(tiny_model, Path("unused")) if not o.startswith("hydra.")))
    recipe = get_recipe_class("preference")(cfg.recipe)
    records = recipe.load_split("test")[:6]
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = recipe.score(recipe.predict(model, tokenizer, records, 4), records)
    assert base["reward_margin"] == 0 and base["preference_accuracy"] == 0.5  # a tie counts one half
    assert adapter_config(cfg.peft, model) is not None

    splits = {"train": recipe.load_split("train")[:8], "validation": records, "test": records}
    args = training_arguments(cfg, recipe, Path("unused-run-dir"))
    args.report_to = []
    trainer = build_trainer(cfg, args, recipe, model, tokenizer, splits, StopOnSignal())
    evaluated = trainer.evaluate()
    assert evaluated["eval_rewards/margins"] == 0 and evaluated["eval_loss"] == pytest.approx(math.log(2))
    # The same through the recipe on the adapter-wrapped policy (the adapter starts as the identity).
    wrapped = recipe.score(recipe.predict(trainer.model, tokenizer, records, 4), records)
    assert wrapped["reward_margin"] == 0 and wrapped["likelihood_accuracy"] == base["likelihood_accuracy"]


def test_paired_bootstrap_of_a_mean_tells_a_real_gain_from_none():
    same = statistics.paired_bootstrap_mean([1, 0, 0.5, 1], [1, 0, 0.5, 1], 200, 0, "preference_accuracy")
    assert same["difference"] == 0 and same["p_value"] == 1 and not same["significant"]
    better = statistics.paired_bootstrap_mean([1.0] * 40, [0.5] * 40, 200, 0, "preference_accuracy")
    assert better["difference"] == 0.5 and better["interval"] == [0.5, 0.5] and better["significant"]
    summary = statistics.mean_uncertainty(
        {"finetuned": {"preference_accuracy": [1, 1, 0, 1]}, "base": {"preference_accuracy": [0.5] * 4}},
        "preference_accuracy",
        100,
        0,
    )
    assert summary["points_per_example"] == {"preference_accuracy": 25.0}
    low, high = summary["intervals"]["finetuned"]["preference_accuracy"]
    assert 0 <= low <= 0.75 <= high <= 1 and summary["intervals"]["base"]["preference_accuracy"] == [0.5, 0.5]


# ---- through the CLI: SFT -> DPO, eval, resume ---------------------------------------------------------------
def test_sft_then_dpo_is_two_commands_and_eval_scores_the_chain_again(run_ftkit, tiny_model, tmp_path):
    sft_dir, dpo_dir = tmp_path / "sft", tmp_path / "dpo"
    sft = [
        "recipe=report",
        *(o for o in tiny_overrides(tiny_model, sft_dir) if not o.startswith("recipe.data")),
        "recipe.data.max_train_examples=24",
        "evaluate.max_examples=4",
        "recipe.max_new_tokens=8",
        "peft.top_layers=null",
        "trainer.learning_rate=5e-3",
    ]
    assert (result := run_ftkit("train", *sft)).returncode == 0, result.stderr[-3000:]
    # early stopping watches the recipe's own validation metric, as for SFT recipes
    dpo = preference_overrides(
        tiny_model, dpo_dir, f"recipe.init_from={sft_dir}", "trainer.num_train_epochs=2", "early_stopping.patience=3"
    )
    result = run_ftkit("train", *dpo)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Merged the adapter of {sft_dir}" in (dpo_dir / "train.log").read_text()

    metrics = json.loads((dpo_dir / "metrics.json").read_text())
    assert metrics["primary_metric"] == "preference_accuracy"
    base, tuned = metrics["base"], metrics["finetuned"]
    # The starting point (the SFT model) is its own reference: every reward 0, every pair a tie.
    assert base["reward_margin"] == 0 and base["preference_accuracy"] == 0.5 and base["examples"] == 12
    assert tuned["reward_margin"] > 0, tuned  # trained to rank the chosen answers up
    assert 0 <= metrics["train"]["best_metric"] <= 1  # eval_preference_accuracy, scored at each epoch
    assert 0 <= tuned["rouge_l"] <= 1 and set(metrics["uncertainty"]["paired_tests"]) == {"base"}
    report = (dpo_dir / "report.md").read_text()
    assert "| fine-tuned vs | test | preference_accuracy difference |" in report
    predictions = [json.loads(line) for line in (dpo_dir / "predictions" / "finetuned.jsonl").open()]
    assert len(predictions) == 12 and all(isinstance(p["generation"], str) for p in predictions)

    # ftkit eval loads base + the SFT run merged + the DPO adapter, and scores what the run scored.
    out = tmp_path / "eval"
    evaluated = run_ftkit("eval", f"run={dpo_dir}", f"out={out}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scores = json.loads((out / "metrics.json").read_text())["metrics"]
    assert scores["reward_margin"] == pytest.approx(tuned["reward_margin"], rel=1e-4, abs=1e-6)
    assert scores["preference_accuracy"] == tuned["preference_accuracy"]

    # ftkit serve answers chat with the same chain: the SFT run merged, the DPO adapter on top.
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [FTKIT, "serve", "--run", f"dpo={dpo_dir}", "--port", str(port)],
            cwd=tmp_path,
            env=ftkit_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while not _healthy(url):
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            answer = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": "dpo", "messages": [{"role": "user", "content": PAIR["prompt"]}], "max_tokens": 8},
                timeout=120,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["choices"][0]["message"]["content"], str)
    assert f"Merged the adapter of {sft_dir}" in log.read_text()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_sigkill_then_resume_matches_an_uninterrupted_dpo_run(tiny_model, tmp_path):
    def dpo(*extra: str) -> list[str]:
        settings = [
            "evaluate.base=false",
            "recipe.generate=false",
            "trainer.num_train_epochs=2",
            "trainer.eval_strategy=no",
            "trainer.save_strategy=steps",
            "trainer.save_steps=4",
            "trainer.save_total_limit=2",
            # a fixed thread count: following the load changes the order of float sums, so the weights by 1e-7
            "launcher.cpu_threads=2",
        ]
        base = preference_overrides(tiny_model, Path("unused"), *settings)
        return [*(o for o in base if not o.startswith("hydra.")), *extra]

    whole = ftkit(tmp_path, "train", *dpo(f"hydra.run.dir={tmp_path / 'whole'}"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["train"]["global_step"] == 16
    killed = ftkit(tmp_path, "train", *dpo(), signal_at=(10, "SIGKILL"))
    assert killed.returncode == -9, killed.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "outputs" / "preference").glob("*/*/config.yaml")]
    resumed = ftkit(tmp_path, "train", *dpo(), "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["resumed_from_step"] == 8
    assert_same_weights(adapter(run_dir / "adapter"), adapter(tmp_path / "whole" / "adapter"))


def test_export_merges_the_chain_and_refuses_the_adapter_alone(run_ftkit, tiny_model, tmp_path):
    """The exported folder scores a pair as the run did: base + the SFT run + the DPO adapter, merged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sft_dir, dpo_dir = tmp_path / "sft", tmp_path / "dpo"
    sft = preference_overrides(tiny_model, sft_dir, "evaluate.base=false", "recipe.generate=false")
    assert (result := run_ftkit("train", *sft)).returncode == 0, result.stderr[-3000:]  # DPO from the base
    dpo = preference_overrides(tiny_model, dpo_dir, f"recipe.init_from={sft_dir}", "evaluate.base=false")
    assert (result := run_ftkit("train", *dpo)).returncode == 0, result.stderr[-3000:]  # DPO from that DPO run

    alone = run_ftkit("export", f"run={dpo_dir}", "merge=false", f"out={tmp_path / 'adapter'}")
    assert alone.returncode == 2 and "the adapter alone does not work on the plain base" in alone.stderr
    exported = run_ftkit("export", f"run={dpo_dir}", f"out={tmp_path / 'merged'}")
    assert exported.returncode == 0, exported.stderr[-3000:]

    recipe = make_recipe(*(o for o in dpo if not o.startswith(("hydra.", "recipe="))))
    record = recipe.load_split("test")[0]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    (scored,) = recipe.predict(model, tokenizer, [record], 1)
    first = json.loads((dpo_dir / "predictions" / "finetuned.jsonl").open().readline())
    assert scored["chosen_logp"] == pytest.approx(first["chosen_logp"], abs=1e-3)
    assert scored["rejected_logp"] == pytest.approx(first["rejected_logp"], abs=1e-3)


@pytest.mark.parametrize("launcher", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_dpo_on_two_cpu_ranks(launcher, run_ftkit, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    overrides = preference_overrides(
        tiny_model, run_dir, f"launcher={launcher}", "launcher.num_processes=2", "evaluate.base=false"
    )
    result = run_ftkit("train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["global_step"] == 4  # 32 pairs, 4 per rank per step, 2 ranks
    assert metrics["finetuned"]["examples"] == 12 and (run_dir / "adapter" / "adapter_model.safetensors").is_file()
