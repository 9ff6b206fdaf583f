"""Function-preserving expansions (docs/spec.md §4): six growth transformations, certificates, checks.

>>> from revcheck.expand import expand_hidden, expand_mlp, insert_layer, assert_function_preserved
"""

from __future__ import annotations

from revcheck.expand.certificate import Block, GrownReduction, GrowthCertificate, ParameterMap, ScaledBlock
from revcheck.expand.checks import (
    FunctionNotPreservedError,
    GradientResult,
    PreservationReport,
    assert_function_preserved,
    preserved_levels,
)
from revcheck.expand.transforms import (
    GrowthRefused,
    Initializer,
    add_heads,
    expand_head_dim,
    expand_hidden,
    expand_mlp,
    expand_qk_dim,
    fingerprint,
    insert_layer,
    normal_init,
    random_init,
    zeros_init,
)

__all__ = [
    "TRANSFORMATIONS",
    "Block",
    "FunctionNotPreservedError",
    "GradientResult",
    "GrownReduction",
    "GrowthCertificate",
    "GrowthRefused",
    "Initializer",
    "ParameterMap",
    "PreservationReport",
    "ScaledBlock",
    "add_heads",
    "assert_function_preserved",
    "expand_head_dim",
    "expand_hidden",
    "expand_mlp",
    "expand_qk_dim",
    "fingerprint",
    "insert_layer",
    "normal_init",
    "preserved_levels",
    "random_init",
    "zeros_init",
]

# The six transformations by name; each takes (model, size_or_index, *, init=None, seed=None).
TRANSFORMATIONS = {
    "expand_mlp": expand_mlp,
    "add_heads": add_heads,
    "expand_head_dim": expand_head_dim,
    "expand_qk_dim": expand_qk_dim,
    "expand_hidden": expand_hidden,
    "insert_layer": insert_layer,
}
