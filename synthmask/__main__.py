"""``python -m synthmask`` = the ``synthmask`` console script."""

from synthmask.cli import main

if __name__ == "__main__":
    main()
