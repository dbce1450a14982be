"""``python -m graphport`` runs the command line."""

from graphport.cli import main

main()
