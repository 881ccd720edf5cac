"""Checks on a site's update before it is averaged into the global model.

One NaN or infinite value, or one tensor of the wrong shape, would spoil the
weighted average for every site; such an update is rejected with a reason the
server logs, and the round goes on with the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["update_problem"]


def update_problem(
    update: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    *,
    expected_keys: Sequence[str],
    num_examples: object,
) -> str | None:
    """Why ``update`` cannot be aggregated, or ``None`` when it can.

    Parameters
    ----------
    update
        The tensors a site sent (state keys → tensors).
    reference
        The global model's full state, for shapes and dtypes.
    expected_keys
        The state keys of the groups that trained this round: exactly these must come back.
    num_examples
        The site's example count, the weight of its update: a finite number > 0.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, float)):
        return f"num-examples must be a number; got {type(num_examples).__name__}"
    if not math.isfinite(num_examples) or num_examples <= 0:
        return f"num-examples must be finite and > 0; got {num_examples!r}"
    missing = [key for key in expected_keys if key not in update]
    extra = [key for key in update if key not in set(expected_keys)]
    if missing or extra:
        return (f"the update must hold exactly the {len(expected_keys)} tensors of this round's trainable groups; "
                f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
                f"unexpected {extra[:3]}{'…' if len(extra) > 3 else ''}")
    for key in expected_keys:
        value, want = update[key], reference[key]
        if tuple(value.shape) != tuple(want.shape):
            return f"{key!r} has shape {tuple(value.shape)}; the model's is {tuple(want.shape)}"
        if value.dtype != want.dtype:
            return f"{key!r} has dtype {value.dtype}; the model's is {want.dtype}"
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            kinds = [name for name, found in (("NaN", torch.isnan(value).any()), ("inf", torch.isinf(value).any()))
                     if bool(found)]
            return f"{key!r} holds {bad} non-finite value(s) ({', '.join(kinds)})"
    return None
