import argparse
import ast
import importlib
import pathlib
import sys

from ._demo import DemoConfig, run_demo


def _experiments() -> dict[str, str]:
    """Every paper reproduction, by name: each package `experiments/_NAME/` with a
    `reproduce.py` that defines `DESCRIPTION`, `reproduce(out, *, quick, progress, command,
    checkpoint_dir)` and `summary_text(summary)`. Read without importing it (`--help` and
    `demo` stay fast): NAME with dashes, and its `DESCRIPTION`."""
    found = {}
    for path in (pathlib.Path(__file__).parent / "experiments").glob("_*/reproduce.py"):
        tree = ast.parse(path.read_text())
        description = next(
            (
                node.value.value
                for node in tree.body
                if isinstance(node, ast.Assign)
                and any(getattr(target, "id", None) == "DESCRIPTION" for target in node.targets)
                and isinstance(node.value, ast.Constant)
            ),
            "",
        )
        found[path.parent.name.lstrip("_").replace("_", "-")] = description
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="gradflow", description="Exact gradient flow of two-layer networks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="Run the default seed ensemble (single-neuron target, tiny init)."
    )
    defaults = DemoConfig()
    demo.add_argument("--seeds", type=int, default=defaults.num_seeds)
    demo.add_argument("--scale", type=float, default=defaults.scale, help="init scale ε")
    demo.add_argument("--t1", type=float, default=defaults.t1, help="the longest a run goes")
    demo.add_argument(
        "--stationarity-tol",
        type=float,
        default=defaults.stationarity_tol,
        help="a run stops once ‖∇L‖ ≤ this · ‖θ‖ (its limit)",
    )
    demo.add_argument("--out", default="gradflow-demo", help="output directory")
    demo.add_argument("--no-progress", action="store_true")

    reproduce = commands.add_parser(
        "reproduce", help="Regenerate the figures of a paper, each with its numbers."
    )
    experiments = _experiments()
    reproduce.add_argument(
        "experiment",
        choices=sorted(experiments),
        help="; ".join(f"{name}: {text}" for name, text in sorted(experiments.items())),
    )
    reproduce.add_argument(
        "--quick", action="store_true", help="CI size: a few seeds per point (about a minute)"
    )
    reproduce.add_argument("--out", default=None, help="output directory (default: EXPERIMENT)")
    reproduce.add_argument(
        "--checkpoint-dir", default=None, help="keep finished work here and resume from it"
    )
    reproduce.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.seeds < 1:
            parser.error("--seeds must be at least 1")
        if not args.scale > 0:
            parser.error("--scale must be positive")
        if not args.t1 > 0:
            parser.error("--t1 must be positive")
        if not args.stationarity_tol > 0:
            parser.error("--stationarity-tol must be positive")
        config = DemoConfig(
            num_seeds=args.seeds,
            scale=args.scale,
            t1=args.t1,
            stationarity_tol=args.stationarity_tol,
        )
        print(run_demo(config, args.out, progress=not args.no_progress))
    elif args.command == "reproduce":
        # Imported here: the experiments pull in xarray and pandas, which `demo` does not need.
        import matplotlib

        matplotlib.use("Agg")  # files only, no windows
        module = importlib.import_module(
            f"gradflow.experiments._{args.experiment.replace('-', '_')}.reproduce"
        )
        out = args.out or args.experiment
        command = "gradflow " + " ".join(sys.argv[1:] if argv is None else argv)
        try:
            summary = module.reproduce(
                out,
                quick=args.quick,
                progress=not args.no_progress,
                command=command,
                checkpoint_dir=args.checkpoint_dir,
            )
        except ValueError as error:
            if "checkpoint_dir" not in str(error):
                raise
            parser.error(str(error).replace("checkpoint_dir", "--checkpoint-dir", 1))
        print(module.summary_text(summary))
        print(f"figures and numbers: {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
