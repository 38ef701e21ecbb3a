"""The config schema: every key ftkit knows, its type and its default (the one place defaults live).

conf/*.yaml choose among these and fill the recipe; a recipe with fields of its own declares its schema in its
module (SCHEMA), starting from DataConfig here. Nothing here imports anything heavy, or any other ftkit module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in reports
    path: str = MISSING  # local HF folder, hub id, .gguf file, or pkg://<python package> holding gguf_file
    gguf_file: str | None = None  # GGUF file name inside `path` (folder, package or hub repo)
    revision: str | None = None  # a hub branch, tag or commit sha (a commit makes the download reproducible)
    # auto: float32 on CPU; on a CUDA GPU bfloat16 where it has it (compute capability 8+), else float16
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    # auto: flash_attention_2 on a CUDA GPU with flash-attn installed, else sdpa; None lets transformers choose
    attn_implementation: str | None = None
    max_length: int = 512
    trust_remote_code: bool = False
    lora_target_modules: Any = "all-linear"  # what peft.target_modules adapts unless it is set: all-linear or names
    gated: bool = False  # the hub licence must be accepted on the model's page (then HF_TOKEN set) to download it
    parameters_b: float | None = None  # size in billions of parameters: trainer=gpu checkpoints activations from 7
    # The model's config.json essentials (model_type and sizes): a dry run plans with them where the hub is not
    # reachable; tests build tiny models of the same architecture from them
    architecture: dict[str, Any] = field(default_factory=dict)  # empty: not given


@dataclass
class PeftConfig:
    method: str = "lora"  # lora | qlora (4-bit base + LoRA) | dora | none (full fine-tuning)
    r: int = 16  # adapter rank: higher can learn more, at more memory and time
    alpha: int = 32  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on every LoRA input: regularises long runs, slows each CPU step
    # "all-linear" or a list of module names, e.g. [q_proj, v_proj]; by default the model preset's choice
    target_modules: Any = "${model.lora_target_modules}"
    # Adapt only the last N transformer layers (None: all): backward stops at the lowest adapted one, so each step
    # is cheaper and the model learns less per step (PEFT's layers_to_transform)
    top_layers: int | None = None
    bias: str = "none"  # none | all | lora_only: which biases train
    # LoRA+ (PEFT's create_loraplus_optimizer): the B matrices learn this many times faster than the A matrices
    # (None: one learning rate for both)
    loraplus_lr_ratio: float | None = None
    # QLoRA only: how bitsandbytes quantizes the frozen base weights
    quant_type: str = "nf4"  # nf4 (4-bit NormalFloat, the QLoRA paper's) | fp4
    double_quant: bool = True  # quantize the per-block scales too: a little less memory per weight
    compute_dtype: str = "float32"  # what 4-bit weights are de-quantized to per matmul: float32 | bfloat16 | float16


@dataclass
class LauncherConfig:
    """How `ftkit train` runs: in this process (local), under `accelerate launch`, or as a SLURM job."""

    name: str = "local"  # local | ddp | deepspeed_zero2[_offload] | deepspeed_zero3[_offload] | fsdp | slurm
    num_processes: int = 1  # processes per machine (per node under slurm): GPUs, or CPU ranks
    config_file: str | None = None  # accelerate config; None: ftkit/launch/configs/accelerate/<name or backend>.yaml
    main_process_port: int | None = None  # None: a free port
    # CPU training: threads per process; None: the cores this process may use, shared among the ranks it starts,
    # and fewer while other processes keep cores busy (looked at every 2 s of training); a number fixes the count
    cpu_threads: int | None = None
    # None: OpenMP's default (spin a while, then sleep); passive: a waiting thread sleeps at once (less lost beside a
    # busy process, but measured 2x slower per step on an idle 2-core machine); active: it always spins
    omp_wait_policy: str | None = None
    # slurm only
    backend: str = "ddp"  # what runs on each node: ddp | deepspeed_zero2[_offload] | deepspeed_zero3[_offload] | fsdp
    nodes: int = 1
    gpus_per_node: int = 0  # 0: no GPU request (a CPU partition)
    cpus_per_task: int | None = None  # CPUs for each node's launcher task and all its ranks; None: the partition's
    mem: str | None = None  # memory per node, e.g. 64G; None: the partition's default
    time: str = "01:00:00"  # the job's time limit
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    job_name: str = "ftkit"
    env_setup: list[str] = field(default_factory=list)  # shell lines run first, e.g. "source .venv/bin/activate"
    sbatch_extra: list[str] = field(default_factory=list)  # more #SBATCH options, e.g. "--qos=high"
    submit: bool = True  # false: only write the sbatch script into the run directory


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb | tensorboard (ftkit.reporting.tracking)
    project: str = "ftkit"  # wandb only, as the rest
    entity: str | None = None  # team or user; None: your default entity
    group: str | None = None  # None: the sweep directory under -m, no group for a single run
    run_name: str | None = None  # None: <recipe>-<run dir name>
    tags: list[str] = field(default_factory=list)  # extra tags besides recipe, model and peft method
    mode: str = "auto"  # auto (online with credentials, offline without) | online | offline | disabled


@dataclass
class EvaluateConfig:
    base: bool = True  # also score the base model, for the before/after comparison
    batch_size: int = 16
    max_examples: int | None = None  # cap the test split (quick looks); None scores all of it
    validation: bool | None = None  # also score the validation split (a sweep's objective); None: only in sweeps
    # Classification: baselines trained on the same training split and scored on the same test split
    baselines: list[str] = field(default_factory=lambda: ["majority", "tfidf"])  # majority | tfidf; [] for none
    # Resamples of the test split for the 95% intervals and the paired bootstrap; 0: no intervals
    bootstrap_samples: int = 1000


@dataclass
class EarlyStoppingConfig:
    """Stop when the recipe's primary metric on the validation split stops improving (checked at each evaluation).

    The best checkpoint is then loaded, evaluated on the test split and saved as the run's adapter.
    """

    patience: int | None = None  # evaluations without improvement before training stops; None: off
    threshold: float = 0.0  # the least improvement of the metric that counts as one


@dataclass
class DataChecksConfig:
    """What to do with training data that is suspect (checked before training; see ftkit.training.data_checks)."""

    duplicates: str = "refuse"  # identical training examples: refuse | drop (keep the first) | keep
    too_long: str = "refuse"  # training examples over model.max_length tokens: refuse | truncate | drop
    # validation/test records whose input also occurs in training: refuse | drop (from validation/test) | keep
    # (a published split run as published); metrics.json records how many were dropped or kept
    leakage: str = "refuse"


@dataclass
class DataConfig:
    train: str = MISSING  # JSONL or CSV path, or bundled:<recipe>/<file>
    validation: str | None = None
    test: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    max_train_examples: int | None = None
    # One file split here: [train, validation, test] fractions of recipe.data.train, stratified (by label, or by
    # the entity types a sentence holds), seeded; validation and test must then be null. null: the files above.
    split: list[float] | None = None
    split_seed: int = 42  # which record lands in which split or fold; the run directory records the outcome
    # k-fold cross-validation (`ftkit cv folds=5` sets both): recipe.data.train in `folds` stratified folds, fold
    # number `fold` (0-based) is the test split and the others train
    folds: int | None = None
    fold: int | None = None


@dataclass
class DataPrepConfig:
    """What is done to the training split before training; validation and test are never changed."""

    # Classification only. oversample: repeat small classes' records up to the largest class; undersample: drop
    # large classes' records down to the smallest; class_weights: weight each example's loss by its class's
    # inverse frequency (cost-sensitive learning, nothing repeated or dropped)
    balance: str = "none"  # none | oversample | undersample | class_weights
    # eda: swap, delete and insert words, replace synonyms; paraphrase: the base model rewrites each input
    augment: str = "none"  # none | eda | paraphrase
    augment_factor: float = 1.0  # new records per training record (0.5: one for every second record)
    synonyms: str | None = None  # eda: a file of synonym groups, one comma-separated group per line; None: none
    seed: int = 42  # which records are repeated, dropped or augmented, and how


@dataclass
class FtkitConfig:
    recipe: Any = MISSING  # typed by the recipe's own schema (see conf/recipe/*.yaml defaults)
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    trainer: dict[str, Any] = field(default_factory=dict)  # any TRL SFTConfig field, checked in check()
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    data_checks: DataChecksConfig = field(default_factory=DataChecksConfig)
    data: DataPrepConfig = field(default_factory=DataPrepConfig)
    cache_preprocessing: bool = True  # reuse TRL's tokenized data across runs (ftkit.training.preprocess_cache)
    # false: a new run | true: continue the latest unfinished run of this config | <checkpoint or run directory>
    resume: Any = False
    dry_run: bool = False  # print config, launch command, data statistics, parameters and memory; then stop
