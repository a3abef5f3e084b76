"""``python -m workbench.figures``: see ``workbench.figures.cli``."""

if __name__ == "__main__":  # the command line first: --help answers before the heavy imports
    from workbench.cli import run_module

    run_module("workbench.figures")
