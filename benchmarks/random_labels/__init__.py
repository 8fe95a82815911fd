"""Random-label memorisation, a plasticity probe: ``cli`` (command line), ``fit`` (data, model, runs, tables)."""
