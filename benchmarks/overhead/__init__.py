"""Per-step cost of the callbacks against a bare Lightning step: ``cli`` (command line), ``timing`` (the fits)."""
