"""sft_instruct: LIMA-style instruction tuning on chat data, scored by generating answers to held-out prompts.

Supports
  - Four record formats (ftkit.tasks.chat_formats), detected per file from its first record's keys, or forced with
    recipe.format=alpaca|sharegpt|messages|prompt_completion (default auto): alpaca instruction/input/output,
    ShareGPT conversations (human/gpt/system), messages (role/content, multi-turn) and prompt/completion records.
  - A file per split or a list of files (recipe.data.train=[a.jsonl,b.jsonl]), each in its own format. The files
    of a split are interleaved in proportion, so a cap (recipe.data.max_train_examples, evaluate.max_examples)
    keeps every file's share. Bundled data: bundled:sft_instruct/{train,validation,test}_{alpaca,chat}.jsonl.
  - The model's own chat template; recipe.system_prompt adds a system turn to records that have none.
  - Loss on assistant turns only, every one of them, end-of-turn token included. A conversation with k assistant
    turns trains as k prompt/completion examples (the conversation so far -> that turn), so TRL's completion-only
    loss covers exactly what the chat template renders for each assistant turn. TRL's assistant_only_loss is not
    used: it needs {% generation %} markers, and for templates it cannot patch (SmolLM2's ChatML among them)
    SFTTrainer raises ValueError. recipe.data.max_train_examples caps records, before this expansion.
  - Metrics on the test split, for the final assistant turn of each record: ROUGE-L (primary), BLEU and
    perplexity (ftkit.tasks.text_metrics), from greedy generations (ftkit.tasks.generation, recipe.max_new_tokens) and a
    teacher-forced pass over the reference. ROUGE-L is primary because it scores what the model actually
    writes, in 0..1, and stays informative on short answers where 4-gram BLEU is often 0; perplexity only
    scores the reference, so a model can lower it and still answer badly.

Raises FtkitError (exit 2) for
  - recipe.format outside auto|alpaca|sharegpt|messages|prompt_completion, recipe.max_new_tokens < 1, or a
    recipe.data.<split> that is neither a path nor a list of paths;
  - a record whose keys name no format, or that does not fit its file's format: missing or empty fields, turns
    that are not objects, unknown roles, turns out of order, no final assistant turn (file:line given).
"""

from __future__ import annotations

from ftkit.tasks.instruct import InstructRecipeConfig, InstructTask


class InstructRecipe(InstructTask):
    """LIMA-style instruction tuning on the bundled alpaca and chat files by default (conf/recipe/sft_instruct.yaml)."""


SCHEMA = InstructRecipeConfig
RECIPE = InstructRecipe
