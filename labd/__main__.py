"""``python -m labd``: the same as the ``labd`` command."""

from labd.main import main

if __name__ == "__main__":
    main()
