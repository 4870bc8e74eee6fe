"""The application layer above both task packages: the `seqcap` command (seqcap/cli.py)."""
