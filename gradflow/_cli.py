import argparse
import sys

from ._demo import DemoConfig, run_demo


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
    reproduce.add_argument(
        "experiment",
        choices=["single-neuron", "spectral-bias"],
        help="single-neuron: Zhao, Bai & Zhang, arXiv:2405.13787; spectral-bias: Sahs, "
        "Pyle, Anselmi & Patel, arXiv:2503.10587",
    )
    reproduce.add_argument(
        "--quick", action="store_true", help="CI size: a few seeds per point (about a minute)"
    )
    reproduce.add_argument("--out", default=None, help="output directory (default: EXPERIMENT)")
    reproduce.add_argument(
        "--checkpoint-dir", default=None, help="keep finished chunks here and resume from them"
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
        out = args.out or args.experiment
        if args.experiment == "spectral-bias":
            from .experiments._spectral_bias.reproduce import (
                reproduce as spectral_bias,
                summary_text as spectral_text,
            )

            if args.checkpoint_dir is not None:
                parser.error("--checkpoint-dir applies to single-neuron only")
            command = "gradflow " + " ".join(sys.argv[1:] if argv is None else argv)
            summary = spectral_bias(
                out, quick=args.quick, progress=not args.no_progress, command=command
            )
            print(spectral_text(summary))
            print(f"figures and numbers: {out}/")
            return 0

        from .experiments._single_neuron.reproduce import reproduce as single_neuron, summary_text

        summary = single_neuron(
            out,
            quick=args.quick,
            progress=not args.no_progress,
            checkpoint_dir=args.checkpoint_dir,
        )
        print(summary_text(summary))
        print(f"figures and numbers: {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
