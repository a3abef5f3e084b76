"""``python -m workbench.figures``: see ``workbench.figures.cli``."""

from workbench.figures.cli import main

if __name__ == "__main__":
    main()
