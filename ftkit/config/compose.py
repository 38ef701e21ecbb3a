"""Composing the config: Hydra's compose API over conf/ and the schema, with user mistakes turned into FtkitError.

`compose()` composes once with Hydra's compose API so that a bad key, type or value becomes an FtkitError (exit 2,
with the closest valid keys) instead of Hydra's exit 1; ftkit.config.checks then adds the rules that span fields.
Hydra's own run composes the same overrides again for the real run.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ftkit.config.schema import FtkitConfig
from ftkit.errors import FtkitError, closest
from ftkit.run_dir import RunDir

CONFIG_MODULE = "ftkit.conf"
PRIMARY = "train"


def register_schemas() -> None:
    if not OmegaConf.has_resolver("ftkit_groups"):
        OmegaConf.register_new_resolver("ftkit_groups", config_groups_help)
    if not OmegaConf.has_resolver("ftkit_log_file"):
        from ftkit.launch.ranks import log_file_name

        OmegaConf.register_new_resolver("ftkit_log_file", log_file_name)
    # For conf/trainer/gpu.yaml: checkpoint activations from a model size on, Liger kernels where installed.
    if not OmegaConf.has_resolver("ftkit_at_least"):
        OmegaConf.register_new_resolver("ftkit_at_least", lambda value, floor: value is not None and value >= floor)
    if not OmegaConf.has_resolver("ftkit_trainer_for"):  # conf/train.yaml: the trainer profile a recipe starts with
        from ftkit.recipes import trainer_profile

        OmegaConf.register_new_resolver("ftkit_trainer_for", trainer_profile)
    if not OmegaConf.has_resolver("ftkit_installed"):
        OmegaConf.register_new_resolver("ftkit_installed", package_installed)
    store = ConfigStore.instance()
    store.store(name="ftkit_schema", node=FtkitConfig)
    from ftkit.tasks.classification import ClassificationRecipeConfig

    store.store(group="schema/recipe", name="classification", node=ClassificationRecipeConfig)
    # A recipe with fields of its own declares SCHEMA in its module; its yaml then starts from
    # /schema/recipe/<name>. Recipe modules import nothing heavy, so this keeps composing fast.
    from ftkit.recipes import schemas

    for name, node in schemas().items():
        store.store(group="schema/recipe", name=name, node=node)


# The options the installed Hydra plugins register (they are not files in conf/).
HYDRA_PLUGIN_OPTIONS = {"hydra/sweeper": ["basic", "optuna"], "hydra/launcher": ["basic", "joblib", "submitit_slurm"]}


def config_groups_help() -> str:
    """The groups of conf/ and their options, for `ftkit train --help` (Hydra's list shows schemas too)."""
    from importlib import resources

    root = resources.files(CONFIG_MODULE)
    lines = []
    folders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_") and p.name != "hydra"]
    folders += [f"hydra/{p.name}" for p in root.joinpath("hydra").iterdir() if p.is_dir()]
    for group in sorted(folders):
        options = sorted(p.name[: -len(".yaml")] for p in root.joinpath(group).iterdir() if p.name.endswith(".yaml"))
        options += HYDRA_PLUGIN_OPTIONS.get(group, [])  # beside ftkit's presets in conf/hydra/<group>
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """Compose conf/train.yaml with overrides through Hydra's compose API; user mistakes -> FtkitError.

    with_hydra: also return the `hydra` node (run and sweep directories, sweeper, launcher), checked the same way.
    """
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    from ftkit.config.overrides import parse_overrides

    parsed = parse_overrides(overrides)
    for text, override in zip(overrides, parsed, strict=True):
        _check_override_shape(text, override)
    try:
        cfg = _hydra_compose(overrides, with_hydra)
    except MissingConfigException as error:
        raise _missing_option_error(error) from None
    except ConfigCompositionException as error:
        raise _composition_error(error, overrides) from None
    except (OmegaConfBaseException, ValueError, TypeError) as error:  # Hydra lets some of these through unwrapped
        raise _composition_error(error, overrides) from None
    _refuse_added_keys(overrides, parsed, cfg)
    return cfg


def _hydra_compose(overrides: list[str], with_hydra: bool) -> DictConfig:
    """Hydra's compose, its exceptions as they come (compose() turns them into FtkitErrors)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name=PRIMARY, overrides=overrides, return_hydra_config=with_hydra)
    finally:
        GlobalHydra.instance().clear()


def config_groups() -> list[str]:
    """The config groups a `group=option` override may choose (conf/ folders and the Hydra plugin groups)."""
    return [line.split(":", 1)[0] for line in config_groups_help().splitlines()]


def _check_override_shape(text: str, override: object) -> None:
    key = getattr(override, "key_or_group", "")
    if not key:
        raise FtkitError(
            f"the override {text!r} has no key before '='",
            "write key=value, e.g. peft.r=8 (see the keys with `ftkit train --cfg job`)",
            where="command line",
        )


# Keys under which the schema takes names it does not list: any SFTConfig field (checked by name in
# ftkit.config.overrides), Hydra's own settings (its plugins validate them) and a model config's fields
# (model.architecture, checked by ftkit.config.checks).
OPEN_KEYS = ("trainer.", "hydra.", "model.architecture.")


def _refuse_added_keys(overrides: list[str], parsed: list, cfg: DictConfig) -> None:
    """`+key=v` / `++key=v` add a key Hydra's struct mode would refuse: a typo then hides (`+dryrun=true`).

    A key the schema does not declare is refused whatever its prefix; only the open keys take new names.
    """
    added = [
        (text, o)
        for text, o in zip(overrides, parsed, strict=True)
        if (o.is_add() or o.is_force_add()) and "/" not in o.key_or_group and o.key_or_group not in config_groups()
    ]
    added = [(text, o) for text, o in added if not o.key_or_group.startswith(OPEN_KEYS)]
    if not added:
        return
    without = [text for text in overrides if text not in {t for t, _ in added}]
    base = compose(without)
    for _, override in added:
        key = override.key_or_group
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            prefix = "++" if override.is_force_add() else "+"
            open_keys = ", ".join(f"{k}*" for k in OPEN_KEYS if k != "hydra.")
            raise _unknown_key_error(key, base, extra=f"'{prefix}' only adds keys the schema leaves open: {open_keys}")


_ABSENT = object()


def _missing_option_error(error: Exception) -> FtkitError:
    options = getattr(error, "options", None) or []
    missing = getattr(error, "missing_cfg_file", "") or ""
    group, _, option = missing.rpartition("/")
    if group:
        return FtkitError(
            f"there is no {group} called {option!r}",
            f"pick one of: {', '.join(options)} (e.g. {group}={options[0] if options else '<name>'})",
            where=f"{group}={option}",
        )
    return FtkitError(str(error).splitlines()[0], "check the option names with `ftkit train --help`")


def _composition_error(error: Exception, overrides: list[str]) -> FtkitError:
    from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, ValidationError

    cause = error.__cause__ or error
    full_key = getattr(cause, "full_key", None) or ""
    first_line = (str(cause).splitlines() or [type(cause).__name__])[0]
    if isinstance(cause, ConfigKeyError) or "not in struct" in str(cause) or " not in '" in str(cause):
        return _unknown_key_error(full_key, _group_choices_config(overrides, full_key.startswith("hydra.")))
    if isinstance(cause, ValidationError):
        return FtkitError(
            f"wrong type for {full_key}: {first_line}",
            f"give {full_key} a value of the type its schema declares (see `ftkit train --cfg job`)",
            where=full_key,
        )
    if isinstance(cause, InterpolationResolutionError):
        from ftkit.config.checks import interpolation_error

        return interpolation_error(cause)
    if first_line.startswith("Ambiguous value") or "sweep" in first_line.lower():
        return FtkitError(
            f"{first_line.removeprefix('Ambiguous value for argument ')} is a list of values, which is a sweep and "
            "only -m runs",
            "add -m for a sweep (ftkit train -m peft.r=8,16), or write a list as key=[a,b], or quote a string "
            "holding a comma: key='a,b'",
            where=full_key or "command line",
        )
    return FtkitError(first_line, "check the override against `ftkit train --cfg job`", where=full_key or None)


def _unknown_key_error(full_key: str, base: DictConfig, extra: str = "") -> FtkitError:
    parent, _, name = full_key.rpartition(".")
    while parent and OmegaConf.select(base, parent, default=None) is None:  # the first part of the key that is wrong
        parent, _, name = parent.rpartition(".")
    node = OmegaConf.select(base, parent) if parent else base
    candidates = [str(k) for k in node] if isinstance(node, DictConfig) else []
    because = f" ({extra})" if extra else ""
    if isinstance(node, DictConfig) and not candidates and parent + "." in OPEN_KEYS:
        # an open mapping that is empty here (model.architecture of a model read from its own files)
        return FtkitError(
            f"unknown config key {full_key!r}{because}: {parent} is empty here, so it has no key {name!r} yet",
            f"add it with '+': +{full_key}=<value> (keys under {parent} are the model config's fields)",
            where=full_key,
        )
    hint = closest(name, candidates)
    if hint.startswith("did you mean"):  # otherwise the hint lists them already
        hint += f" (keys under {parent or 'the top level'}: {', '.join(candidates)})"
    return FtkitError(f"unknown config key {full_key!r}{because}", hint, where=full_key)


def _group_choices_config(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The config composed with the user's group choices only (where the valid keys of a node are looked up).

    Composed without compose()'s error handling, which calls this: choices that fail too give the defaults.
    """
    groups = set(config_groups())
    choices = [o for o in overrides if "=" in o and o.lstrip("+").split("=", 1)[0] in groups]
    try:
        return _hydra_compose(choices, with_hydra)
    except Exception:  # noqa: BLE001 - only a lookup for the error message being built
        return _hydra_compose([], with_hydra)


def run_config(run: RunDir | None, overrides: list[str]) -> DictConfig:
    """The checked config of a run (its saved overrides replayed, then `overrides`), or of `overrides` alone."""
    from ftkit.config.checks import check
    from ftkit.config.overrides import rewrite_trainer_overrides

    replayed = run.replay_overrides() if run is not None else []
    try:
        cfg = compose(rewrite_trainer_overrides(replayed + overrides))
    except FtkitError:
        if run is not None and replayed:
            try:  # on the error path only: when the run's own overrides fail alone, its overrides.yaml is at fault
                compose(rewrite_trainer_overrides(replayed))
            except FtkitError as own:
                raise run.replay_refused(own) from None
        raise
    check(cfg)
    return cfg


def package_installed(module: str) -> bool:
    """Whether a Python module can be imported here (found without importing it)."""
    from importlib.util import find_spec

    return find_spec(module) is not None
