"""Restricted loading of torch checkpoints, including whole pickled modules such as GLID-3's kl-f8.pt.

kl-f8.pt is `torch.save(<ldm AutoencoderKL object>)`: unpickling it normally imports `ldm.*` and
`pytorch_lightning.*` and, like any pickle, can run arbitrary code. Here every global the pickle names is resolved
against an allow-list instead:

- a few torch / collections callables needed to rebuild tensors and containers (`SAFE_GLOBALS`, torch dtypes);
- any class or function from the model-code namespaces (`STAND_IN_NAMESPACES`: ldm, taming, pytorch_lightning,
  torch.nn.modules, ...) becomes an inert `PickledObject` stand-in that only records its pickled state, so nothing
  from those packages is imported or executed and they need not be installed;
- anything else (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) raises `UnsafeCheckpointError`.

The loaded object tree is then walked like `nn.Module.state_dict()` would (`_parameters`, persistent `_buffers`,
`_modules`), and plain attributes (`embed_dim`, `tanh_out`, ...) are kept for config checks. Plain state_dicts and
{'state_dict': ...} training checkpoints go through the same restricted path.
"""
from __future__ import annotations

import collections
import pickle
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch._utils

# module prefixes whose globals become inert stand-ins (matched as `ns` or `ns.` prefix)
# (training checkpoints may also pickle their LPIPS loss, hence torchvision.models and lpips)
STAND_IN_NAMESPACES = ("ldm", "taming", "pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics",
                       "omegaconf", "torch.nn.modules", "torchvision.models", "lpips")


def _safe_globals() -> dict[str, object]:
    table = {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.Tensor": torch.Tensor,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    }
    for optional in ("_rebuild_parameter_with_state", "_rebuild_tensor_v3"):
        if hasattr(torch._utils, optional):
            table[f"torch._utils.{optional}"] = getattr(torch._utils, optional)
    if hasattr(torch, "_tensor") and hasattr(torch._tensor, "_rebuild_from_type_v2"):
        table["torch._tensor._rebuild_from_type_v2"] = torch._tensor._rebuild_from_type_v2
    # protocol-2 pickles written by Python 2 era code name the builtins module `__builtin__`
    table.update({k.replace("builtins.", "__builtin__."): v for k, v in list(table.items()) if k.startswith("builtins.")})
    return table


SAFE_GLOBALS = _safe_globals()


class UnsafeCheckpointError(pickle.UnpicklingError):
    pass


class PickledObject:
    """Inert stand-in for a pickled class (or function) that is never imported.

    Construction arguments and the state handed to BUILD are stored as data; no other behaviour.
    """

    _pickled_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj._args, obj._kwargs, obj._state = args, kwargs, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        # (dict_state, slot_state) for objects with __slots__
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}
        self._state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self._pickled_name}>"


_STAND_INS: dict[str, type] = {}


def stand_in(module: str, name: str) -> type:
    qualified = f"{module}.{name}"
    if qualified not in _STAND_INS:
        _STAND_INS[qualified] = type(name, (PickledObject,), {"_pickled_name": qualified, "__module__": __name__})
    return _STAND_INS[qualified]


def resolve_global(module: str, name: str):
    qualified = f"{module}.{name}"
    if qualified in SAFE_GLOBALS:
        return SAFE_GLOBALS[qualified]
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if any(module == ns or module.startswith(ns + ".") for ns in STAND_IN_NAMESPACES):
        return stand_in(module, name)
    raise UnsafeCheckpointError(
        f"refusing to unpickle global {qualified!r}: it is not on the allow-list of this restricted loader "
        f"(torch tensor rebuilders, collections.OrderedDict, set, torch dtypes/device, and inert stand-ins for "
        f"{', '.join(STAND_IN_NAMESPACES)}). The file may run code when loaded; convert it to a plain state_dict "
        f"in a trusted environment if it is genuine.")


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return resolve_global(module, name)


# what torch.load expects from `pickle_module`: an Unpickler class and a load function (for legacy files)
restricted_pickle = types.SimpleNamespace(
    __name__="restricted_pickle",
    Unpickler=RestrictedUnpickler,
    load=lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load(),
    UnpicklingError=pickle.UnpicklingError,
)


def restricted_torch_load(path) -> object:
    """torch.load on the CPU with every pickled global checked against the allow-list."""
    return torch.load(Path(path), map_location="cpu", weights_only=False, pickle_module=restricted_pickle)


# ---------------------------------------------------------------------------------------------------------------------
# walking the loaded object tree

def module_state(obj) -> dict | None:
    """The pickled `__dict__` of an nn.Module (stand-in or real), or None when `obj` is not module-like."""
    if isinstance(obj, torch.nn.Module):
        return obj.__dict__
    state = getattr(obj, "_state", None) if isinstance(obj, PickledObject) else None
    if isinstance(state, dict) and "_parameters" in state and "_modules" in state:
        return state
    return None


def module_state_dict(obj, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """Same keys, order and tensors as `nn.Module.state_dict()` would give for the pickled module."""
    state = module_state(obj)
    if state is None:
        raise ValueError(f"{prefix.rstrip('.') or 'checkpoint root'} is not a pickled torch module ({obj!r})")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, param in state["_parameters"].items():
        if param is not None:
            out[prefix + name] = param.detach()
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, buf in (state.get("_buffers") or {}).items():
        if buf is not None and name not in non_persistent:
            out[prefix + name] = buf.detach()
    for name, child in state["_modules"].items():
        if child is not None:
            out.update(module_state_dict(child, prefix + name + "."))
    return out


def _plain(value) -> bool:
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return False


def module_attributes(obj) -> dict:
    """The plain (str/number/bool/None and tuples/lists of them) instance attributes of a pickled module."""
    state = module_state(obj)
    if state is None:
        return {}
    return {k: v for k, v in state.items() if not k.startswith("_") and _plain(v)}


def submodule(obj, dotted: str):
    for part in dotted.split(".") if dotted else []:
        state = module_state(obj)
        if state is None or part not in state["_modules"]:
            return None
        obj = state["_modules"][part]
    return obj


@dataclass
class Checkpoint:
    """A loaded checkpoint reduced to tensors: `format` is 'pickled_module', 'state_dict' or 'wrapped_state_dict'."""

    state_dict: "OrderedDict[str, torch.Tensor]"
    format: str
    root: object = None  # the pickled module tree (stand-ins) for 'pickled_module'
    class_name: str = ""
    extra: dict = field(default_factory=dict)

    def attributes(self, dotted: str = "") -> dict:
        """Plain attributes of the pickled module at `dotted` ('' = root, 'decoder', ...); {} for state_dict files."""
        if self.root is None:
            return {}
        return module_attributes(submodule(self.root, dotted))


def _tensor_mapping(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def load_checkpoint(path) -> Checkpoint:
    """Load a pickled whole module, a plain state_dict, or a {'state_dict': ...} training checkpoint, safely."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = restricted_torch_load(path)
    if module_state(obj) is not None:
        name = getattr(obj, "_pickled_name", type(obj).__qualname__)
        return Checkpoint(module_state_dict(obj), "pickled_module", root=obj, class_name=name)
    if isinstance(obj, dict) and "state_dict" in obj:
        inner = obj["state_dict"]
        if module_state(inner) is not None:
            inner = module_state_dict(inner)
        if _tensor_mapping(inner):
            return Checkpoint(OrderedDict(inner), "wrapped_state_dict",
                              extra={k: v for k, v in obj.items() if k != "state_dict"})
    if _tensor_mapping(obj):
        return Checkpoint(OrderedDict(obj), "state_dict")
    raise ValueError(f"{path}: not a torch module, state_dict or {{'state_dict': ...}} checkpoint "
                     f"(got {type(obj).__name__})")
