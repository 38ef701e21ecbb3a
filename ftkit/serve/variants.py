"""The served variants: one base model loaded once, each run's adapter on it by name, and weighted routing.

Every run is composed from its own overrides (ftkit.config.compose.run_config), so each variant keeps its
recipe's prompt, labels and entity types; what a variant answers besides chat is what its recipe serves
(Recipe.serves). Adapters share one base in memory (peft's load_adapter / set_adapter), which is why every run
must name the same base model; a peft=none run saved a whole model and can only be served alone. Routing: a
request naming a model gets it; one naming none is routed by the variants' weights, among those that can answer
that kind of request, with the draw taken from a hash of `user` when given, so a user stays on one variant for as
long as the weights stay the same.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from ftkit.errors import FtkitError
from ftkit.run_dir import RunDir
from ftkit.serve.options import RunSpec
from ftkit.serve.protocol import ApiError

log = logging.getLogger("ftkit")


@dataclass
class Variant:
    name: str
    run_dir: str
    weight: float
    recipe: Any
    recipe_name: str
    adapter: str | None  # the peft adapter name, None for a peft=none run's whole model
    kinds: tuple[str, ...]
    created: int = 0


@dataclass
class Served:
    model: Any
    tokenizer: Any
    variants: dict[str, Variant] = field(default_factory=dict)
    base_name: str = ""


def _same_base(cfg: Any) -> tuple[Any, ...]:
    """What must match for adapters to share one base: the model, 4 bits or not, and the runs merged into it first
    (a preference run's recipe.init_from chain)."""
    merged_in = tuple(str(run.path.resolve()) for run in RunDir.init_chain(cfg.recipe.get("init_from")))
    return (cfg.model.path, cfg.model.gguf_file, cfg.model.revision, cfg.peft.method == "qlora", merged_in)


def load(runs: list[RunSpec]) -> Served:
    """Compose every run's config, check they share one base, load it once and put each adapter on it."""
    import os

    from ftkit.config.compose import run_config
    from ftkit.recipes import get_recipe_class

    finished = [RunDir.finished(run.run_dir, where="--run", command="ftkit serve") for run in runs]
    configs = [run_config(run_dir, []) for run_dir in finished]
    first = configs[0]
    for run, cfg in zip(runs[1:], configs[1:], strict=True):
        if _same_base(cfg) != _same_base(first):
            raise FtkitError(
                f"{run.run_dir} was trained on base model {cfg.model.path} ({cfg.peft.method}, started from "
                f"{cfg.recipe.get('init_from')}), and {runs[0].run_dir} on {first.model.path} ({first.peft.method}, "
                f"started from {first.recipe.get('init_from')}); served adapters share one base",
                "serve runs of one base model (all QLoRA or none, and started from the same run) together, and others "
                "from a second server",
                where="--run",
            )
    whole = [run for run, run_dir in zip(runs, finished, strict=True) if run_dir.trained_weights() == run_dir.model_dir]
    if whole and len(runs) > 1:
        raise FtkitError(
            f"{whole[0].run_dir} is a peft=none run (a whole saved model), which cannot share a base with others",
            "serve it on its own: ftkit serve --run <that run dir>",
            where="--run",
        )
    names = [run.name or cfg.recipe.name for run, cfg in zip(runs, configs, strict=True)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FtkitError(
            f"two runs would both be served as {repeated[0]!r}",
            "name them: --run a=<run dir> --run b=<other run dir>",
            where="--run",
        )

    if whole:
        from ftkit.training.models import load_trained

        model, tokenizer = load_trained(first, finished[0])
    else:
        from peft import PeftModel

        from ftkit.training.models import load_model_and_tokenizer, merge_init_runs

        model, tokenizer = load_model_and_tokenizer(first.model, first.peft)
        model = merge_init_runs(model, first)  # preference runs: the run they started from, merged in
        for index, (run_dir, name) in enumerate(zip(finished, names, strict=True)):
            adapter = str(run_dir.trained_weights())
            if index == 0:
                model = PeftModel.from_pretrained(model, adapter, adapter_name=name)
            else:
                model.load_adapter(adapter, adapter_name=name)
        model.eval()
    served = Served(model=model, tokenizer=tokenizer, base_name=str(first.model.name))
    for run, name, cfg in zip(runs, names, configs, strict=True):
        recipe = get_recipe_class(cfg.recipe.name)(cfg.recipe)
        served.variants[name] = Variant(
            name=name,
            run_dir=str(run.run_dir),
            weight=run.weight,
            recipe=recipe,
            recipe_name=cfg.recipe.name,
            adapter=None if whole else name,
            kinds=("chat", *recipe.serves),
            created=int(os.path.getmtime(run.run_dir)),
        )
        log.info("serving %s (%s, weight %g) from %s", name, cfg.recipe.name, run.weight, run.run_dir)
    return served


class Router:
    """Picks the variant for a request: the named one, else by weight (sticky per user id)."""

    def __init__(self, variants: dict[str, Variant]) -> None:
        self.variants = variants

    def pick(self, kind: str, model: str | None, user: str | None) -> Variant:
        if model is not None:
            variant = self.variants.get(model)
            if variant is None:
                raise ApiError(
                    404,
                    f"The model '{model}' does not exist; served: {', '.join(self.variants)}",
                    param="model",
                    code="model_not_found",
                )
            if kind not in variant.kinds:
                raise ApiError(
                    400,
                    f"The model '{model}' ({variant.recipe_name} recipe) does not support {kind}",
                    param="model",
                    code="unsupported_model",
                )
            return variant
        capable = [v for v in self.variants.values() if kind in v.kinds]
        if not capable:
            raise ApiError(400, f"No served model supports {kind}", param="model", code="unsupported_model")
        weights = [v.weight for v in capable]
        if sum(weights) <= 0:  # only weight-0 variants can do this: share between them
            weights = [1.0] * len(capable)
        return capable[_index(weights, _draw(user))]


def _draw(user: str | None) -> float:
    """A number in [0, 1): from the user id's hash (the same user, the same draw), else random."""
    if user is None:
        return random.random()
    digest = hashlib.sha256(user.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _index(weights: list[float], draw: float) -> int:
    total, point = sum(weights), 0.0
    for index, weight in enumerate(weights):
        point += weight / total
        if draw < point:
            return index
    return max(i for i, w in enumerate(weights) if w > 0)
