"""Training support: Parameter, gradient recording and the backward rules."""
