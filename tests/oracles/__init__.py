"""Independent oracles (plain re-implementations of published algorithms) for the tests; never import the pack."""
