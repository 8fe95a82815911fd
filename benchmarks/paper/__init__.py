"""The paper's experiments ("Measure gradients, not activations!"), one command each, composed from the runners."""
