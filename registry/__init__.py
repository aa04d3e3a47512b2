"""Registry conventions, the pyfunc models and the helpers that log, register and look models up."""
