"""Deep RL agents as LightningModules, fed by an environment-driven data loop."""
