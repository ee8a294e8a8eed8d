"""Communication-efficient, channel-selected model updates (capability C8).

Per round: compute each channel's L2 norm (:class:`ChannelLayout`), keep the channels the
upload rate allows (:func:`select_channels`, chosen by a leak-free
:class:`SelectionPolicy`), send only those (:func:`compress`, :class:`SparseUpdate`), and
apply only them on the receiver (:func:`apply_sparse`).

Example::

    layout = channel_layout({k: v.shape for k, v in model.named_parameters()})
    policy = resolve_policy("public_aggregate")
    chosen = policy.select(layout, upload_rate=0.1, round_index=r,
                           local_update=delta, previous_aggregate=last_global)
    payload = compress(delta, layout, chosen).to_bytes()
    # receiver
    apply_sparse(dict(model.named_parameters()), SparseUpdate.from_bytes(payload), layout)
"""

from __future__ import annotations

from fedmugrep.compression.channels import (
    FINGERPRINT_BYTES,
    ChannelGroup,
    ChannelLayout,
    LayoutMismatchError,
    channel_layout,
    check_upload_rate,
    select_channels,
    select_top,
    selection_size,
)
from fedmugrep.compression.policies import (
    SELECTION_POLICIES,
    NoisedNormPolicy,
    NoiseFn,
    PublicAggregatePolicy,
    SelectionPolicy,
    channel_norm_sensitivity,
    register_policy,
    resolve_policy,
    rotation_window,
)
from fedmugrep.compression.sparse import (
    HEADER_BYTES,
    SparseUpdate,
    apply_sparse,
    compress,
    decompress,
    dense_nbytes,
)

__all__ = [
    "FINGERPRINT_BYTES",
    "HEADER_BYTES",
    "SELECTION_POLICIES",
    "ChannelGroup",
    "ChannelLayout",
    "LayoutMismatchError",
    "NoiseFn",
    "NoisedNormPolicy",
    "PublicAggregatePolicy",
    "SelectionPolicy",
    "SparseUpdate",
    "apply_sparse",
    "channel_layout",
    "channel_norm_sensitivity",
    "check_upload_rate",
    "compress",
    "decompress",
    "dense_nbytes",
    "register_policy",
    "resolve_policy",
    "rotation_window",
    "select_channels",
    "select_top",
    "selection_size",
]
