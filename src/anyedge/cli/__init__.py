"""The ``anyedge`` command line."""
