"""Render the tables and figures of the committed reports' READMEs from their documents
(``attnbench.report.readme``): ``python scripts/readme_tables.py`` rewrites the generated
fragments, ``--check`` exits 1 naming those that differ."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attnbench.report.readme import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
