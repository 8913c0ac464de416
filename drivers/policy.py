"""A LeRobot policy checkpoint as an inference engine: observation in, action chunk out.

Loads any `pretrained_model` folder through lerobot's own factory and processors, never touching
the network, and checks every observation against the checkpoint's features before inference.
Knows nothing of ZeroMQ.
"""

from __future__ import annotations

import os

# Before lerobot/huggingface_hub are imported: a local checkpoint must never trigger a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import logging  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from core.so101 import IMAGES_PREFIX, STATE_KEY  # noqa: E402
from drivers.inpaint import DiffusionInpainter, Prefix, PrefixError  # noqa: E402

log = logging.getLogger("policy")


class PolicyLoadError(RuntimeError):
    """The checkpoint cannot be served; the message says what is wrong and what to do."""


class ObservationError(ValueError):
    """An observation that does not fit the checkpoint; the message names the mismatch."""


@dataclass
class Chunk:
    actions: np.ndarray  # float32 (horizon, action_dim), robot units
    normalized_range: tuple[float, float]  # min/max of the chunk before unnormalizing
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def pick_device(requested: str = "auto") -> tuple[str, str]:
    """The device to run on and why (for the log)."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda", f"auto: CUDA visible ({torch.cuda.get_device_name(0)})"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "no CUDA device"
        return "cpu", f"auto: {why}, falling back to the CPU"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise PolicyLoadError(
            f"--device={requested} but no CUDA device is visible (use --device=cpu or auto)"
        )
    return requested, "forced by --device"


def set_cpu_threads(requested: int = 0) -> tuple[int, str]:
    """Sets torch's CPU threads for this process (0: every core it may use but one, at most
    one per physical core); returns how many, and a line saying why (for the log).

    The rest of a runtime (the simulator or the camera drivers, the control loop, the hub)
    shares the cores with the policy. With a thread on every core, torch's threads wait for
    each other spinning whenever one of those processes holds a core: on 2 cores beside one
    busy process, 2 threads answered in 634 ms at 785 ms of CPU a chunk, 1 thread in 209 ms
    (docs/workers.md)."""
    if requested < 0:
        raise ValueError(f"--threads must be >= 0 (0: all cores but one), got {requested}")
    # The cores this process may run on (taskset, cpusets) where the OS says so.
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    # Like torch's own default, never more than one thread per physical core.
    physical = psutil.cpu_count(logical=False) or cores
    threads = requested or max(1, min(physical, cores - 1))
    torch.set_num_threads(threads)
    why = "forced by --threads" if requested else "one core left to the other processes"
    return threads, f"{threads} CPU thread(s) of {cores} core(s) ({why})"


def _check_checkpoint_folder(path: Path) -> None:
    if not path.exists():
        raise PolicyLoadError(
            f"checkpoint not found: {path} (run from the project root, or give an absolute path "
            "to a lerobot `pretrained_model` folder)"
        )
    if not (path / "config.json").exists():
        inner = path / "pretrained_model"
        hint = f"; did you mean {inner}?" if (inner / "config.json").exists() else ""
        raise PolicyLoadError(
            f"{path} is not a lerobot pretrained_model folder (no config.json){hint}"
        )
    for name in ("model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        if not (path / name).exists():
            raise PolicyLoadError(
                f"{path} has no {name}: an incomplete checkpoint (normalization "
                "stats live in the processor files; copy the whole folder)"
            )


class PolicyRunner:
    """One loaded checkpoint.

    `cameras` maps observation camera names to checkpoint image features (default: `front` ->
    `observation.images.front`); `arms` gives the order arms' states are concatenated in.
    """

    def __init__(
        self,
        path: str | Path,
        arms: Sequence[str],
        device: str = "auto",
        num_inference_steps: int | None = 10,
        scheduler: str | None = "DDIM",
        cameras: Mapping[str, str] | None = None,
        fast_unet: bool = True,
        noise_scale: float = 1.0,
    ):
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        self.path = Path(path).resolve()
        _check_checkpoint_folder(self.path)
        self.device, self.device_reason = pick_device(device)
        try:
            cfg = PreTrainedConfig.from_pretrained(self.path)
        except Exception as exc:
            raise PolicyLoadError(f"cannot read {self.path / 'config.json'}: {exc}") from exc
        # The offline trap: ImageNet backbone weights named in config.json would be downloaded
        # before the checkpoint's own weights replace them.
        if hasattr(cfg, "pretrained_backbone_weights"):
            cfg.pretrained_backbone_weights = None
        cfg.device = self.device
        self.scheduler = None
        if cfg.type == "diffusion":
            if scheduler:
                cfg.noise_scheduler_type = scheduler
            if num_inference_steps:
                cfg.num_inference_steps = num_inference_steps
            steps = cfg.num_inference_steps or cfg.num_train_timesteps
            self.scheduler = f"{cfg.noise_scheduler_type} {steps} steps"
        if not (np.isfinite(noise_scale) and 0.0 <= noise_scale <= 1.0):
            raise PolicyLoadError(f"noise_scale must be within [0, 1], got {noise_scale}")
        # Diffusion only: the scale of the noise sampling starts from (its temperature); the
        # default 1 samples as lerobot does, the policy worker serves 0 by default.
        self.noise_scale = float(noise_scale) if cfg.type == "diffusion" else 1.0
        if self.noise_scale != noise_scale:  # the worker's default: no warning for ACT users
            log.info(
                "noise_scale %g is for diffusion; a %s checkpoint ignores it", noise_scale, cfg.type
            )
        self.cfg = cfg
        self.type = cfg.type
        try:
            policy_cls = get_policy_class(cfg.type)
            # strict: a missing or unexpected weight is an error, not a warning.
            self.policy = policy_cls.from_pretrained(self.path, config=cfg, strict=True)
        except RuntimeError as exc:
            raise PolicyLoadError(
                f"weights in {self.path} do not match its config: {str(exc).splitlines()[0][:400]}"
            ) from exc
        self.policy.eval()
        self.native_conv1d = self.device == "cpu" and fast_unet and native_conv1d_unet(self.policy)
        overrides = {"device_processor": {"device": self.device}}
        self.preprocessor, self.postprocessor = make_pre_post_processors(
            cfg,
            pretrained_path=str(self.path),
            preprocessor_overrides=overrides,
            postprocessor_overrides={"device_processor": {"device": "cpu"}},
        )
        self.inpainter = self._inpainter()

        self.image_features = {
            k: tuple(v.shape) for k, v in cfg.input_features.items() if k.startswith(IMAGES_PREFIX)
        }
        state = cfg.input_features.get(STATE_KEY)
        self.state_dim = int(state.shape[0]) if state is not None else 0
        self.action_dim = int(cfg.output_features["action"].shape[0])
        self.n_obs_steps = int(getattr(cfg, "n_obs_steps", 1))
        # What predict_action_chunk returns; warm_up() confirms it from a real output.
        self.horizon = int(
            cfg.n_action_steps
            if cfg.type == "diffusion"
            else getattr(cfg, "chunk_size", None) or cfg.n_action_steps
        )
        self.arms = list(arms)
        names = cameras or {k[len(IMAGES_PREFIX) :]: k for k in self.image_features}
        self.cameras = dict(names)  # bus camera name -> feature key
        unknown = sorted(set(self.cameras.values()) - set(self.image_features))
        if unknown:
            raise PolicyLoadError(
                f"camera map names features the checkpoint does not have: "
                f"{unknown} (it has {sorted(self.image_features)})"
            )
        missing = sorted(set(self.image_features) - set(self.cameras.values()))
        if missing:
            raise PolicyLoadError(f"no camera mapped to checkpoint features {missing}")

    def _inpainter(self) -> DiffusionInpainter | None:
        """Diffusion only: what lets a request carry a committed prefix."""
        from lerobot.processor import NormalizerProcessorStep

        if self.type != "diffusion":
            return None
        steps = [s for s in self.preprocessor.steps if isinstance(s, NormalizerProcessorStep)]
        return DiffusionInpainter(self.policy, steps[0]) if steps else None

    @property
    def accepts_prefix(self) -> bool:
        return self.inpainter is not None

    def describe(self) -> dict:
        return {
            "accepts_prefix": self.accepts_prefix,
            "type": self.type,
            "device": self.device,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "arms": self.arms,
            "n_obs_steps": self.n_obs_steps,
            "scheduler": self.scheduler,
            "noise_scale": self.noise_scale,
            "cameras": {
                name: list(self.image_features[key][1:]) for name, key in self.cameras.items()
            },
            "checkpoint": str(self.path),
        }

    # -- checks ---------------------------------------------------------------------------
    def _frames(self, name: str, image: np.ndarray) -> np.ndarray:
        """(n_obs, H, W, 3) uint8 for one camera: the request's history, padded like lerobot's
        own queue at the start of an episode (the oldest frame repeated)."""
        _, h, w = self.image_features[self.cameras[name]]
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ObservationError(
                f"camera {name!r}: expected uint8 (H, W, 3) or (n, H, W, 3), "
                f"got {image.dtype} {tuple(image.shape)}"
            )
        if image.shape[1:3] != (h, w):
            raise ObservationError(
                f"camera {name!r} is {image.shape[2]}x{image.shape[1]}, the "
                f"checkpoint expects {w}x{h} (width x height)"
            )
        return _pad_history(image, self.n_obs_steps)

    def _state(self, states: Mapping[str, np.ndarray]) -> np.ndarray:
        if sorted(states) != sorted(self.arms):
            raise ObservationError(
                f"arms {sorted(states)} do not match the checkpoint's {self.arms} "
                f"(action dim {self.action_dim}: wrong task for this checkpoint?)"
            )
        parts = [np.asarray(states[arm], np.float32) for arm in self.arms]
        parts = [p[None] if p.ndim == 1 else p for p in parts]
        n = {p.shape[0] for p in parts}
        if len(n) != 1:
            raise ObservationError(f"arms sent different history lengths {sorted(n)}")
        state = np.concatenate(parts, axis=-1)
        if state.shape[-1] != self.state_dim:
            raise ObservationError(
                f"state has {state.shape[-1]} values for arms {self.arms}, "
                f"the checkpoint expects {self.state_dim}"
            )
        if not np.isfinite(state).all():
            raise ObservationError("state contains NaN or inf")
        return _pad_history(state, self.n_obs_steps)

    def check(
        self, images: Mapping[str, np.ndarray], states: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        missing = [name for name in self.cameras if name not in images]
        if missing:
            raise ObservationError(
                f"missing camera {missing[0]!r} (checkpoint wants "
                f"{sorted(self.cameras)}, request has {sorted(images)})"
            )
        frames = {name: self._frames(name, images[name]) for name in self.cameras}
        return frames, self._state(states)

    # -- inference ------------------------------------------------------------------------
    def _batch(self, frames: dict[str, np.ndarray], state: np.ndarray) -> dict:
        """Tensors as predict_action_chunk takes them: (1, n_obs, ...) where the policy keeps
        an observation history (diffusion always does, even of one step), else (1, ...)."""
        with_history = self.type == "diffusion" or self.n_obs_steps > 1
        batch = {}
        for name, stack in frames.items():
            # A copy: frames off the bus are read-only views, which torch refuses to wrap.
            t = torch.from_numpy(np.array(stack)).permute(0, 3, 1, 2)
            t = t.to(torch.float32).div_(255.0)  # lerobot's image convention: float in [0, 1]
            batch[self.cameras[name]] = t[None] if with_history else t
        s = torch.from_numpy(np.array(state))
        batch[STATE_KEY] = s[None] if with_history else s
        return batch

    @torch.inference_mode()
    def infer(
        self,
        images: Mapping[str, np.ndarray],
        states: Mapping[str, np.ndarray],
        noise: torch.Tensor | None = None,
        prefix: Prefix | None = None,
    ) -> Chunk:
        """One chunk. With `prefix` (diffusion only), the chunk continues those actions."""
        t0 = time.perf_counter()
        frames, state = self.check(images, states)
        if prefix is not None and self.inpainter is None:
            raise PrefixError(
                f"a {self.type} policy cannot take a committed prefix (inpainting "
                "is for diffusion policies): use control's --join=blend"
            )
        batch = self.preprocessor(self._batch(frames, state))
        t1 = time.perf_counter()
        if noise is None and self.noise_scale != 1.0:
            noise = self._scaled_noise()
        if prefix is not None:
            with self.inpainter.conditioned(prefix, noise, self.noise_scale) as start:
                normalized = self.policy.predict_action_chunk(batch, noise=start)
        else:
            kwargs = {"noise": noise} if noise is not None else {}
            normalized = self.policy.predict_action_chunk(batch, **kwargs)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        actions = self.postprocessor(normalized)
        out = actions[0].to("cpu", torch.float32).numpy()
        t3 = time.perf_counter()
        if not np.isfinite(out).all():
            raise ObservationError(
                "the policy produced NaN or inf actions (checkpoint stats "
                "incomplete, or inputs far outside the training data)"
            )
        norm = normalized.float()
        return Chunk(
            actions=np.ascontiguousarray(out),
            normalized_range=(float(norm.min()), float(norm.max())),
            timings={"preprocess": t1 - t0, "inference": t2 - t1, "postprocess": t3 - t2},
        )

    def _scaled_noise(self) -> torch.Tensor:
        """Where sampling starts, at `noise_scale`: below 1 it starts nearer the mean trajectory
        (sampling at a lower temperature); DDIM's steps add no noise of their own, so 0 gives
        one deterministic chunk per observation."""
        shape = (1, self.cfg.horizon, self.action_dim)
        device = next(self.policy.parameters()).device
        return self.noise_scale * torch.randn(shape, device=device)

    def warm_up(self, runs: int = 2) -> float:
        """Run dummy inferences (allocations, lazy init, CPU kernels) and return the last time."""
        images = {
            name: np.zeros((*self.image_features[key][1:], 3), np.uint8)
            for name, key in self.cameras.items()
        }
        states = {
            arm: np.zeros(self.state_dim // max(1, len(self.arms)), np.float32) for arm in self.arms
        }
        elapsed = 0.0
        for _ in range(runs):
            t = time.perf_counter()
            chunk = self.infer(images, states)
            elapsed = time.perf_counter() - t
            self.horizon = chunk.actions.shape[0]
        return elapsed


def _pad_history(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] >= n:
        return x[-n:]
    return np.concatenate([np.repeat(x[:1], n - x.shape[0], axis=0), x], axis=0)


def native_conv1d_unet(policy: torch.nn.Module) -> bool:
    """Run a diffusion policy's UNet without oneDNN on the CPU.

    The UNet is 1-D convolutions at batch size 1; oneDNN re-lays out every large weight on
    every call, while PyTorch's native im2col + GEMM path reads them as they are (several times
    faster on the CPU: bench.policy measures it against lerobot's stock path). The image
    encoder's 2-D convolutions keep oneDNN, where it wins. Returns whether it applied.
    """
    unet = getattr(getattr(policy, "diffusion", None), "unet", None)
    if unet is None:
        return False
    # Toggling oneDNN re-sets its TF32 flag too, which warns on every call on CPU builds.
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    forward = unet.forward

    def forward_without_onednn(*args, **kwargs):
        with torch.backends.mkldnn.flags(enabled=False):
            return forward(*args, **kwargs)

    unet.forward = forward_without_onednn
    return True
