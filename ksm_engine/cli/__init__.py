"""The `ksm-engine` command line: see main.py."""
