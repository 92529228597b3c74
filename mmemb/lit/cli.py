"""The LightningCLI of ``mmemb fit|validate|test|predict`` (and of ``train.py``).

    mmemb fit --config configs/quickstart.yaml
    mmemb fit --config configs/quickstart.yaml --trainer.max_epochs 2 --model.lr 5e-4
    mmemb fit --config configs/quickstart.yaml --data.manifest M --trainer.default_root_dir runs/my_videos
    mmemb fit --help

One run folder: everything a run writes goes under ``trainer.default_root_dir``: the vocabularies
(``vocab/``, saved by the data module), and per run ``version_N/`` with the resolved ``config.yaml``,
the CSV logs (``metrics.csv``) and the checkpoints (``checkpoints/``: best by
``val/t2v_r1_category``, and ``last.ckpt``). :func:`place_run_outputs` gives the logger that folder
unless a logger ``save_dir`` is given explicitly (which then holds the logs, ``config.yaml`` and the
checkpoints). ``mmemb eval --run <default_root_dir>`` finds the newest version's best checkpoint.

Configuration values rejected while the model, data module or trainer are built (a check in a
config dataclass or a constructor) raise :class:`~mmemb.errors.ConfigError`, naming the config
files; with ``exit_on_error=False`` parse errors raise :class:`argparse.ArgumentError`. The command
line (:mod:`mmemb.cli`) prints either as one line.
"""

from __future__ import annotations

import copy
import os
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from jsonargparse import Namespace  # noqa: E402
from pytorch_lightning.cli import LightningCLI  # noqa: E402
from pytorch_lightning.utilities.exceptions import MisconfigurationException  # noqa: E402

from ..data.datamodule import VideoDataModule  # noqa: E402
from ..data.manifest import ManifestError  # noqa: E402
from ..errors import ConfigError, InputError  # noqa: E402
from .loggers import RunCSVLogger  # noqa: E402
from .module import EmbeddingModule  # noqa: E402

__all__ = ["MMEmbCLI", "MODEL_CLASS_PATH", "RUN_LOGGER", "place_run_outputs", "main"]

# the model class of a config whose model section names none (the plain ``preset: ...`` layout)
MODEL_CLASS_PATH = f"{EmbeddingModule.__module__}.{EmbeddingModule.__name__}"
# the logger a run gets when its config names none: CSV logs in <default_root_dir>/version_N
RUN_LOGGER = {"class_path": f"{RunCSVLogger.__module__}.{RunCSVLogger.__name__}"}


def place_run_outputs(trainer: Namespace) -> None:
    """Put everything the run writes under ``trainer.default_root_dir`` (in place, on the parsed config).

    Each logger whose ``save_dir`` is unset (``None``) gets the run folder (the current directory
    when ``default_root_dir`` is unset, as in Lightning); an explicit ``save_dir`` is kept.
    ``logger: null`` or ``true`` (Lightning's default logger, which would write to
    ``lightning_logs/``) becomes :class:`~mmemb.lit.loggers.RunCSVLogger`; ``false`` stays off.
    The checkpoints and ``config.yaml`` follow the first logger's ``version_N`` folder, and the data
    module saves its vocabularies in ``<default_root_dir>/vocab``, so nothing else needs a path.
    """
    root = str(trainer.get("default_root_dir") or os.getcwd())
    if trainer.get("logger") is None or trainer.get("logger") is True:
        trainer["logger"] = Namespace(class_path=RUN_LOGGER["class_path"], init_args=Namespace(save_dir=None))
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if isinstance(init_args, Namespace) and "save_dir" in init_args and init_args.get("save_dir") is None:
            init_args["save_dir"] = root


def _sources(config: Namespace) -> str:
    """The config files of a parsed config, for error messages."""
    files = [str(getattr(p, "relative", p)) for p in (config.get("config") or []) if p is not None]
    return ", ".join(files + ["the command line"]) if files else "the command line"


class MMEmbCLI(LightningCLI):
    """LightningCLI of :class:`~mmemb.lit.module.EmbeddingModule` (every preset) or a subclass named by
    ``model.class_path`` (``mmemb.lit.distill.DistillModule`` in ``configs/distill.yaml``; a config
    without ``class_path`` gives its model arguments directly, as before), whose model takes the
    sizes of its text, hashtag and query vocabularies, the n-gram buckets and the label weighting from the data module (the
    label names, tag graph and keyword IDF are read from the data in ``setup``), and whose run writes
    everything under ``trainer.default_root_dir`` (:func:`place_run_outputs`)."""

    def add_arguments_to_parser(self, parser) -> None:
        # the model section is EmbeddingModule's arguments unless it names another class_path (a subclass:
        # configs/distill.yaml's DistillModule)
        parser.set_defaults({"model": {"class_path": MODEL_CLASS_PATH}})
        for key in ("vocab_size", "num_hashtags", "num_queries", "ngram_buckets", "label_weighting"):
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")

    def _parsed(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def instantiate_classes(self) -> None:
        """Build the model, data module and trainer, with the logger in the run folder
        (:func:`place_run_outputs`; the parsed config, which LightningCLI saves as ``config.yaml``,
        keeps the logger as given). A value rejected by a check (a ``ValueError`` or ``KeyError`` of a
        config dataclass or constructor, Lightning's ``MisconfigurationException``, e.g. a GPU
        accelerator without a GPU) raises :class:`ConfigError` naming the config files (input errors
        that already name their file, such as a bad manifest, pass through)."""
        trainer = self._parsed().trainer
        given = copy.deepcopy(trainer.get("logger"))
        place_run_outputs(trainer)
        try:
            super().instantiate_classes()
        except (InputError, ManifestError, FileNotFoundError):
            raise
        except (ValueError, KeyError, MisconfigurationException) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise ConfigError(f"bad configuration value ({_sources(self._parsed())}): {message}") from exc
        finally:  # the saved config.yaml keeps the logger as given (save_dir null: the run folder), so that
            trainer["logger"] = given  # rerunning it with another default_root_dir moves the whole run


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Run the LightningCLI on ``args`` (default ``sys.argv[1:]``): ``fit|validate|test|predict ...``,
    or, with ``run=False``, only build the model, data module and trainer (no subcommand)."""
    kwargs: dict[str, Any] = dict(save_config_kwargs={"overwrite": True}, trainer_defaults={"logger": RUN_LOGGER},
                                  parser_kwargs={"exit_on_error": False})
    return MMEmbCLI(EmbeddingModule, VideoDataModule, subclass_mode_model=True, args=args, run=run, **kwargs)
