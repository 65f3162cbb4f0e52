"""pytest configuration of the test suite."""

# The fixture generator needs torch (the PyTorch reference BERT), which is never installed by
# README's commands: it is a script to run by hand (see its docstring), not a test module, so
# --doctest-modules must not import it.
collect_ignore = ["fixtures/make_tiny_bert.py"]
