"""Reading a torch.distributed.checkpoint (DCP) folder without running code from it.

DCP's FileSystemReader unpickles .metadata with plain pickle.load, and its DefaultLoadPlanner reads
the values it stored as bytes (an optimizer's param groups: numbers, flags, parameter names) with
torch.load(weights_only=False). Either runs whatever a crafted file asks for. These subclasses
read the same files allowing only DCP's own metadata classes and plain data. Kept apart from
sps.training.checkpoint because importing DCP takes seconds.
"""

from __future__ import annotations

import pickle

import torch
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

# What a .metadata pickle refers to (listed from real ones), and nothing else: with these,
# unpickling builds DCP's dataclasses and runs no code.
METADATA_GLOBALS = {
    ("pathlib", "PosixPath"), ("torch", "Size"), ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    *(("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata", "ChunkStorageMetadata",
        "BytesStorageMetadata", "_MEM_FORMAT_ENCODING")),
}


class MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in METADATA_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not one of DCP's metadata classes")


class PlainDataReader(FileSystemReader):
    """DCP's FileSystemReader, but .metadata is unpickled by MetadataUnpickler."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        with open(self._get_metadata_path(kwargs.get("rank")), "rb") as f:
            metadata = MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError(f"it holds a {type(metadata).__name__}, not DCP's Metadata")
        metadata.storage_meta = metadata.storage_meta or StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class PlainDataPlanner(DefaultLoadPlanner):
    """DCP's load planner, but the values stored as bytes are read with weights_only=True.
    Assumes flatten_state_dict (the default), as DefaultLoadPlanner.load_bytes's first branch."""

    def load_bytes(self, read_item, value) -> None:
        set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], torch.load(value, weights_only=True))
