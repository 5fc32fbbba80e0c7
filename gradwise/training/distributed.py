"""Data-parallel training under torchrun: the process group, rank roles, collectives and model wrapping.

torchrun starts one process per device and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``. When
``WORLD_SIZE`` > 1 a run joins the process group (nccl on CUDA, gloo on CPU), replicates the model with DDP
(or shards it with FSDP2, ``train.parallel: fsdp``), gives each rank its share of every step's micro-batches
(rank r takes micro indices r, r + W, ...: the global batch and the data order are a single process's) and
lets rank 0 alone write files. Every decision that ends or changes the loop (stop signal, time budget,
evaluation results and so the best checkpoint and early stopping) is taken from numbers every rank agrees on.

Without torchrun :class:`Distributed` is the one-process case and every helper here returns at once, so a
single-process run does exactly what it did before.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as tdist
from safetensors.torch import load_file
from torch import nn

from gradwise.config.schema import Config
from gradwise.core.checkpoint import (
    MODEL_FILE,
    load_checkpoint,
    load_weights,
    read_optimizer_state,
    read_state,
    reconcile_frozen_base,
    resolve_checkpoint,
    save_checkpoint,
)
from gradwise.core.errors import CheckpointError, ConfigError, DataError, GradwiseError, say_error
from gradwise.optim.combined import optimizer_parts

T = TypeVar("T")


def torchrun_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@dataclass
class Distributed:
    """Who this process is among the ranks, and the collectives the loop needs (no-ops for one process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    parallel: str = "none"  # none (one process), ddp or fsdp
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we called init_process_group, so we destroy it
    fsdp_units: int = 0  # modules sharded as their own FSDP unit (each layer, then the whole model)

    # ------------------------------------------------------------ set-up
    @classmethod
    def setup(cls, device: torch.device, parallel: str = "auto") -> Distributed:
        """Join torchrun's process group when WORLD_SIZE > 1; otherwise the single-process no-op."""
        world = torchrun_world_size()
        if world <= 1:
            return cls(device=device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":  # one GPU per process: LOCAL_RANK picks it
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        elif device.type != "cpu":
            raise ConfigError(f"data-parallel training runs on CUDA (nccl) or CPU (gloo), not {device.type}; "
                              "use --set train.device=cpu or a CUDA machine")
        owns = not tdist.is_initialized()
        if owns:
            backend = "nccl" if device.type == "cuda" else "gloo"
            kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
            tdist.init_process_group(backend=backend, **kwargs)
        if tdist.get_world_size() != world:
            raise GradwiseError(f"the process group has {tdist.get_world_size()} ranks but WORLD_SIZE is {world}")
        return cls(rank=tdist.get_rank(), local_rank=local_rank, world_size=world,
                   parallel="ddp" if parallel == "auto" else parallel, device=device, owns_group=owns)

    def close(self) -> None:
        """Leave the process group if we joined it (a caller's own group is left alone)."""
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()
            self.owns_group = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and writes every file of the run."""
        return self.rank == 0

    def describe(self) -> str:
        units = f" over {self.fsdp_units} units" if self.sharded and self.fsdp_units else ""
        return f"{self.world_size} ranks ({self.parallel}{units}, {'nccl' if self.device.type == 'cuda' else 'gloo'})"

    def check(self, cfg: Config) -> None:
        """Refuse, with one line, what cannot run on these ranks (before any work is done)."""
        if not self.enabled:
            return
        t, w = cfg.train, self.world_size
        if t.grad_accum % w:
            raise ConfigError(f"train.grad_accum ({t.grad_accum}) must be a multiple of the number of ranks ({w}): "
                              f"each rank takes grad_accum / {w} of a step's micro-batches; "
                              f"set --set train.grad_accum={w * -(-t.grad_accum // w)}")

    # ------------------------------------------------------------ work sharing
    def micro_indices(self, grad_accum: int) -> range:
        """This rank's micro-batch indices of a step: r, r + W, ... (one process: all of them)."""
        return range(self.rank, grad_accum, self.world_size)

    def in_turn(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 first, then on the other nodes' first ranks, then on the rest.

        Used for data preparation: the first call tokenizes and fills the cache (shared or per node), the
        later ones read it instead of tokenizing the same corpus several times at once.
        """
        if not self.enabled:
            return fn()
        result: T | None = None
        for mine in (self.rank == 0, self.rank != 0 and self.local_rank == 0, self.local_rank != 0):
            failure: Exception | None = None
            if mine:
                try:
                    result = fn()
                except Exception as exc:  # noqa: BLE001 - e.g. a corpus too small to split: every rank stops
                    failure = exc
            self._stop_if_any_failed(failure)
        return result  # type: ignore[return-value]

    def _stop_if_any_failed(self, failure: Exception | None) -> None:
        """A barrier that also carries a failure: the ranks that were waiting stop too (a user error with the
        same one line and exit code), instead of hanging, or dying on a closed connection when it exits."""
        said = self.gather_json(None if failure is None else [
            type(failure).__name__, str(failure), getattr(failure, "exit_code", 1)])
        first = next(((rank, s) for rank, s in enumerate(said) if s is not None), None)
        if failure is not None:
            failure.on_every_rank = True  # type: ignore[attr-defined]
            raise failure
        if first is not None:
            rank, (kind, message, code) = first
            known = {cls.__name__: cls for cls in (GradwiseError, ConfigError, CheckpointError, DataError)}
            error = known[kind](message) if kind in known else GradwiseError(f"rank {rank} failed ({kind}: {message})")
            error.exit_code = code
            error.on_every_rank = True  # type: ignore[attr-defined]
            raise error

    # ------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def broadcast_json(self, value: T) -> T:
        """Rank 0's ``value`` (JSON data: numbers, strings, lists, dicts) on every rank, decoded alike on all.

        Sent as UTF-8 bytes in a tensor, not with torch's ``*_object`` collectives: those pickle, and nothing
        in gradwise unpickles. Every rank, rank 0 too, returns the decoded copy (tuples come back as lists)."""
        if not self.enabled:
            return value
        data = json.dumps(value).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        tdist.broadcast(size, src=0)
        buffer = self._bytes(data) if self.is_main else torch.empty(int(size.item()), dtype=torch.uint8,
                                                                     device=self.device)
        tdist.broadcast(buffer, src=0)
        return json.loads(buffer.cpu().numpy().tobytes())

    def gather_json(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (JSON data), in rank order, on every rank (no pickle, as broadcast_json)."""
        if not self.enabled:
            return [json.loads(json.dumps(value))]
        data = json.dumps(value).encode()
        sizes = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.world_size)]
        tdist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64, device=self.device))
        lengths = [int(s.item()) for s in sizes]
        longest = max(lengths)  # all_gather wants equal sizes: pad every rank's bytes to the longest
        padded = self._bytes(data + b" " * (longest - len(data)))
        parts = [torch.empty(longest, dtype=torch.uint8, device=self.device) for _ in range(self.world_size)]
        tdist.all_gather(parts, padded)
        return [json.loads(part.cpu().numpy().tobytes()[:n]) for part, n in zip(parts, lengths, strict=True)]

    def _bytes(self, data: bytes) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy()).to(self.device)

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every rank when it is true on any: a stop request reaches all ranks at once."""
        return tuple(bool(v) for v in self.largest(*(float(bool(f)) for f in flags)))

    def largest(self, *values: float) -> tuple[float, ...]:
        """The largest of every rank's value, each: numbers all ranks act on alike (a stop request, a clock),
        in one collective."""
        if not self.enabled:
            return tuple(float(v) for v in values)
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return tuple(t.tolist())

    def check_same(self, value: str, what: str) -> None:
        """Stop, on every rank, when ranks prepared different ``what`` (e.g. tokenizers)."""
        if not self.enabled:
            return
        if len(set(self.gather_json(value))) > 1:
            error = GradwiseError(f"ranks disagree about the {what}; give every node the same corpus and config")
            error.on_every_rank = True  # type: ignore[attr-defined]  # every rank saw the same values
            raise error

    def sum_step(self, loss_sum: torch.Tensor, parts: dict[str, torch.Tensor], tokens: int
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """One step's loss sum, objective parts and tokens summed over ranks, in one all-reduce."""
        names = sorted(parts)
        packed = torch.stack([loss_sum.detach().double().reshape(()),
                              *[parts[k].detach().double().reshape(()) for k in names],
                              torch.tensor(float(tokens), dtype=torch.float64, device=loss_sum.device)])
        tdist.all_reduce(packed, op=tdist.ReduceOp.SUM)  # float64: exact token counts, exact sums of two floats
        dtype = loss_sum.dtype  # rounded back once: 2 ranks give the float32 sum one process computes, bit for bit
        return (packed[0].to(dtype), {k: packed[1 + i].to(parts[k].dtype) for i, k in enumerate(names)},
                int(packed[-1].item()))

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over ranks (in place)."""
        if self.enabled:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    @property
    def sharded(self) -> bool:
        """True when parameters are FSDP shards (norms over them need a sum across ranks)."""
        return self.enabled and self.parallel == "fsdp"

    # ------------------------------------------------------------ the model
    def shard(self, model: nn.Module) -> nn.Module:
        """FSDP2: shard each transformer layer, then the rest, in place; before the optimizer is built.

        Each layer is its own unit, so a rank holds one layer's full weights at a time, not the model's:
        gradwise's GPT blocks, and a Hugging Face model's layers (the classes it names in
        ``_no_split_modules``, e.g. LlamaDecoderLayer, GPT2Block)."""
        if not self.sharded:
            return model
        from torch.distributed.fsdp import fully_shard

        hf_layers = _hf_layer_classes(model)
        layers = [module for name, module in model.named_modules()
                  if type(module).__name__ in hf_layers or name.split(".")[-2:-1] == ["blocks"]]
        for layer in reversed(layers):  # a layer inside another is sharded first, as FSDP2 needs
            fully_shard(layer)
        fully_shard(model)
        self.fsdp_units = len(layers) + 1
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around the model for training steps (gradients averaged over ranks); unchanged otherwise."""
        if not (self.enabled and self.parallel == "ddp"):
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def grad_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Reduce gradients across ranks on a step's last micro-batch only (no_sync on the others)."""
        if not self.enabled or last:
            if self.sharded:
                model.set_requires_gradient_sync(True)  # type: ignore[operator]
            return contextlib.nullcontext()
        if self.sharded:
            model.set_requires_gradient_sync(False)  # type: ignore[operator]
            return contextlib.nullcontext()
        return model.no_sync()  # type: ignore[operator]

    # ------------------------------------------------------------ checkpoints (full, unsharded state)
    def save_checkpoint(self, directory: Path, model: nn.Module, state: dict[str, Any],
                        optimizer: torch.optim.Optimizer | None = None,
                        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                        extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Rank 0 writes the checkpoint; with FSDP every rank first helps gather the full state."""
        if not self.sharded:
            if self.is_main:
                save_checkpoint(directory, model, state, optimizer=optimizer, scheduler=scheduler,
                                extra_tensors=extra_tensors)
            return
        model_state, optim_state = _gather_full_state(model, optimizer)
        if self.is_main:
            save_checkpoint(directory, model, state, optimizer=optimizer, scheduler=scheduler,
                            model_state=model_state, optimizer_state=optim_state, extra_tensors=extra_tensors)

    def load_checkpoint(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> dict[str, Any]:
        """Every rank reads the (full) checkpoint; FSDP keeps its own shard of weights and optimizer state."""
        if not self.sharded:
            return load_checkpoint(directory, model, optimizer, scheduler)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        saved = load_checkpoint(directory, None, None, scheduler)  # state.json, scheduler and RNG
        complete = _complete(directory, model)
        keys = set_model_state_dict(model, _with_tied_names(model, _read_model_file(directory)),
                                    options=StateDictOptions(full_state_dict=True, strict=complete))
        if not complete:
            _check_partial_keys(keys, model, directory)
        by_index = read_optimizer_state(directory)
        combined = hasattr(optimizer, "optimizers")  # a CombinedOptimizer saves {"optimizers": [each part]}
        pairs = zip(optimizer_parts(optimizer), by_index["optimizers"], strict=True) if combined else \
            [(optimizer, by_index)]
        for part, part_state in pairs:
            set_optimizer_state_dict(model, part, _index_to_names(part_state, model, part),
                                     options=StateDictOptions(full_state_dict=True))
        return saved

    def load_weights(self, directory: Path, model: nn.Module) -> None:
        """Rank 0 reads the weights and sends them to the other ranks (no shared filesystem needed)."""
        if not self.enabled:
            load_weights(directory, model)
            return
        if not self.sharded:
            if self.is_main:
                load_weights(directory, model)
            for tensor in model.state_dict().values():
                tdist.broadcast(tensor, src=0)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        full = _with_tied_names(model, _read_model_file(directory)) if self.is_main else {}
        # Only rank 0 reads the checkpoint (no shared filesystem needed): it says whether it holds every weight.
        complete = self.broadcast_json(_complete(directory, model) if self.is_main else None)
        keys = set_model_state_dict(model, full, options=StateDictOptions(
            full_state_dict=True, broadcast_from_rank0=True, strict=bool(complete)))
        if not complete and self.is_main:
            _check_partial_keys(keys, model, directory)


def _hf_layer_classes(model: nn.Module) -> set[str]:
    """The layer classes a Hugging Face model says must not be split across devices (its decoder layers)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    return names


class NoMetrics:
    """What ranks other than 0 write metrics to: nothing (rank 0 writes the run's metrics.jsonl)."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def joined(device: torch.device, parallel: str) -> Iterator[Distributed]:
    """:meth:`Distributed.setup` for the length of a run, leaving the group afterwards."""
    dist = Distributed.setup(device, parallel)
    try:
        yield dist
        dist.barrier()  # no rank leaves (and ends torchrun's group) before rank 0 has written everything
    except Exception as exc:
        if getattr(exc, "on_every_rank", False):  # every rank stops here, so every rank says why before any leaves
            if isinstance(exc, GradwiseError):  # (torchrun ends the others once one exits), and they leave the
                say_error(exc)  # group together, not while a peer still talks on it (gloo could abort then)
            with contextlib.suppress(Exception):  # a peer already gone: the error said is the one to keep
                dist.barrier()
        raise
    finally:
        dist.close()


# ---------------------------------------------------------------- FSDP state <-> gradwise's full checkpoints

def _tie_groups(model: nn.Module) -> list[list[str]]:
    """Names that share one parameter (tied embedding and head)."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def _gather_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None
                       ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Full model and optimizer state on rank 0's CPU (other ranks get empty dicts); a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    for names in _tie_groups(model):  # a tied tensor is stored once, under the name save_model picks
        for name in sorted(names)[1:]:
            model_state.pop(name, None)
    if optimizer is None:
        return model_state, None
    if hasattr(optimizer, "optimizers"):  # a CombinedOptimizer (Muon + AdamW): each part on its own
        gathered = [_gather_optimizer(model, part, options) for part in optimizer_parts(optimizer)]
        return model_state, ({"optimizers": gathered} if all(g is not None for g in gathered) else None)
    return model_state, _gather_optimizer(model, optimizer, options)


def _gather_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, options: Any) -> dict[str, Any] | None:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    return _names_to_index(by_name, optimizer) if by_name else None


def _names_to_index(by_name: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer state keyed by parameter name -> torch's own layout (parameters numbered in group order)."""
    names = [n for g in by_name["param_groups"] for n in g["params"]]
    sizes = [len(g["params"]) for g in by_name["param_groups"]]
    if sizes != [len(g["params"]) for g in optimizer.param_groups]:
        raise CheckpointError("the gathered optimizer state does not match the optimizer's parameter groups")
    index = {n: i for i, n in enumerate(names)}
    return {"state": {index[n]: s for n, s in by_name["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in by_name["param_groups"]]}


def _index_to_names(by_index: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """torch's numbered optimizer state -> keyed by parameter name, for ``set_optimizer_state_dict``."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of[id(p)] for g in optimizer.param_groups for p in g["params"]]
    if len(names) != sum(len(g["params"]) for g in by_index["param_groups"]):
        raise CheckpointError("the checkpoint's optimizer state does not match this model's parameters")
    return {"state": {names[i]: s for i, s in by_index["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in by_index["param_groups"]]}


def _complete(directory: Path, model: nn.Module) -> bool:
    """Whether the checkpoint holds every weight (not only what trained on a frozen base it has checked)."""
    return not reconcile_frozen_base(resolve_checkpoint(directory), read_state(directory), model)


def _check_partial_keys(keys: Any, model: nn.Module, directory: Path) -> None:
    """A checkpoint without its frozen base may lack that base's weights, and nothing else."""
    missing = sorted(set(keys.missing_keys) - model.frozen_keys())
    if missing or keys.unexpected_keys:
        raise CheckpointError(f"checkpoint {resolve_checkpoint(directory)} does not match the model (missing "
                              f"{missing[:3]}, unexpected {sorted(keys.unexpected_keys)[:3]}); use the config the run "
                              "was trained with")


def _read_model_file(directory: Path) -> dict[str, torch.Tensor]:
    path = resolve_checkpoint(directory)
    try:
        return load_file(str(path / MODEL_FILE))
    except Exception as exc:  # safetensors raises its own error types; the message names the file
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({MODEL_FILE}: {str(exc).splitlines()[0]})"
                              ) from None


def _with_tied_names(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give a tied tensor stored once under every name the model knows it by."""
    for names in _tie_groups(model):
        present = next((n for n in names if n in tensors), None)
        if present is not None:
            for name in names:
                tensors.setdefault(name, tensors[present])
    return tensors
