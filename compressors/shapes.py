"""What structured pruning changes besides Conv2d, Linear and BatchNorm channel counts.

Pruning a transformer's width also shrinks tensors that belong to no such layer (a position
embedding, a class token, LayerNorm's affine weights, an attention's packed projections, a
recurrent layer's input weights) and leaves attributes that its forward reads stale
(LayerNorm's ``normalized_shape``, an attention's ``head_dim``, a recurrent layer's
``input_size``). :func:`sync_attributes` brings those attributes back in line with the tensors
(after each pruning step, and after a skeleton is rebuilt); :func:`free_tensor_shapes` and
:func:`reshape_free_tensors` record and rebuild the tensors, alongside ``compressors.export``'s
``layer_shapes`` / ``reshape_layers``.
"""

from __future__ import annotations

import torch
from torch import nn

from nascomp.compressors.layers import CONV_LAYERS

# Layers whose tensors ``compressors.export.reshape_layers`` rebuilds from their channel counts.
_COUNTED = (*CONV_LAYERS, nn.Linear, nn.modules.batchnorm._BatchNorm)


def sync_attributes(model: nn.Module) -> None:
    """Set the shape attributes a forward reads from the tensors they describe, in place."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.normalized_shape = tuple(module.weight.shape)
        elif isinstance(module, nn.GroupNorm) and module.weight is not None:
            module.num_channels = int(module.weight.shape[0])
        elif isinstance(module, nn.RNNBase):
            # its input width follows the layer before it (its own width is never pruned)
            module.input_size = int(module.weight_ih_l0.shape[1])
        elif isinstance(module, nn.MultiheadAttention):
            module.embed_dim = module.out_proj.out_features
            module.head_dim = module.embed_dim // module.num_heads
            if module._qkv_same_embed_dim:
                module.kdim = module.vdim = module.embed_dim
        elif _is_packed_attention(module):
            # timm's Attention and its kind: one qkv Linear, split into num_heads heads
            width = module.qkv.out_features // 3  # type: ignore[union-attr]
            module.head_dim = width // module.num_heads  # type: ignore[operator]
            if hasattr(module, "attn_dim"):
                module.attn_dim = width


def _is_packed_attention(module: nn.Module) -> bool:
    return (
        isinstance(getattr(module, "qkv", None), nn.Linear)
        and isinstance(getattr(module, "num_heads", None), int)
        and isinstance(getattr(module, "head_dim", None), int)
    )


def packed_attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """The heads of every attention layer, keyed as torch-pruning's ``num_heads`` takes them:
    ``nn.MultiheadAttention`` itself, the qkv Linear of a packed attention."""
    heads: dict[nn.Module, int] = {}
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            heads[module] = module.num_heads
        elif _is_packed_attention(module):
            heads[module.qkv] = module.num_heads  # type: ignore[index]
    return heads


def free_tensor_shapes(model: nn.Module) -> dict[str, list[int]]:
    """The shape of every parameter and buffer that no convolution / Linear / BatchNorm holds, by
    its full name (JSON-able)."""
    shapes: dict[str, list[int]] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, _COUNTED):
            continue
        own = [*module._parameters.items(), *module._buffers.items()]
        for name, tensor in own:
            if tensor is not None:
                full = f"{module_name}.{name}" if module_name else name
                shapes[full] = list(tensor.shape)
    return shapes


def reshape_free_tensors(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Give a freshly built model's free tensors the recorded shapes (zeros: the caller loads
    their values), then :func:`sync_attributes`; returns ``model``. Tensors of modules the
    model does not hold yet are skipped: quantization-aware training adds its observers after
    the skeleton is rebuilt, at the shapes of the layers they observe (a tensor truly missing
    fails the caller's strict ``load_state_dict``)."""
    for full, shape in shapes.items():
        module_name, _, name = full.rpartition(".")
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            continue
        current = module._parameters.get(name, module._buffers.get(name))
        if current is None or list(current.shape) == list(shape):
            continue
        fresh = torch.zeros(shape, dtype=current.dtype, device=current.device)
        if isinstance(current, nn.Parameter):
            fresh = nn.Parameter(fresh, current.requires_grad)
        # setattr, not the dicts: a module may keep its own references (an LSTM's flat weights)
        setattr(module, name, fresh)
    sync_attributes(model)
    return model
