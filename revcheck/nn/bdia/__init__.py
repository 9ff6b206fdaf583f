"""``BDIAStack``: an exactly reversible residual stack (docs/spec.md §3) for torch training.

Arithmetic (identical in both modes, and equal bit for bit to :mod:`revcheck.oracle.bdia`)::

    X_0     = R(x_0)                          straight-through gradient to the input
    X_1     = X_0 + R(h_0(x_0))
    X_{k+1} = gamma_k (X_{k-1} + s_{k-1}) + R(y_k),   y_k = fl(fl((1-gamma_k) x_k) + fl((1+gamma_k) h_k))
    output  = X_K * 2**-l  in ``compute_dtype``

``x_k = X_k * 2**-l`` is rounded once to ``compute_dtype`` (the value used in
``y_k`` and the one gradients refer to) and then converted to the block's dtype
(its first floating parameter/buffer, else ``compute_dtype``); the block output
is converted back to ``compute_dtype``.  ``gamma_k`` is drawn per sample per
block from {+1/2, -1/2} with the stack's own CPU ``torch.Generator`` in
training; ``eval()`` uses gamma = 0, i.e. ``X_{k+1} = X_k + R(h_k(x_k))``.

``mode="reversible"`` runs the forward under ``no_grad`` and saves, per call
(``ctx.save_for_backward``, so ``saved_tensors_hooks`` see all of it):

=========================  ==========================================  =====================
tensor                     shape / dtype                               bytes
=========================  ==========================================  =====================
X_K, X_{K-1}               2 x state, int64                            16 per element
side bits s_0..s_{K-2}     (K-1, ceil(N/8)) uint8, 8 bits per byte     ~1/8 per element per block
gamma signs                (K-1, B) int8                               1 per sample per block
checksums of X_0..X_{K-2}  (K-1,) int64 (reconstruction check)         8 per block
RNG states                 one CPU (and CUDA) state per block that     ~5 KiB per distinct state
                           changed it (deduplicated), for dropout
=========================  ==========================================  =====================

Nothing else: no block activations.  Backward walks from the top: recompute
``y_k`` with grad from the reconstructed ``x_k`` (RNG state and autocast state
restored as in ``torch.utils.checkpoint``, inside ``torch.random.fork_rng`` so
the caller's RNG state is untouched), reconstruct ``X_{k-1}`` with integer
arithmetic, backpropagate through ``y_k`` with a straight-through gradient at
``R`` and pass ``gamma_k * dL/dx_{k+1}`` on to ``x_{k-1}``.

``mode="stored"`` is the plain loop under ordinary autograd: per block the same
code, with ``x_{k+1} = STE(X_{k+1} * 2**-l <- gamma_k x_{k-1} + y_k)`` (first
block: ``x_0 + h_0``).  The reversible backward sums every gradient in the order
ordinary autograd does (the contribution from the blocks above is injected into
the recomputed block's graph ahead of the local ones, see ``_autograd.Inject``), so
gradients of the input and of every parameter -- shared ones included -- equal
the stored mode's, and those of a hand-written loop of the same forward, bit
for bit.  ``gamma_k dL/dx_{k+1}`` is one rounded multiplication (exact unless it
underflows).

Blocks must be deterministic given the RNG state (same kernels, shapes and
dtype) and free of side effects (BatchNorm running statistics would be updated
twice).  A block whose recomputation differs is reported in backward by name.
Values that cannot be reconstructed (NaN/inf in ``h``/``y``, codes with
``|X| >= 2**62``) raise ``BDIARangeError`` at the end of the forward, naming the
first offending block.  Double backward (``create_graph=True``, e.g. a gradient
penalty) exists only in ``mode="stored"``: the reversible backward raises
``BDIADoubleBackwardError`` instead of returning gradients without their
second-order terms (docs/spec.md D3.16).

Layout (one concept per module; the public names are re-exported here):

* ``_stack``: :class:`BDIAStack` -- arguments, the arithmetic (one method per
  formula), the BDIA step written once and the forward passes;
* ``_autograd``: the straight-through functions and the reversible mode's
  forward and backward;
* ``_bitpack``: side bits packed 8 to a byte;
* ``_recompute``: the RNG and autocast states a recomputation restores;
* ``_checksums``: reconstruction checks (:class:`BDIAReconstructionError`);
* ``_ranges``: the range flags of a forward (:class:`BDIARangeError`);
* ``_errors``: the exceptions.

The limits and dtypes (``MAX_L``, ``CODE_LIMIT``, the compute formats, the
default ``l``) are the oracle's, :mod:`revcheck.oracle.bdia`.
"""

from __future__ import annotations

from revcheck.nn.bdia._bitpack import pack_bits, unpack_bits
from revcheck.nn.bdia._errors import BDIADoubleBackwardError, BDIARangeError, BDIAReconstructionError
from revcheck.nn.bdia._stack import BDIAStack, BDIAStackTrace, Mode

__all__ = [
    "BDIADoubleBackwardError",
    "BDIARangeError",
    "BDIAReconstructionError",
    "BDIAStack",
    "BDIAStackTrace",
    "Mode",
    "pack_bits",
    "unpack_bits",
]

# The public names live here (reprs, pickles and docs name revcheck.nn.bdia, not the private module).
for _public in (
    BDIADoubleBackwardError,
    BDIARangeError,
    BDIAReconstructionError,
    BDIAStack,
    BDIAStackTrace,
    pack_bits,
    unpack_bits,
):
    _public.__module__ = __name__
del _public
