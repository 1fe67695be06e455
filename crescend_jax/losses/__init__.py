"""Losses: small pure functions, rax's signature shape. ``loss(<core arrays>, *, where=None, weights=None,
reduce_fn=reduction.weighted_mean, <options>) -> (loss, diagnostics dict)``; see `reduction`."""
