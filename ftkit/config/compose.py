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


def compose(overrides: list[str]) -> DictConfig:
    """Compose conf/train.yaml with overrides through Hydra's compose API; user mistakes -> FtkitError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException

    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name=PRIMARY, overrides=overrides)
    except MissingConfigException as error:
        raise _missing_option_error(error) from None
    except ConfigCompositionException as error:
        raise _composition_error(error, overrides) from None
    finally:
        GlobalHydra.instance().clear()


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
    from omegaconf.errors import ConfigKeyError, ValidationError

    cause = error.__cause__ or error
    full_key = getattr(cause, "full_key", None) or ""
    first_line = str(cause).splitlines()[0]
    if isinstance(cause, ConfigKeyError) or "not in struct" in str(cause) or " not in '" in str(cause):
        parent, _, name = full_key.rpartition(".")
        candidates = _keys_under(parent, overrides)
        return FtkitError(
            f"unknown config key {full_key!r}",
            f"{closest(name, candidates)} (keys under {parent or 'the top level'}: {', '.join(candidates)})",
            where=full_key,
        )
    if isinstance(cause, ValidationError):
        return FtkitError(
            f"wrong type for {full_key}: {first_line}",
            f"give {full_key} a value of the type its schema declares (see `ftkit train --cfg job`)",
            where=full_key,
        )
    return FtkitError(first_line, "check the override against `ftkit train --cfg job`", where=full_key or None)


def _keys_under(parent: str, overrides: list[str]) -> list[str]:
    """The valid keys of a config node, composed with the user's group choices only."""
    choices = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0] and not o.startswith("+")]
    try:
        base = compose(choices)
    except FtkitError:
        base = compose([])
    node = OmegaConf.select(base, parent) if parent else base
    return [str(k) for k in node] if isinstance(node, DictConfig) else []


def run_config(run: RunDir | None, overrides: list[str]) -> DictConfig:
    """The checked config of a run (its saved overrides replayed, then `overrides`), or of `overrides` alone."""
    from ftkit.config.checks import check
    from ftkit.config.overrides import rewrite_trainer_overrides

    replayed = run.replay_overrides() if run is not None else []
    cfg = compose(rewrite_trainer_overrides(replayed + overrides))
    check(cfg)
    return cfg
