"""``python -m saga_cli`` runs the command line."""

from saga_cli.cli import main

if __name__ == "__main__":
    main()
