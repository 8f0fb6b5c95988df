"""mlc: an experiment platform for multi-label classification losses."""
