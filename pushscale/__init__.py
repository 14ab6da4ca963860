"""The `pushscale` command: one entry point for the programs of this distribution."""
