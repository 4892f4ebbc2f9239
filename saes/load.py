"""Load SAEs: ones the workbench trained (a directory), or published SAELens releases.

Published SAEs go through SAELens' own `SAE.from_pretrained(release, sae_id)`, which resolves a
release name (or a plain `org/repo` id) through its directory of releases and reads the files
with `huggingface_hub`. Without network that works from a filled hub cache: set
`HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` (or `HF_HOME`) before starting Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from saes.hooks import check_hook
from saes.train import META_FILE
from workbench.errors import WorkbenchError, one_line
from workbench.inputs import check_safetensors, read_json
from workbench.models import Subject, default_device

if TYPE_CHECKING:  # sae_lens (and TransformerLens under it) takes seconds to import: lazily
    from sae_lens import SAE

PRETRAINED_PREFIX = "release:"
WEIGHTS_FILE = "sae_weights.safetensors"  # SAELens' name (sae_lens.constants)


@dataclass(frozen=True)
class LoadedSAE:
    """An SAE, the hook point it reads (`blocks.{L}.hook_{point}`), and where it came from."""

    sae: SAE
    hook: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def layer(self) -> int:
        return int(self.hook.split(".")[1])


def _hook_of(sae: SAE, meta: dict[str, Any], where: str, hook: str | None) -> str:
    found = meta.get("hook_name") or sae.cfg.metadata.get("hook_name")
    if hook is not None and found is not None and hook != found:
        raise WorkbenchError(f"SAE {where} was trained on hook {found!r}, not {hook!r}")
    hook = hook or found
    if not hook:
        raise WorkbenchError(f"SAE {where} does not say which hook point it reads; pass hook=")
    return hook


def load_sae(path: str | Path, device: str | torch.device | None = None,
             hook: str | None = None) -> LoadedSAE:
    """An SAE saved in SAELens' format (`cfg.json` + `sae_weights.safetensors`)."""
    path = Path(path)
    if not (path / "cfg.json").exists():
        raise WorkbenchError(f"{path} is not an SAE directory (no cfg.json)")
    from sae_lens import SAE
    from sae_lens.registry import SAE_CLASS_REGISTRY
    from safetensors import SafetensorError

    arch = read_json(path / "cfg.json").get("architecture")
    if arch is not None and arch not in SAE_CLASS_REGISTRY:
        raise WorkbenchError(f"{path / 'cfg.json'}: unknown SAE architecture {arch!r}; "
                             f"known: {sorted(SAE_CLASS_REGISTRY)}")
    check_safetensors(path / WEIGHTS_FILE)
    meta = read_json(path / META_FILE) if (path / META_FILE).exists() else {}
    dev = str(default_device(device))
    try:
        sae = SAE.load_from_disk(path, device=dev)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        raise WorkbenchError(f"{path}: cannot load the SAE from cfg.json and {WEIGHTS_FILE} "
                             f"({one_line(e)})") from e
    for name, p in sae.named_parameters():
        if not torch.isfinite(p).all():
            raise WorkbenchError(f"{path / WEIGHTS_FILE}: {name} contains NaN or infinite values")
    sae.eval()
    return LoadedSAE(sae, _hook_of(sae, meta, str(path), hook), str(path), meta)


def load_pretrained_sae(release: str, sae_id: str, device: str | torch.device | None = None,
                        hook: str | None = None) -> LoadedSAE:
    """A published SAE by SAELens release name (or `org/repo`) and SAE id, via the hub cache."""
    from sae_lens import SAE

    dev = str(default_device(device))
    try:
        sae = SAE.from_pretrained(release, sae_id, device=dev)
    except (OSError, ValueError) as e:
        # huggingface_hub raises LocalEntryNotFoundError (an OSError) when offline and uncached.
        raise WorkbenchError(
            f"cannot load SAE {sae_id!r} of release {release!r}: {one_line(e)}. Without network "
            f"the files must already be in the hub cache (HF_HUB_CACHE), with HF_HUB_OFFLINE=1."
        ) from e
    sae.eval()
    meta = {"release": release, "sae_id": sae_id}
    return LoadedSAE(sae, _hook_of(sae, meta, f"{release}/{sae_id}", hook),
                     f"{PRETRAINED_PREFIX}{release}:{sae_id}", meta)


def resolve_sae(spec: str | Path, device: str | torch.device | None = None,
                hook: str | None = None) -> LoadedSAE:
    """`release:<release>:<sae_id>` for a published SAE, else a directory."""
    s = str(spec)
    if s.startswith(PRETRAINED_PREFIX):
        parts = s[len(PRETRAINED_PREFIX):].split(":", 1)
        if len(parts) != 2 or not all(parts):
            raise WorkbenchError(f"expected 'release:<release>:<sae_id>', got {s!r}")
        return load_pretrained_sae(parts[0], parts[1], device, hook)
    return load_sae(s, device, hook)


def decoder_rows(sae: SAE, features: torch.Tensor | list[int] | int) -> torch.Tensor:
    """The output direction of each feature per unit of activation: `W_dec[f]`, divided by its
    norm for SAEs that rescale activations by decoder norm (SAELens' TopK default)."""
    rows = sae.W_dec[features]
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        rows = rows / rows.norm(dim=-1, keepdim=True)
    return rows


def check_fits(loaded: LoadedSAE, subject: Subject) -> None:
    """Raise a clear `WorkbenchError` unless the SAE's hook and width fit `subject`."""
    try:
        check_hook(subject.model, loaded.hook)
    except WorkbenchError as e:
        raise WorkbenchError(f"SAE {loaded.source} does not fit {subject.name}: {e}") from None
    cfg = loaded.sae.cfg
    if getattr(cfg, "reshape_activations", "none") != "none":
        raise WorkbenchError(f"SAE {loaded.source} reads attention heads (hook_z), which the "
                             f"workbench does not splice")
    if cfg.d_in != subject.d_model:
        raise WorkbenchError(f"SAE {loaded.source} has d_in={cfg.d_in} but {subject.name} has "
                             f"d_model={subject.d_model} at {loaded.hook}")
