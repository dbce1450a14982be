"""``python -m graphport.cli`` runs the command line (as ``python -m graphport`` does)."""

from graphport.cli import main

main()
