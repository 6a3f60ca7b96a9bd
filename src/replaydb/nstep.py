"""N-step returns from windows of a sequence table.

A sequence table with ``sequence_length = n + 1`` serves windows of ``n + 1``
consecutive steps of one episode. Step ``t`` holds the observation ``o_t``, the
action ``a_t``, and the reward ``r_t`` and end code ``e_t`` that followed the action
(``0`` the episode goes on, ``1`` terminated, ``2`` truncated after the step), so
the n-step target for the window's first step is::

    G = r_0 + gamma r_1 + ... + gamma^(m-1) r_(m-1) + discount * V(o_m)

with ``m`` the number of rewards summed:

* no end among the first ``n`` steps: ``m = n``, bootstrap from ``o_n`` with
  ``discount = gamma^n``;
* terminated after step ``k < n``: ``m = k + 1`` and ``discount = 0`` (there is no
  future after a terminal state);
* truncated after step ``k < n``: the observation after step ``k`` belongs to no
  stored step, so the target stops one step earlier, ``m = k``, and bootstraps from
  ``o_k`` with ``discount = gamma^k`` - still a correct (shorter) n-step target,
  because a time limit does not change the value of ``o_k``.

Padded windows (``Table(pad=True)``) are handled through their mask: padding is
past the episode's end, which the end codes already mark.

Final steps
-----------
The collectors' *steps* layout (see :mod:`replaydb.collect`; TF-Agents' LAST step)
writes one more row after an episode's last transition: the *final step*, holding
the real final observation ``o_L`` with action 0 and reward 0, and carrying the
episode's end code. There the end code does not follow the step's action; it says
"this row is the episode's last observation". With ``final_step=True``:

* no end code in the window: ``m = n``, bootstrap from ``o_n`` with ``gamma^n``;
* the first final step is at position ``k`` (``0 <= k <= n``, the last position
  included): ``m = k`` rewards; terminated: ``discount = 0``; truncated: bootstrap
  from the stored final observation ``o_k`` with ``gamma^k``.

A window that *starts* at a final step holds no transition (``steps == 0``);
``Table(..., pad=True, final_step=True)`` never serves one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from replaydb._constants import END_NONE, END_TERMINATED, END_TRUNCATED
from replaydb._validate import check_unit_interval
from replaydb.errors import InvalidArgumentError

__all__ = ["NStepTargets", "nstep_returns"]


@dataclass(frozen=True)
class NStepTargets:
    """Discounted returns and where to bootstrap, for a batch of windows.

    Attributes:
        returns: ``[B]`` discounted sum of the first ``steps`` rewards.
        discounts: ``[B]`` factor for the bootstrap value (``gamma ** steps``, or 0
            after a termination).
        bootstrap_index: ``[B]`` int64 position in the window of the step whose
            observation to bootstrap from.
        steps: ``[B]`` int64 number of rewards summed.

    Example:
        >>> t = nstep_returns(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.long), 0.9)
        >>> t.steps.tolist(), [round(x, 2) for x in t.discounts.tolist()]
        ([2, 2], [0.81, 0.81])
    """

    returns: torch.Tensor
    discounts: torch.Tensor
    bootstrap_index: torch.Tensor
    steps: torch.Tensor

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Pick each window's bootstrap step from ``values`` ``[B, T, ...]``.

        Example:
            >>> t = nstep_returns(torch.ones(1, 3), torch.zeros(1, 3, dtype=torch.int64), 0.5)
            >>> t.gather(torch.arange(3.0).view(1, 3)).tolist()
            [2.0]
        """
        b = torch.arange(values.shape[0], device=values.device)
        return values[b, self.bootstrap_index.to(values.device)]

    def targets(self, bootstrap_values: torch.Tensor) -> torch.Tensor:
        """``returns + discounts * bootstrap_values`` (``[B]``)."""
        return self.returns + self.discounts * bootstrap_values.reshape(self.returns.shape)


def nstep_returns(
    rewards: torch.Tensor,
    ends: torch.Tensor,
    gamma: float,
    *,
    mask: torch.Tensor | None = None,
    final_step: bool = False,
) -> NStepTargets:
    """N-step returns of windows of ``n + 1`` steps (see the module docstring).

    Args:
        rewards: ``[B, n + 1]`` (or ``[B, n + 1, 1]``) rewards; the last step's reward
            is not used.
        ends: ``[B, n + 1]`` end codes from :attr:`~replaydb.table.Sample.ends`.
        gamma: Discount in [0, 1].
        mask: Optional ``[B, n + 1]`` bool mask of valid steps (``Sample.mask``);
            a window whose valid part ends without an end code is treated as
            truncated there.
        final_step: The end code marks a final-step row (the collectors' steps
            layout, ``Table(final_step=True)``) rather than the end after a
            transition; see the module docstring.

    Returns:
        An :class:`NStepTargets`.

    Raises:
        InvalidArgumentError: If shapes disagree, the window is shorter than 2, or
            ``gamma`` is out of range.

    Example:
        >>> r = torch.tensor([[1.0, 1.0, 1.0]]); e = torch.tensor([[0, 1, 0]])
        >>> t = nstep_returns(r, e, 0.5)
        >>> t.returns.tolist(), t.discounts.tolist(), t.steps.tolist()
        ([1.5], [0.0], [2])
    """
    r = rewards.squeeze(-1) if rewards.dim() == 3 and rewards.shape[-1] == 1 else rewards
    if r.dim() != 2 or r.shape[1] < 2:
        raise InvalidArgumentError(
            f"rewards must be [B, n + 1] with n >= 1, got shape {tuple(rewards.shape)}; "
            "sample from a table with sequence_length = n + 1"
        )
    if tuple(ends.shape) != tuple(r.shape):
        raise InvalidArgumentError(
            f"ends must have the shape of rewards {tuple(r.shape)}, got {tuple(ends.shape)}"
        )
    check_unit_interval("gamma", gamma)
    if not isinstance(final_step, bool):
        raise InvalidArgumentError(f"final_step must be a bool, got {final_step!r}")
    b, width = r.shape
    n = width - 1
    dev = r.device
    e = ends.to(dev, torch.int64)
    if mask is not None:
        if tuple(mask.shape) != tuple(r.shape):
            raise InvalidArgumentError(
                f"mask must have the shape of rewards {tuple(r.shape)}, got {tuple(mask.shape)}"
            )
        # A valid step followed by padding without an end code: treat as truncated.
        m = mask.to(dev, torch.bool)
        last_valid = m & ~torch.cat([m[:, 1:], torch.zeros_like(m[:, :1])], dim=1)
        pad_end = last_valid & (e == END_NONE) & ~m[:, -1:].expand_as(m)
        e = torch.where(pad_end, torch.full_like(e, END_TRUNCATED), e)
    # Where an end code counts: after a transition, only among the first n steps;
    # a final step, at any position (one at position n ends the last reward's episode).
    first = e if final_step else e[:, :n]
    is_end = first != END_NONE
    any_end = is_end.any(dim=1)
    k = torch.where(any_end, is_end.to(torch.int8).argmax(dim=1), torch.full((b,), n, device=dev))
    at = k.clamp(max=first.shape[1] - 1).unsqueeze(1)
    code = torch.where(any_end, first.gather(1, at).squeeze(1), END_NONE)
    terminated = code == END_TERMINATED
    if final_step:
        steps = k
    else:
        steps = torch.where(terminated, k + 1, k)
        steps = torch.where(any_end, steps, torch.full_like(steps, n))
    pos = torch.arange(n, device=dev)
    take = pos.unsqueeze(0) < steps.unsqueeze(1)
    powers = torch.pow(torch.full((n,), float(gamma), dtype=torch.float64, device=dev), pos)
    ret = (torch.where(take, r[:, :n].to(torch.float64), 0.0) * powers).sum(dim=1)
    disc = torch.pow(torch.full((b,), float(gamma), dtype=torch.float64, device=dev), steps)
    disc = torch.where(terminated, torch.zeros_like(disc), disc)
    return NStepTargets(
        returns=ret.to(r.dtype if r.dtype.is_floating_point else torch.float32),
        discounts=disc.to(r.dtype if r.dtype.is_floating_point else torch.float32),
        bootstrap_index=steps.to(torch.int64),
        steps=steps.to(torch.int64),
    )
