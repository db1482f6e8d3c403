"""``python -m synthmask`` = the ``synthmask`` console script."""

from synthmask.cli import console_main

if __name__ == "__main__":
    console_main()
