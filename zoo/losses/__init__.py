"""Distillation losses: attention transfer (AT) and knowledge distillation (KD), one module per framework.

``zoo.losses.pt`` (PyTorch) and ``zoo.losses.ms`` (MindSpore, legacy ``ops``; works in GRAPH and PYNATIVE)
define the same functions with the same signatures:

- ``attention_map(x, mode="code")``: the spatial attention map of an NCHW activation, flattened and
  L2-normalised per sample (``F.normalize``: p=2, a floor of 1e-12 on the norm).
  ``"code"`` is attention-transfer's ``utils.at``: the channel **mean** of squares; ``"paper"`` Eq. 2's
  channel sum (the two differ only below the floor).
- ``at_loss(f_s, f_t, mode="code")``: ``"code"`` is ``utils.at_loss``, the mean over batch and positions of the
  squared difference of the maps; ``"paper"`` the paper's ``||Q_s - Q_t||_2`` per sample, averaged over the
  batch (torchdistill's ``ATLoss(mode='paper')``; the paper's beta/2 factor is left to the caller's beta).
- ``kd_loss(y_s, y_t, labels, temperature=4.0, alpha=0.9)``: ``utils.distillation`` as it is now (since the
  July 2018 "fix KL"): ``alpha * KL(softmax(y_t/T) || softmax(y_s/T)) * T^2 / batch + (1 - alpha) * CE``.
  ``kd_terms`` returns its two parts (for logging). ``labels`` may be class indices or soft targets.
- ``pool_to(x, size)``: adaptive average pooling to ``(h, w)`` (matches maps of different sizes, as
  RepDistiller and mdistiller do, pooling the larger one).

Every map and loss is computed in float32 whatever the activations' dtype (under amp the 1e-12 floor
is 0 in float16). MindSpore's ``ops.L2Normalize`` is not used: its epsilon (1e-4, on the squared norm)
changes maps of small activations by up to 38%.
"""
EPS = 1e-12  # F.normalize's floor on the L2 norm
MODES = ("code", "paper")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"at mode must be 'code' (attention-transfer's utils.at_loss) or 'paper' (Eq. 2), "
                         f"got {mode!r}")
    return mode
